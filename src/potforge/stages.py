"""The long stages of a campaign as plain functions that run anywhere (a Parsl worker, a Slurm
node, or this process): training one generation and sampling with it.

Each takes only paths and JSON, writes everything it produces under its own directory, and
holds an exclusive lock on that directory while it works: if a killed campaign left a worker
still running a stage, the restarted campaign's copy of the stage waits for it, then finds the
work done (or resumes it from its checkpoint) instead of running it twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

DONE = "DONE.json"


@contextlib.contextmanager
def stage_lock(directory: Path) -> Iterator[None]:
    """Exclusive lock on ``directory`` (released by the OS if the holder dies)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def exclusive_stage(directory: Path, threads: int | None) -> Iterator[dict | None]:
    """Hold the stage's lock; yield its recorded summary if it is already done, else None."""
    with stage_lock(directory):
        if (directory / DONE).exists():
            yield json.loads((directory / DONE).read_text())
            return
        if threads:
            import torch

            torch.set_num_threads(threads)
        yield None


def _mark_done(directory: Path, summary: dict) -> dict:
    from potforge.oracle.runner import write_json_atomic

    write_json_atomic(directory / DONE, summary)
    return summary


def train_stage(db: str, out_dir: str, config_json: str, init_model: str | None, threads: int | None = None) -> dict:
    """Train one generation on the dataset ``db``; returns (and records) its summary."""
    import torch

    from potforge.data import DatasetStore
    from potforge.model.io import load_model
    from potforge.train import TrainConfig, dataset_elements, load_split, train_ensemble

    out = Path(out_dir)
    with exclusive_stage(out, threads) as done:
        if done is not None:
            return done
        config = TrainConfig.model_validate_json(config_json)
        store = DatasetStore(db)
        elements = dataset_elements(store)
        splits = {s: load_split(store, s, elements) for s in ("train", "val", "test")}
        previous = (
            load_model(init_model, dtype=torch.float32 if config.dtype == "float32" else torch.float64)
            if init_model
            else None
        )

        def record(r: dict) -> None:
            from potforge.oracle.runner import write_json_atomic

            write_json_atomic(out / "status.json", r)

        result = train_ensemble(splits["train"], splits["val"], splits["test"], out, config, previous, progress=record)
        return _mark_done(
            out,
            {
                "model": str(result.model_path),
                "epochs": result.epochs,
                "walltime_s": result.walltime_s,
                "n_train": len(splits["train"]),
                "metrics": result.metrics,
            },
        )


def sample_stage(
    model_path: str,
    out_dir: str,
    sampler_json: str,
    cells_json: str,
    seed: int,
    generation: int,
    threads: int | None = None,
) -> dict:
    """Run the sampler with one generation's model; flagged frames land in ``out_dir/flagged``."""
    import torch

    from potforge.devices import resolve_device
    from potforge.model.io import load_model
    from potforge.oracle.runner import write_json_atomic
    from potforge.sample import Sampler, SamplerConfig
    from potforge.structures import RandomCellSpec

    out = Path(out_dir)
    with exclusive_stage(out, threads) as done:
        if done is not None:
            return done
        config = SamplerConfig.model_validate_json(sampler_json)
        dtype = torch.float32 if config.dtype == "float32" else torch.float64
        model = load_model(model_path, dtype=dtype, device=resolve_device(config.device))
        sampler = Sampler(model, config, RandomCellSpec.model_validate_json(cells_json), out, seed, generation)
        last = [0.0]

        def relay(status: dict) -> None:  # at most once a second: the campaign polls it
            if time.time() - last[0] > 1.0:
                last[0] = time.time()
                write_json_atomic(out / "status.json", status)

        result = sampler.run(progress=relay)
        summary = json.loads((out / "summary.json").read_text())
        summary.pop("outcomes", None)
        summary["pid"] = os.getpid()
        summary["flagged"] = result.flagged
        return _mark_done(out, summary)
