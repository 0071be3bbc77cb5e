"""The sampler: Eq. 2 schedules, stop rules, trajectory-id order, exact resume after a kill."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from potforge import md
from potforge.errors import ConfigError
from potforge.records import FlaggedFrame, SampleSummary
from potforge.sample import Sampler, SamplerConfig
from potforge.sample.config import ScheduleConfig
from potforge.sample.schedule import draw_temperature
from potforge.structures import RandomCellSpec

SMALL = RandomCellSpec(box_min_A=6.5, box_max_A=7.5, density_min_g_cm3=2.3, density_max_g_cm3=2.8)


def test_schedule_is_equation_2():
    s = md.TemperatureSchedule(t_start_K=300, t_end_K=100, t_mod_K=500, period_fs=20_000, t_max_fs=250_000)
    for t in (0.0, 5_000.0, 10_000.0, 123_456.0, 250_000.0):
        expected = 300 + t / 250_000 * (100 - 300) + 500 * math.sin(math.pi * t / 20_000) ** 2
        assert s(t) == pytest.approx(expected, rel=1e-12)
    assert s(10_000.0) == pytest.approx(300 - 8 + 500)  # sin² peaks at t0/2


def test_schedule_draws_stay_in_the_paper_ranges():
    cfg = ScheduleConfig()
    rng = np.random.default_rng(0)
    draws = [draw_temperature(cfg, rng) for _ in range(200)]
    assert all(10 <= d.t_start_K <= 1000 and 10 <= d.t_end_K <= 600 for d in draws)
    assert all(0 <= d.t_mod_K <= 2000 and 10_000 <= d.period_fs <= 50_000 for d in draws)
    assert all(d.t_max_fs == 250_000 for d in draws)


def test_strain_schedule_deforms_periodically():
    s = md.StrainSchedule(volume_strain=0.05, shear_strain=0.04, period_fs=1000, shear_axes=(0, 2))
    np.testing.assert_allclose(s.deformation(0.0), np.eye(3), atol=1e-15)
    f = s.deformation(250.0)  # quarter period: full amplitude
    assert f[1, 1] == pytest.approx(1.05) and f[0, 2] == pytest.approx(0.02) and f[2, 0] == pytest.approx(0.02)


def sampler_config(**kw) -> SamplerConfig:
    base = dict(replicas=3, max_trajectories=8, timestep_fs=2.0, max_flagged=4, checkpoint_every_s=1e-6,
                census_every_fs=100.0, dtype="float64")  # fmt: skip
    base.update(kw)
    cfg = SamplerConfig(**base)
    cfg.schedule.t_max_fs = 400
    cfg.schedule.period_fs.low, cfg.schedule.period_fs.high = 100, 300
    cfg.uncertainty.energy_eV_per_sqrt_atom = 0.003  # ANI-Al is unsure of some random 7 Å cells, not all
    cfg.uncertainty.force_mean_eV_per_A = None
    cfg.uncertainty.force_max_eV_per_A = None
    return cfg


def test_sampler_flags_replaces_and_records(ani_al64, tmp_path):
    cfg = sampler_config()
    summary = Sampler(ani_al64, cfg, SMALL, tmp_path, seed=1, generation=0).run()
    flagged = [o for o in summary.outcomes if o.outcome == "flagged"]
    assert summary.flagged == len(summary.flagged_trajectories) >= 1
    for o in flagged:
        frame = FlaggedFrame.read(tmp_path / "flagged" / f"{o.traj}.json")
        assert frame.uncertainty["energy_eV_per_sqrt_atom"] > 0.003 and frame.census is not None
        assert len(frame.numbers) == o.n_atoms
    # slots are refilled: more trajectories than replicas were started, each with a census
    assert len(summary.outcomes) > cfg.replicas
    assert all(o.census and o.census[0].time_fs == 0.0 for o in summary.outcomes)
    assert SampleSummary.read(tmp_path / "summary.json") == summary


def _flagged_frames(directory):
    summary = SampleSummary.read(directory / "summary.json")
    return summary, [FlaggedFrame.read(directory / "flagged" / f"{t}.json") for t in summary.flagged_trajectories]


def test_max_flagged_counts_in_trajectory_order_whatever_runs_side_by_side(ani_al64, tmp_path):
    """The same trajectories, flagged frames and outcomes with 2 or 5 replicas at a time (float64)."""
    runs = {}
    for replicas in (2, 5):
        cfg = sampler_config(replicas=replicas, max_flagged=3)
        Sampler(ani_al64, cfg, SMALL, tmp_path / f"r{replicas}", seed=4, generation=2).run()
        runs[replicas] = _flagged_frames(tmp_path / f"r{replicas}")
    (s2, f2), (s5, f5) = runs[2], runs[5]
    assert s2.flagged_trajectories == s5.flagged_trajectories and len(f2) == 3
    assert f2 == f5  # positions bit for bit
    used = lambda s: [(o.traj, o.outcome, o.time_fs) for o in s.outcomes if o.outcome != "unused"]  # noqa: E731
    assert used(s2) == used(s5)


KILL_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from potforge.model import load_model
from potforge.sample import Sampler, SamplerConfig
from potforge.structures import RandomCellSpec
cfg = SamplerConfig.model_validate_json(sys.argv[2])
cells = RandomCellSpec.model_validate_json(sys.argv[3])
Sampler(load_model("ani-al", dtype=torch.float64), cfg, cells, sys.argv[1], seed=2, generation=1).run()
"""


