"""Sampling fanned out over workers: the same generation as one sampler, a killed worker resumed,
and the rules the merge and the streaming labels stand on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import torch

from potforge.census import generation_census
from potforge.records import FlaggedFrame, SampleSummary, TrajectoryOutcome
from potforge.sample import Sampler, SamplerConfig
from potforge.sample.fanout import Exchange, global_cut, labelled_prefix, merge, worker_dir, worker_ids
from potforge.structures import RandomCellSpec

SMALL = RandomCellSpec(box_min_A=6.5, box_max_A=7.5, density_min_g_cm3=2.3, density_max_g_cm3=2.8)


def config(**kw) -> SamplerConfig:
    base = dict(
        replicas=2,
        max_trajectories=9,
        timestep_fs=2.0,
        max_flagged=4,
        checkpoint_every_s=1e-6,
        census_every_fs=100.0,
        dtype="float64",
    )
    base.update(kw)
    cfg = SamplerConfig(**base)
    cfg.schedule.t_max_fs = 300
    cfg.schedule.period_fs.low, cfg.schedule.period_fs.high = 100, 300
    cfg.uncertainty.energy_eV_per_sqrt_atom = 0.0034  # some random 7 Å cells flag, some run 300 fs
    cfg.uncertainty.force_mean_eV_per_A = None
    cfg.uncertainty.force_max_eV_per_A = None
    return cfg


def run_worker(model, cfg, base, w, n, seed=5, generation=1):
    sampler = Sampler(
        model,
        cfg,
        SMALL,
        worker_dir(base, w),
        seed,
        generation,
        worker=w,
        workers=n,
        flagged_dir=base / "flagged",
        exchange=Exchange(base / "exchange", w, n, read_every_s=0.0),
    )
    return sampler.run()


def merged(base, cfg, n):
    summaries = [SampleSummary.read(worker_dir(base, w) / "summary.json") for w in range(n)]
    summary = merge(summaries, cfg.max_flagged, cfg.max_trajectories, cfg.schedule.t_max_fs)
    summary.write(base / "summary.json")
    return summary


def frames(base, summary):
    return [FlaggedFrame.read(base / "flagged" / f"{t}.json") for t in summary.flagged_trajectories]


def used(summary):
    return [(o.traj, o.outcome, o.time_fs, o.reason) for o in summary.outcomes if o.outcome != "unused"]


def test_three_workers_flag_the_frames_of_one_sampler(ani_al64, tmp_path):
    """float64: one sampler, and three workers (each its ids mod 3, run one after the other, so
    the first runs blind and the later ones stop at the cut the earlier published) give the same
    trajectories, outcomes, flagged frames (positions to 1e-10) and statistics."""
    cfg = config(max_trajectories=6)
    one = Sampler(ani_al64, cfg, SMALL, tmp_path / "one", seed=5, generation=1).run()
    base = tmp_path / "three"
    for w in range(3):
        run_worker(ani_al64, cfg, base, w, 3)
    three = merged(base, cfg, 3)
    assert one.flagged == three.flagged == cfg.max_flagged
    assert one.flagged_trajectories == three.flagged_trajectories
    assert used(one) == used(three)
    assert {o[1] for o in used(one)} == {"flagged", "survived"}  # events and censored trajectories both
    # workers started trajectories past the cut of the union: recorded as unused, never flagged
    assert any(o.outcome == "unused" for o in three.outcomes)
    for a, b in zip(frames(tmp_path / "one", one), frames(base, three), strict=True):
        assert a.traj == b.traj and a.numbers == b.numbers
        np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-10)
        np.testing.assert_allclose(a.cell, b.cell, rtol=0, atol=1e-10)
    for key in ("trajectories", "median_time_to_flag_fs", "survival_at_target", "max_observed_fs", "censored"):
        assert getattr(one, key) == getattr(three, key), key
    assert generation_census(tmp_path / "one") == generation_census(base)  # census over all workers
    # each worker ran only its own ids, and the stop rule held for the union
    for w in range(3):
        own = SampleSummary.read(worker_dir(base, w) / "summary.json")
        assert {int(o.traj.rsplit("t", 1)[1]) % 3 for o in own.outcomes} == {w}


KILL_SCRIPT = """
import sys, torch
from pathlib import Path
torch.set_num_threads(1)
from potforge.model import load_model
from potforge.sample import Sampler, SamplerConfig
from potforge.sample.fanout import Exchange, worker_dir
from potforge.structures import RandomCellSpec
cfg = SamplerConfig.model_validate_json(sys.argv[2])
cells = RandomCellSpec.model_validate_json(sys.argv[3])
base = Path(sys.argv[1])
Sampler(load_model("ani-al", dtype=torch.float64), cfg, cells, worker_dir(base, 1), 5, 1, worker=1, workers=2,
        flagged_dir=base / "flagged", exchange=Exchange(base / "exchange", 1, 2)).run()
