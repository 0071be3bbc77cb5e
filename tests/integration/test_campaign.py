"""A whole tiny campaign on EMT, resume after SIGKILL at random points, and config errors."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from potforge.campaign import CampaignState, run_campaign
from potforge.config import parse_config
from potforge.data import DatasetStore
from potforge.errors import ConfigError


def tiny_config(counter: Path | None = None, **over) -> dict:
    oracle = {"name": "emt"}
    if counter is not None:
        oracle = {
            "name": "python:potforge.oracle.fake:FaultyEMT",
            "settings": {"mode": "ok", "delay_s": 0.05, "counter_file": str(counter)},
        }
    cfg = {
        "name": "tiny",
        "seed": 11,
        "oracle": oracle,
        "initial": {"n_cells": 10, "cells": {"box_min_A": 6.0, "box_max_A": 7.0}},
        "labeling": {"timeout_s": 60, "chunk_size": 3},
        "training": {"n_members": 2, "hidden_layers": [16, 8], "max_epochs": 6, "batch_size": 2, "l0_A2": 1.0,
                     "threads": 1},
        "sampler": {
            "replicas": 3,
            "timestep_fs": 2.0,
            "schedule": {"t_max_fs": 300, "period_fs": {"low": 100, "high": 200}},
            "max_flagged": 3,
            "max_trajectories": 6,
            "continue_fraction": 0.34,  # 2 of 6 trajectories continue the previous generation's frames
            "uncertainty": {"energy_eV_per_sqrt_atom": 1e-4},  # every trajectory flags: no early convergence
            "checkpoint_every_s": 0.5,
        },
        "loop": {"max_generations": 3, "later_max_epochs": 4, "target_median_time_to_flag_fs": 300},
        "engine": {"kind": "threads", "max_workers": 2},
        "validation": {"enabled": False},
    }  # fmt: skip
    cfg.update(over)
    return cfg


def frames_of(directory: Path) -> list[tuple]:
    store = DatasetStore(directory / "campaign.db")
    return sorted(
        (a.info["frame_hash"], round(a.get_potential_energy(), 10), a.info["source"], a.info["generation"])
        for a in store.frames()
    )


def test_tiny_campaign_runs_three_generations(tmp_path):
    cfg = parse_config(tiny_config())
    events = []
    state = run_campaign(cfg, tmp_path / "c", progress=events.append)
    assert state.finished and "generation cap" in state.stop_reason
    # three generations sample; a closing fourth labels the third's flagged frames and trains the
    # final model on everything, without sampling again
    assert [s for s in state.done if s.endswith(":train")] == ["g000:train", "g001:train", "g002:train", "g003:train"]
    assert not any(s.startswith("g003:sample") for s in state.done)
    from potforge.campaign import final_model, model_path

    assert final_model(tmp_path / "c") == model_path(tmp_path / "c", 3)
    store = DatasetStore(tmp_path / "c" / "campaign.db")
    assert store.count(status="ok", source="random") == 10
    assert store.count(status="ok", source="active_learning", generation=3) >= 1  # the last sampling's frames
    assert store.count(status="pending") == 0  # nothing the sampler paid for is left unlabelled
    assert {e["stage"] for e in events} >= {"label", "train", "sample", "finished"}
    saved = yaml.safe_load((tmp_path / "c" / "config.yaml").read_text())
    assert saved["seed"] == 11 and "torch" in saved["versions"]
    # status: a row per generation and four non-empty plots
    from potforge.report import campaign_summary, write_campaign_plots

    summary = campaign_summary(tmp_path / "c", state)
    assert [r["generation"] for r in summary["generations"]] == [0, 1, 2, 3]
    assert all(r["test_force_rmse_eV_per_A"] is not None for r in summary["generations"])
    assert summary["generations"][3].get("census") is None  # the closing generation does not sample
    # discovery made visible: a census of every generation, a learning-curve point of every model
    for r in summary["generations"][:3]:
        assert r["census"]["trajectories"] >= 1 and r["census"]["snapshots"] >= r["census"]["trajectories"]
        assert r["labelled_frames"] == r["dataset_size"] and 0 <= r["crystalline_frames"] <= r["dataset_size"]
        values = r["properties"]["values"]
        assert values["a0_A"]["reference"] == pytest.approx(3.994, abs=0.005)  # EMT's own fcc a0
        assert r["properties"]["oracle_calls"] >= r["dataset_size"]
    calls = [r["properties"]["oracle_calls"] for r in summary["generations"]]
    assert calls == sorted(calls) and calls[-1] > calls[0]
    # no human guidance: every frame is a random cell or a frame the sampler reached from one
    from ase.build import bulk

    from potforge.data import Provenance
    from potforge.provenance import violations
    from potforge.records import SampleSummary

    assert violations(tmp_path / "c") == []
    continued = [o for g in (1, 2) for o in SampleSummary.read(
        tmp_path / "c" / "generations" / f"g{g:03d}" / "sampling" / "summary.json").outcomes if o.parent]  # fmt: skip
    assert len(continued) == 4 and all(o.parent.startswith(("g000-", "g001-")) for o in continued)
    crystal = bulk("Al", "fcc", a=4.0, cubic=True)
    store.add_pending(crystal, Provenance(source="random", trajectory="random:11:3"), "emt", "ohand")
    store.add_pending(crystal.repeat(2), Provenance(source="import"), "emt", "ohand")
    found = violations(tmp_path / "c")
    assert len(found) == 2 and "not the random cell its seed draws" in found[0] and "neither" in found[1]
    for path in write_campaign_plots(tmp_path / "c", summary):
        assert path.stat().st_size > 5000
    # a finished campaign is a no-op; another config in the same directory is refused
    assert run_campaign(cfg, tmp_path / "c").finished
    with pytest.raises(ConfigError, match="another configuration"):
        run_campaign(parse_config(tiny_config(seed=12)), tmp_path / "c")


def test_learning_curve_point_is_computed_once_and_resumes_from_its_cache(tmp_path):
    """A point is read back once done; killed before it was marked done, it is recomputed from
    the oracle's cached calculations (no oracle call repeated)."""
    from potforge.oracle import get_oracle
    from potforge.properties import learning_curve_point

    counter = tmp_path / "calls.txt"
    oracle = get_oracle("python:potforge.oracle.fake:FaultyEMT", {"counter_file": str(counter)})
    args = ("ani-al", oracle, tmp_path / "g000", tmp_path / "reference")
    first = learning_curve_point(*args, generation=0, oracle_calls=96)
    n_calls = len(counter.read_text().split())
    assert n_calls > 10 and first.values["eps_bcc_meV"].reference == pytest.approx(5.17, abs=0.1)
    assert learning_curve_point(*args, generation=0, oracle_calls=96) == first
    (tmp_path / "g000" / "DONE.json").unlink()  # as if killed before it finished
    again = learning_curve_point(*args, generation=0, oracle_calls=96)
    assert len(counter.read_text().split()) == n_calls
    assert again.values == first.values


