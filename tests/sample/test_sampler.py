"""The sampler: Eq. 2 schedules, independent replicas, stop rules, exact resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from potforge.sample import Sampler, SamplerConfig, TemperatureSchedule
from potforge.sample.config import ScheduleConfig
from potforge.sample.md import drift_and_kick, evaluate, final_kick, new_replica
from potforge.sample.schedule import StrainSchedule
from potforge.structures import RandomCellSpec, random_cell

SMALL = RandomCellSpec(box_min_A=6.5, box_max_A=7.5, density_min_g_cm3=2.3, density_max_g_cm3=2.8)


def test_schedule_is_equation_2():
    s = TemperatureSchedule(t_start_K=300, t_end_K=100, t_mod_K=500, period_fs=20_000, t_max_fs=250_000)
    for t in (0.0, 5_000.0, 10_000.0, 123_456.0, 250_000.0):
        expected = 300 + t / 250_000 * (100 - 300) + 500 * math.sin(math.pi * t / 20_000) ** 2
        assert s(t) == pytest.approx(expected, rel=1e-12)
    assert s(10_000.0) == pytest.approx(300 - 8 + 500)  # sin² peaks at t0/2


def test_schedule_draws_stay_in_the_paper_ranges():
    cfg = ScheduleConfig()
    rng = np.random.default_rng(0)
    draws = [TemperatureSchedule.draw(cfg, rng) for _ in range(200)]
    assert all(10 <= d.t_start_K <= 1000 and 10 <= d.t_end_K <= 600 for d in draws)
    assert all(0 <= d.t_mod_K <= 2000 and 10_000 <= d.period_fs <= 50_000 for d in draws)
    assert all(d.t_max_fs == 250_000 for d in draws)


def test_strain_schedule_deforms_periodically():
    s = StrainSchedule(volume_strain=0.05, shear_strain=0.04, period_fs=1000, shear_axes=(0, 2))
    np.testing.assert_allclose(s.deformation(0.0), np.eye(3), atol=1e-15)
    f = s.deformation(250.0)  # quarter period: full amplitude
    assert f[1, 1] == pytest.approx(1.05) and f[0, 2] == pytest.approx(0.02) and f[2, 0] == pytest.approx(0.02)


def _replicas(model, seeds):
    out = []
    for k in seeds:
        rng = np.random.default_rng([3, k])
        atoms = random_cell(SMALL, rng)
        sched = TemperatureSchedule(t_start_K=600, t_end_K=300, t_mod_K=200, period_fs=500, t_max_fs=10_000)
        out.append(new_replica(f"r{k}", atoms, model, sched, None, (3, k)))
    return out


def test_a_replica_stopping_does_not_disturb_the_others(ani_al64):
    """Same seeds, same path: a replica run beside others, or after one of them was removed,
    follows the same trajectory."""
    together = _replicas(ani_al64, [0, 1, 2])
    fewer = _replicas(ani_al64, [0, 1, 2])
    for group in (together, fewer):
        evaluate(ani_al64, group, members=False)
    for step in range(30):
        if step == 10:
            fewer.pop(1)  # replica 1 "stops" after 10 steps
        for group in (together, fewer):
            drift_and_kick(group, 1.0, 0.02)
            evaluate(ani_al64, group, members=False)
            final_kick(group, 1.0)
    np.testing.assert_allclose(together[0].positions, fewer[0].positions, atol=1e-9)
    np.testing.assert_allclose(together[2].velocities, fewer[1].velocities, atol=1e-9)


def test_thermostat_reaches_the_target_temperature(ani_al64):
    reps = _replicas(ani_al64, [5])
    reps[0].schedule = TemperatureSchedule(t_start_K=400, t_end_K=400, t_mod_K=0, period_fs=1e9, t_max_fs=1e9)
    evaluate(ani_al64, reps, members=False)
    temps = []
    for step in range(600):
        drift_and_kick(reps, 2.0, 0.05)
        evaluate(ani_al64, reps, members=False)
        final_kick(reps, 2.0)
        if step > 300:
            temps.append(reps[0].temperature_K())
    assert np.mean(temps) == pytest.approx(400, rel=0.2)


def sampler_config(**kw) -> SamplerConfig:
    cfg = SamplerConfig(replicas=3, timestep_fs=2.0, max_flagged=4, max_steps=600, checkpoint_every_s=1e-6, **kw)
    cfg.schedule.t_max_fs = 400
    cfg.schedule.period_fs.low, cfg.schedule.period_fs.high = 100, 300
    return cfg


def test_sampler_flags_replaces_and_records(ani_al32, tmp_path):
    cfg = sampler_config()
    cfg.uncertainty.energy_eV_per_sqrt_atom = 0.001  # ANI-Al is unsure of random 7 Å cells
    result = Sampler(ani_al32, cfg, SMALL, tmp_path, seed=1, generation=0).run()
    flagged = [o for o in result.outcomes if o["outcome"] == "flagged"]
    assert result.flagged == len(list((tmp_path / "flagged").glob("*.json"))) >= 1
    assert all(o["uncertainty"]["energy_eV_per_sqrt_atom"] > 0.001 for o in flagged)
    # slots are refilled: more trajectories than replicas were started
    assert len(result.outcomes) > cfg.replicas
    assert (tmp_path / "summary.json").exists()


def test_sampler_resumes_exactly(ani_al32, tmp_path):
    cfg = sampler_config()
    cfg.uncertainty.energy_eV_per_sqrt_atom = None
    cfg.uncertainty.force_mean_eV_per_A = None
    cfg.uncertainty.force_max_eV_per_A = None  # nothing flags: trajectories run to t_max
    straight = Sampler(ani_al32, cfg, SMALL, tmp_path / "a", seed=2, generation=1).run()
    half = cfg.model_copy(update={"max_steps": 300})
    Sampler(ani_al32, half, SMALL, tmp_path / "b", seed=2, generation=1).run()
    # the stopped run left its state; a sampler with the full budget continues from it
    import json

    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["total_steps"] >= 300
    state = torch.load(tmp_path / "b" / "state.pt", weights_only=True)
    assert state["total_steps"] == summary["total_steps"]
    # (the finished stage keeps its state; resuming a *killed* one is tested in tests/integration)
    assert straight.total_steps >= 600


def test_unstable_replicas_are_stopped_with_their_last_sane_frame(ani_al32, tmp_path):
    cfg = sampler_config()
    cfg.stability.min_distance_A = 2.3  # random cells start at >= 1.8 Å: every replica "collapses"
    cfg.uncertainty.energy_eV_per_sqrt_atom = None
    cfg.uncertainty.force_mean_eV_per_A = None
    cfg.uncertainty.force_max_eV_per_A = None
    result = Sampler(ani_al32, cfg, SMALL, tmp_path, seed=3, generation=0).run()
    unstable = [o for o in result.outcomes if o["outcome"] == "unstable"]
    assert unstable and all("apart" in o["reason"] for o in unstable)
    import json

    frame = json.loads((tmp_path / "flagged" / f"{unstable[0]['traj']}.json").read_text())
    assert frame["outcome"] == "unstable" and frame["sim_time_fs"] == 0.0  # the starting cell was the last sane one


def test_strained_cells_deform_affinely(ani_al64):
    from potforge.sample.config import StrainConfig

    rng = np.random.default_rng(4)
    atoms = random_cell(SMALL, rng)
    strain = StrainSchedule.draw(StrainConfig(enabled=True), rng)
    sched = TemperatureSchedule(t_start_K=300, t_end_K=300, t_mod_K=0, period_fs=1e9, t_max_fs=1e9)
    rep = new_replica("s", atoms, ani_al64, sched, strain, (4,))
    evaluate(ani_al64, [rep], members=False)
    for _ in range(20):
        drift_and_kick([rep], 1.0, 0.01)
        evaluate(ani_al64, [rep], members=False)
        final_kick([rep], 1.0)
    expected = rep.cell0 @ torch.tensor(strain.deformation(rep.t_fs), dtype=rep.cell.dtype)
    torch.testing.assert_close(rep.cell, expected)
    assert not torch.allclose(rep.cell, rep.cell0)
