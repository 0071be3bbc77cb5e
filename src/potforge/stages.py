"""The long stages of a campaign as plain functions that run anywhere (a Parsl worker, a Slurm
node, or this process): training one generation and sampling with it.

Each takes only paths and JSON, writes everything it produces under its own directory, and
holds an exclusive lock on that directory while it works (:func:`potforge.durable.stage_lock`):
if a killed campaign left a worker still running a stage, the restarted campaign's copy of the
stage waits for it, then finds the work done (or resumes it from its checkpoint) instead of
running it twice. Each returns its typed summary as a dict (Parsl moves plain data).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from potforge import durable
from potforge.records import SampleSummary, TrainSummary


@contextlib.contextmanager
def exclusive_stage(directory: Path, threads: int | None) -> Iterator[dict | None]:
    """Hold the stage's lock; yield its recorded summary if it is already done, else None."""
    with durable.stage_lock(directory):
        done = durable.read_done(directory)
        if done is not None:
            yield done
            return
        if threads:
            import torch

            torch.set_num_threads(threads)
        yield None


def train_stage(db: str, out_dir: str, config_json: str, init_model: str | None, threads: int | None = None,
                oracle_hash: str | None = None) -> dict:  # fmt: skip
    """Train one generation on the frames of ``db`` labelled by ``oracle_hash`` (all oracles'
    when None); returns (and records) its :class:`~potforge.records.TrainSummary`."""
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
        elements = dataset_elements(store, oracle_hash)
        splits = {s: load_split(store, s, elements, oracle_hash=oracle_hash) for s in ("train", "val", "test")}
        previous = (
            load_model(init_model, dtype=torch.float32 if config.dtype == "float32" else torch.float64)
            if init_model
            else None
        )
        result = train_ensemble(
            splits["train"], splits["val"], splits["test"], out, config, previous,
            progress=lambda status: durable.write_status(out, status),
        )  # fmt: skip
        summary = TrainSummary(
            model=str(result.model_path),
            epochs=result.epochs,
            walltime_s=result.walltime_s,
            n_train=len(splits["train"]),
            metrics=result.metrics,
        )
        return durable.mark_done(out, summary.model_dump(mode="json"))


def sample_stage(
    model_path: str,
    out_dir: str,
    sampler_json: str,
    cells_json: str,
    seed: int,
    generation: int,
    threads: int | None = None,
    target_fs: float | None = None,
    starts: list[str] | None = None,
) -> dict:
    """Run the sampler with one generation's model; flagged frames land in ``out_dir/flagged``.
    ``starts``: paths of the previous generation's flagged frames that trajectories may continue.
    Returns (and records) its :class:`~potforge.records.SampleSummary`, without the outcomes
    (they stay in ``summary.json``)."""
    import torch

    from potforge.devices import resolve_device
    from potforge.model.io import load_model
    from potforge.sample import Sampler, SamplerConfig
    from potforge.structures import RandomCellSpec

    out = Path(out_dir)
    with exclusive_stage(out, threads) as done:
        if done is not None:
            return done
        config = SamplerConfig.model_validate_json(sampler_json)
        dtype = torch.float32 if config.dtype == "float32" else torch.float64
        model = load_model(model_path, dtype=dtype, device=resolve_device(config.device))
        cells = RandomCellSpec.model_validate_json(cells_json)
        from potforge.records import FlaggedFrame

        frames = [FlaggedFrame.read(p) for p in starts or []]
        sampler = Sampler(model, config, cells, out, seed, generation, target_fs=target_fs, starts=frames)
        last = [0.0]

        def relay(status: dict) -> None:  # at most once a second: the campaign polls it
            if time.time() - last[0] > 1.0:
                last[0] = time.time()
                durable.write_status(out, status)

        summary: SampleSummary = sampler.run(progress=relay)
        record = summary.model_dump(mode="json", exclude={"outcomes"})
        record["pid"] = os.getpid()
        return durable.mark_done(out, record)