def run_cli(config: Path, directory: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "potforge", "run", str(config), "--dir", str(directory), "--no-validate"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ, POTFORGE_CLAIM_STALE_S="5"),
    )


def test_sigkill_at_random_points_loses_and_repeats_nothing(tmp_path):
    """Kill `potforge run` at >= 5 random moments; the finished campaign has exactly the frames
    of an uninterrupted run, and the oracle computed each of them exactly once."""
    reference_counter, counter = tmp_path / "ref_calls.txt", tmp_path / "calls.txt"
    ref_cfg, cfg = tmp_path / "ref.yaml", tmp_path / "cfg.yaml"
    ref_cfg.write_text(yaml.safe_dump(tiny_config(reference_counter)))
    cfg.write_text(yaml.safe_dump(tiny_config(counter)))
    ref = run_cli(ref_cfg, tmp_path / "ref")
    t0 = time.time()
    assert ref.wait(timeout=600) == 0, ref.stderr.read().decode()
    duration = time.time() - t0
    log = ref.stderr.read().decode()  # not a terminal: progress as timestamped lines, one per stage
    assert re.search(r"^\d\d:\d\d:\d\d campaign tiny — generation 0 — label", log, re.M), log
    assert re.search(r"— generation 1 — train", log) and "finished: generation cap" in log, log
    rng = random.Random(7)
    kills = 0
    for _ in range(40):
        proc = run_cli(cfg, tmp_path / "run")
        time.sleep(rng.uniform(0.2, 0.6) * duration / 3)
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        if kills >= 6:
            break
    final = run_cli(cfg, tmp_path / "run")
    assert final.wait(timeout=600) == 0, final.stderr.read().decode()
    assert kills >= 5
    assert CampaignState.load(tmp_path / "run").finished
    assert frames_of(tmp_path / "run") == frames_of(tmp_path / "ref")
    calls = counter.read_text().split()
    assert len(calls) == len(set(calls)), "an oracle call was repeated"
    labelled = {f[0] for f in frames_of(tmp_path / "run")}
    assert set(calls) == labelled, "every labelled frame comes from exactly one oracle call"