def test_a_killed_sampler_resumes_to_the_same_trajectories(ani_al64, tmp_path):
    """SIGKILL the sampler mid-generation (only its checkpoint survives), run it again: the same
    outcomes and flagged frames, bit for bit, as an uninterrupted run (float64)."""
    cfg = sampler_config(max_flagged=5, max_trajectories=10)
    Sampler(ani_al64, cfg, SMALL, tmp_path / "straight", seed=2, generation=1).run()
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    args = [sys.executable, "-c", KILL_SCRIPT, str(killed), cfg.model_dump_json(), SMALL.model_dump_json()]
    proc = subprocess.Popen(args, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "flagged").is_dir():
        time.sleep(0.05)  # kill once it has flagged a frame, well before it ends
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (killed / "state.pt").exists() and not (killed / "summary.json").exists()
    torch.set_num_threads(1)  # as the killed process ran
    try:
        Sampler(ani_al64, cfg, SMALL, killed, seed=2, generation=1).run()
    finally:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    (s1, f1), (s2, f2) = _flagged_frames(tmp_path / "straight"), _flagged_frames(killed)
    assert f1 == f2 and len(f1) >= 2
    assert [o.model_dump(exclude={"steps"}) for o in s1.outcomes] == [
        o.model_dump(exclude={"steps"}) for o in s2.outcomes
    ]


def test_unstable_replicas_are_stopped_with_their_last_sane_frame(ani_al32, tmp_path):
    cfg = sampler_config(dtype="float32")
    cfg.stability.min_distance_A = 2.3  # random cells start at >= 1.8 Å: every replica "collapses"
    cfg.uncertainty.energy_eV_per_sqrt_atom = None
    summary = Sampler(ani_al32, cfg, SMALL, tmp_path, seed=3, generation=0).run()
    unstable = [o for o in summary.outcomes if o.outcome == "unstable"]
    assert unstable and all("apart" in o.reason for o in unstable)
    frame = FlaggedFrame.read(tmp_path / "flagged" / f"{unstable[0].traj}.json")
    assert frame.outcome == "unstable" and frame.sim_time_fs == 0.0  # the starting cell was the last sane one


def test_pressure_schedules_drive_the_cell(ani_al32, tmp_path):
    """The same trajectories at 0 and at 10 GPa: the compressed ones end denser, every one."""
    volumes = {}
    for p in (0.0, 10.0):
        cfg = sampler_config(dtype="float32", max_trajectories=3, replicas=3)
        cfg.uncertainty.energy_eV_per_sqrt_atom = None
        cfg.pressure.enabled = True
        for r in (cfg.pressure.p_start_GPa, cfg.pressure.p_end_GPa):
            r.low = r.high = p
        cfg.pressure.p_mod_GPa.high = 0.0
        cfg.pressure.barostat_tau_fs = 100.0
        sampler = Sampler(ani_al32, cfg, SMALL, tmp_path / str(p), seed=5, generation=0)
        sampler._fill()
        for _ in range(200):
            sampler._step()
        volumes[p] = sampler.state.volumes()
    assert bool((volumes[10.0] < 0.97 * volumes[0.0]).all())


def test_config_refuses_what_cannot_work():
    from potforge.config import parse_config

    with pytest.raises(ConfigError, match="max_steps was removed"):
        parse_config({"sampler": {"max_steps": 1000}})
    with pytest.raises(ConfigError, match="strain and pressure"):
        parse_config({"sampler": {"strain": {"enabled": True}, "pressure": {"enabled": True}}})
    with pytest.raises(ConfigError, match="shorter than"):
        parse_config({"sampler": {"schedule": {"t_max_fs": 1000}}, "loop": {"target_median_time_to_flag_fs": 2000}})


def test_old_sampling_checkpoints_are_refused_with_what_to_do(ani_al32, tmp_path):
    torch.save({"replicas": [], "next_traj": 3, "outcomes": json.dumps([])}, tmp_path / "state.pt")
    with pytest.raises(ConfigError, match=r"older potforge.*run again"):
        Sampler(ani_al32, sampler_config(), SMALL, tmp_path, seed=1, generation=0).run()