"""


def test_a_killed_worker_resumes_from_its_checkpoint(ani_al64, tmp_path):
    """SIGKILL worker 1 of 2 once its checkpoint holds a finished trajectory; run it again: it
    continues from that checkpoint (the finished trajectory is not rerun) and the generation is
    the one an uninterrupted sampler gives."""
    cfg = config(max_trajectories=8)
    cfg.uncertainty.energy_eV_per_sqrt_atom = 0.003  # most flag early: a short generation
    torch.set_num_threads(1)  # as the killed process ran
    try:
        one = Sampler(ani_al64, cfg, SMALL, tmp_path / "one", seed=5, generation=1).run()
        base = tmp_path / "two"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.Popen(
            [sys.executable, "-c", KILL_SCRIPT, str(base), cfg.model_dump_json(), SMALL.model_dump_json()], env=env
        )
        published = base / "exchange" / "w001.json"
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if published.exists() and published.read_text() not in ("{}", ""):
                break  # the checkpoint holds a finished trajectory
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (worker_dir(base, 1) / "summary.json").exists(), "killed too late to test a resume"
        checkpoint = torch.load(worker_dir(base, 1) / "state.pt", weights_only=True)
        import json

        before = json.loads(checkpoint["book"])["outcomes"]
        assert before  # a finished trajectory in the checkpoint...
        resumed = Sampler(
            ani_al64,
            cfg,
            SMALL,
            worker_dir(base, 1),
            5,
            1,
            worker=1,
            workers=2,
            flagged_dir=base / "flagged",
            exchange=Exchange(base / "exchange", 1, 2),
        )
        resumed.load(worker_dir(base, 1) / "state.pt")
        assert set(resumed.outcomes) == {int(k) for k in before}  # ...that a re-run takes up as it is
        run_worker(ani_al64, cfg, base, 1, 2)
        run_worker(ani_al64, cfg, base, 0, 2)
        two = merged(base, cfg, 2)
    finally:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    assert one.flagged_trajectories == two.flagged_trajectories and used(one) == used(two)
    assert [f.positions for f in frames(tmp_path / "one", one)] == [f.positions for f in frames(base, two)]


def outcome(k: int, kind: str, t: float = 10.0) -> TrajectoryOutcome:
    return TrajectoryOutcome(traj=f"g000-t{k:05d}", outcome=kind, time_fs=t)


def test_the_cut_and_the_certain_frames_follow_trajectory_ids():
    assert worker_ids(1, 3, 8) == [1, 4, 7]
    known = {0: True, 1: False, 3: True, 4: True}  # 2 has not finished
    assert global_cut(known, 2, 8) is None  # the 2nd event may be 2 or 3
    assert labelled_prefix(known, 2, 8) == [0]  # only 0 is certain
    known[2] = False
    assert global_cut(known, 2, 8) == 3 and labelled_prefix(known, 2, 8) == [0, 3]
    known[2] = True
    assert global_cut(known, 2, 8) == 2 and labelled_prefix(known, 2, 8) == [0, 2]  # 3 is beyond the cut
    # merge: worker 1 ran past the cut its peers set; its late trajectories become unused
    w0 = SampleSummary(
        flagged=1,
        total_steps=10,
        walltime_s=1.0,
        stop_reason="3 flagged frames",
        outcomes=[outcome(0, "flagged"), outcome(2, "survived", 300.0)],
    )
    w1 = SampleSummary(
        flagged=2,
        total_steps=20,
        walltime_s=2.0,
        stop_reason="every trajectory finished",
        outcomes=[outcome(1, "unstable"), outcome(3, "flagged"), outcome(5, "flagged")],
    )
    m = merge([w0, w1], 3, 8, 300.0)
    assert m.flagged_trajectories == ["g000-t00000", "g000-t00001", "g000-t00003"]
    assert [o.outcome for o in m.outcomes] == ["flagged", "unstable", "survived", "flagged", "unused"]
    assert m.trajectories == 4 and m.total_steps == 30 and m.walltime_s == 2.0 and m.stop_reason == "3 flagged frames"
    assert m.censored == 1


def test_parsl_sampling_defaults_to_the_gpu_executors_workers(tmp_path):
    from pathlib import Path

    import yaml

    from potforge.campaign_sampling import sampling_workers
    from potforge.config import parse_config

    root = Path(__file__).resolve().parents[2] / "examples"
    engine = yaml.safe_load((root / "slurm.yaml").read_text())["engine"]
    cfg = parse_config({"engine": engine, "sampler": {"max_trajectories": 100}})
    assert sampling_workers(cfg, tmp_path / "a") == 16  # 4 GPUs per node x 1 node per block x 4 blocks
    assert sampling_workers(parse_config({}), tmp_path / "b") == 1  # local engine
    small = parse_config({"engine": engine, "sampler": {"max_trajectories": 6}})
    assert sampling_workers(small, tmp_path / "c") == 6  # never more workers than trajectories
    assert sampling_workers(small, tmp_path / "a") == 16  # a started generation keeps its split