@pytest.mark.parametrize(
    "change,message",
    [
        ({"training": {"dtype": "float16"}}, r"training\.dtype.*'float32' or 'float64'"),
        ({"sampler": {"timestep_fs": -1}}, r"sampler\.timestep_fs.*greater than 0"),
        ({"initial": {"n_cellz": 3}}, r"initial\.n_cellz: unknown field"),
        ({"engine": {"kind": "kubernetes"}}, r"engine\.kind.*'local', 'threads' or 'parsl'"),
        ({"sampler": {"schedule": {"t_start_K": {"low": 900, "high": 10}}}}, r"sampler\.schedule\.t_start_K"),
    ],
)
def test_config_errors_name_the_field_and_the_allowed_values(change, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({**tiny_config(), **change})


def test_cli_reports_config_errors_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"sampler": {"replicas": 0}}))
    res = subprocess.run([sys.executable, "-m", "potforge", "run", str(bad)], capture_output=True, text=True)
    assert res.returncode == 2 and "sampler.replicas" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, "-m", "potforge", "status", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 2 and "not a campaign directory" in res.stderr


@pytest.mark.parametrize("name", ["quickstart", "discovery", "paper", "gpaw"])
def test_example_configs_are_valid(name):
    root = Path(__file__).resolve().parents[2] / "examples"
    cfg = parse_config(yaml.safe_load((root / f"{name}.yaml").read_text()), name)
    assert cfg.training.n_members == 8


def test_slurm_example_builds_a_parsl_config(tmp_path):
    from potforge.engine import EngineConfig, _parsl_config

    root = Path(__file__).resolve().parents[2] / "examples"
    engine = EngineConfig(**yaml.safe_load((root / "slurm.yaml").read_text())["engine"])
    config = _parsl_config(engine, tmp_path)
    from parsl.providers import SlurmProvider

    labels = {ex.label: isinstance(ex.provider, SlurmProvider) for ex in config.executors}
    assert labels == {"cpu": True, "gpu": True}  # potforge's subclass: jobs named after the campaign


def test_a_dead_stage_worker_is_one_line_not_a_traceback(tmp_path):
    from concurrent.futures import Future

    from parsl.executors.high_throughput.errors import WorkerLost

    from potforge.campaign import StageFailed, _wait

    future = Future()
    future.set_exception(WorkerLost(3, "node-7"))
    status = tmp_path / "generations" / "g003" / "model" / "status.json"
    with pytest.raises(StageFailed, match=r"g003/model died \(WorkerLost.*run the same command again"):
        _wait(future, status, lambda s: None, poll_s=0.01)
    bug = Future()
    bug.set_exception(KeyError("a bug in the stage"))  # the stage's own errors keep their type
    with pytest.raises(KeyError):
        _wait(bug, status, lambda s: None, poll_s=0.01)