def test_continued_trajectories_start_from_the_previous_generations_frames(ani_al64, tmp_path):
    """With continue_fraction, trajectories 0..n-1 of generation g start from generation g−1's
    flagged frames (same atoms, same cell), record their parent, and the rest from random cells."""
    cfg = sampler_config()
    Sampler(ani_al64, cfg, SMALL, tmp_path / "g0", seed=1, generation=0).run()
    previous = [FlaggedFrame.read(p) for p in sorted((tmp_path / "g0" / "flagged").glob("*.json"))]
    assert len(previous) >= 2
    cont = sampler_config(continue_fraction=0.25)  # 2 of 8 trajectories
    sampler = Sampler(ani_al64, cont, SMALL, tmp_path / "g1", seed=1, generation=1, starts=previous)
    sampler._fill()
    state = sampler.state
    for b in range(2):
        start = previous[b].atoms()
        np.testing.assert_allclose(state.cells[b].numpy(), start.cell.array)
        np.testing.assert_allclose(state.to_atoms(b).positions, start.positions, atol=1e-9)
    summary = sampler.run()
    parents = [o.parent for o in summary.outcomes]
    assert parents[:2] == [previous[0].traj, previous[1].traj] and set(parents[2:]) == {None}


def test_a_generation_sampled_by_the_old_sampler_is_still_ingested(tmp_path):
    """A sampling directory written before the MD engine was rewritten (its flagged-frame dicts
    and a summary without the list of flagged trajectories) still loads and queues its frames."""
    from ase.build import bulk

    from potforge.campaign import ingest_flagged
    from potforge.data import DatasetStore

    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    atoms.rattle(0.1, seed=1)
    old_frame = {
        "traj": "g000-t00003", "generation": 0, "outcome": "flagged", "reason": "energy_eV_per_sqrt_atom",
        "sim_time_fs": 120.0, "numbers": atoms.numbers.tolist(), "positions": atoms.positions.tolist(),
        "cell": atoms.cell.array.tolist(), "uncertainty": {"energy_eV_per_sqrt_atom": 0.02},
        "schedule": {"t_start_K": 300, "t_end_K": 100, "t_mod_K": 50, "period_fs": 1000, "t_max_fs": 2000},
        "strain": None, "target_temperature_K": 290.0,
    }  # fmt: skip
    old_summary = {
        "flagged": 1, "total_steps": 600, "walltime_s": 3.0, "stop_reason": "step budget",
        "median_time_to_flag_fs": 120.0,
        "outcomes": [{"traj": "g000-t00003", "outcome": "flagged", "reason": "energy_eV_per_sqrt_atom",
                      "time_fs": 120.0, "steps": 60, "n_atoms": 4, "uncertainty": {}},
                     {"traj": "g000-t00004", "outcome": "running", "reason": "step budget", "time_fs": 800.0,
                      "steps": 400, "n_atoms": 4, "uncertainty": {}}],
    }  # fmt: skip
    (tmp_path / "flagged").mkdir()
    (tmp_path / "flagged" / "g000-t00003.json").write_text(json.dumps(old_frame))
    (tmp_path / "summary.json").write_text(json.dumps(old_summary))
    store = DatasetStore(tmp_path / "d.db")
    assert ingest_flagged(store, tmp_path, "emt", "oemt") == 1
    (pending,) = store.pending_tasks()
    np.testing.assert_allclose(pending[1].positions, atoms.positions)
    assert SampleSummary.read(tmp_path / "summary.json").outcomes[1].outcome == "running"


def test_member_driven_trajectories_record_their_member_and_stay_batch_independent(ani_al64, tmp_path):
    """With member_driven_fraction 0.5 about half the trajectories move on one member's forces,
    each frame records which; the outcomes are still the same with 2 or 5 replicas at a time."""
    runs = {}
    for replicas in (2, 5):
        cfg = sampler_config(replicas=replicas, max_flagged=3, member_driven_fraction=0.5)
        Sampler(ani_al64, cfg, SMALL, tmp_path / f"r{replicas}", seed=4, generation=2).run()
        runs[replicas] = _flagged_frames(tmp_path / f"r{replicas}")
    (s2, f2), (s5, f5) = runs[2], runs[5]
    assert f2 == f5 and s2.flagged_trajectories == s5.flagged_trajectories
    members = [f.member for f in f2]
    plain = sampler_config(replicas=2, max_flagged=3)
    Sampler(ani_al64, plain, SMALL, tmp_path / "plain", seed=4, generation=2).run()
    _, fp = _flagged_frames(tmp_path / "plain")
    assert all(f.member is None for f in fp)
    # the trajectories of the mean are those of the plain sampler, bit for bit, up to their stop
    by_id = {f.traj: f for f in fp}
    same = [f for f in f2 if f.member is None and f.traj in by_id]
    assert all(f == by_id[f.traj] for f in same)
    assert any(m is not None for m in members) and same  # both kinds among these (seed 4)