def test_sigterm_shuts_the_engine_down_and_leaves_no_worker(tmp_path):
    """`kill` (SIGTERM) of `potforge run` unwinds like Ctrl-C: no Parsl process outlives it."""
    import psutil

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config()))
    proc = subprocess.Popen([sys.executable, "-m", "potforge", "run", str(cfg), "--dir", str(tmp_path / "run"),
                             "--no-validate"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    workers = []
    deadline = time.time() + 120
    while time.time() < deadline and not workers:  # wait until the run has started worker processes
        time.sleep(0.2)
        try:
            workers = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            break
    assert workers, "the engine never started"
    everything = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130 and "SIGTERM" in proc.stderr.read().decode()
    _, alive = psutil.wait_procs(everything, timeout=30)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], [p.cmdline() for p in alive]


def test_the_campaign_budget_bounds_a_generations_sampling():
    from potforge.campaign import sampling_budget_s
    from potforge.config import CampaignConfig

    def budget(loop_s, sampler_s, elapsed_s):
        cfg = tiny_config()
        cfg["loop"]["max_walltime_s"] = loop_s
        cfg["sampler"]["max_walltime_s"] = sampler_s
        return sampling_budget_s(CampaignConfig.model_validate(cfg), elapsed_s)

    assert budget(None, None, 500.0) is None and budget(None, 120.0, 500.0) == 120.0
    assert budget(780.0, None, 500.0) == 280.0  # what is left of the campaign's 13 minutes
    assert budget(780.0, 100.0, 500.0) == 100.0  # the sampler's own cap when it is smaller
    assert budget(780.0, None, 900.0) == 78.0  # a late generation still samples a tenth


def test_training_seed_follows_the_campaign_seed_and_the_generation():
    from potforge.campaign import training_seed
    from potforge.config import CampaignConfig

    def seed(campaign_seed, generation):
        return training_seed(CampaignConfig.model_validate(tiny_config() | {"seed": campaign_seed}), generation)

    assert seed(11, 0) == seed(11, 0)  # reproducible
    assert len({seed(11, 0), seed(11, 1), seed(12, 0), seed(12, 1)}) == 4  # campaigns and generations differ


def test_a_shared_dataset_trains_each_campaign_on_its_own_oracles_labels(tmp_path):
    from ase.calculators.singlepoint import SinglePointCalculator

    from potforge.data import DatasetStore, Provenance
    from potforge.structures import RandomCellSpec, random_cells
    from potforge.train.frames import dataset_elements, load_split

    store = DatasetStore(tmp_path / "shared.db")
    cells = random_cells(RandomCellSpec(box_min_A=6.0, box_max_A=7.0), 12, seed=3)
    for k, atoms in enumerate(cells):  # the same structures labelled by two oracles
        for oracle, energy in (("oEMT", -3.0), ("oOTHER", +40.0)):
            labelled = atoms.copy()
            labelled.calc = SinglePointCalculator(
                labelled, energy=energy * len(atoms), forces=np.zeros((len(atoms), 3))
            )
            store.add_labelled(labelled, Provenance(source="random", trajectory=f"r{k}"), oracle, oracle)
    elements = dataset_elements(store, "oEMT")
    frames = [load_split(store, split, elements, oracle_hash="oEMT") for split in ("train", "val", "test")]
    assert sum(len(f) for f in frames) == 12  # 24 labels in the store, 12 of this oracle
    assert all(float((f.energies / f.n_atoms).max()) < 0 for f in frames if len(f))


@pytest.mark.slow
def test_sampling_workers_and_streaming_labels_leave_the_campaign_unchanged(tmp_path):
    """Three sampling workers (on two engine threads: not all run at once) with streaming labels,
    and one sampler without: the same dataset (frames, labels, generations), the same flagged
    trajectories and outcomes in every generation, and each frame computed by one oracle call."""
    runs = {}
    for name, workers, streaming in (("one", 1, False), ("three", 3, True)):
        counter = tmp_path / f"{name}.calls"
        cfg = tiny_config(counter)
        cfg["sampler"]["workers"] = workers
        cfg["loop"]["streaming_labels"] = streaming
        state = run_campaign(parse_config(cfg), tmp_path / name)
        assert state.finished
        runs[name] = (state, counter.read_text().split())
    assert frames_of(tmp_path / "one") == frames_of(tmp_path / "three")
    from potforge.records import SampleSummary

    for g in range(3):
        a, b = (SampleSummary.read(tmp_path / n / "generations" / f"g{g:03d}" / "sampling" / "summary.json")
                for n in ("one", "three"))  # fmt: skip
        assert a.flagged_trajectories == b.flagged_trajectories
        assert [(o.traj, o.outcome, o.time_fs) for o in a.outcomes if o.outcome != "unused"] == [
            (o.traj, o.outcome, o.time_fs) for o in b.outcomes if o.outcome != "unused"
        ]
    calls = runs["three"][1]
    assert len(calls) == len(set(calls)) == len(frames_of(tmp_path / "three"))
    samples = [r for r in runs["three"][0].history if r["stage"].endswith(":sample")]
    assert all(r["workers"] == 3 for r in samples)
    assert all(r["queued_while_sampling"] <= r["flagged"] for r in samples)
