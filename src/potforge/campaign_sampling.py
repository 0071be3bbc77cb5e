"""A generation's sampling stage in the campaign: fanned out over ``sampler.workers`` tasks
(:mod:`potforge.sample.fanout`), and its flagged frames labelled while it runs.

``generations/gNNN/sampling/`` holds the generation's ``flagged/`` frames, the merged
``summary.json`` and ``DONE.json`` (what the rest of the campaign reads, whatever the number of
workers), ``workers.json`` (the number of workers the generation was dealt over: a resumed
generation keeps it), ``exchange/`` and one directory per worker (``w000/``...: checkpoint,
summary, status, lock).

Streaming labels (``loop.streaming_labels``): while the workers run, the campaign polls what they
have published and queues, in trajectory-id order, the frames of the longest finished prefix of
trajectories, at most ``max_flagged`` of them (:func:`~potforge.sample.fanout.labelled_prefix`):
those are labelled whatever the unfinished trajectories do, so no frame beyond the cut is ever
labelled, and the dataset receives them in the order the sequential campaign would. They go to
the ``cpu`` executor at once (:class:`~potforge.labeling.StreamingLabeller`); the rest of the
generation's frames are queued when sampling ends and labelled before the next training, as
without streaming.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from potforge import durable
from potforge.data import DatasetStore, Provenance
from potforge.engine import Engine, executor_workers
from potforge.errors import PotforgeError
from potforge.labeling import StreamingLabeller
from potforge.records import FlaggedFrame, SampleSummary
from potforge.sample.fanout import (
    EXCHANGE_DIR,
    WORKERS_FILE,
    Exchange,
    labelled_prefix,
    merge,
    read_known,
    worker_dir,
)
from potforge.sample.sampler import FLAGGED_DIR, STATE_FILE, SUMMARY_FILE


class StageFailed(PotforgeError):
    """A stage's worker process died under it (killed by the OS, out of memory, a lost node)."""


def stage_failure(exc: BaseException, stage: str) -> StageFailed | None:
    """A one-line :class:`StageFailed` when ``exc`` says the worker running ``stage`` died."""
    from parsl.executors.errors import ExecutorError
    from parsl.executors.high_throughput.errors import ManagerLost, WorkerLost

    if isinstance(exc, (WorkerLost, ManagerLost, ExecutorError)):
        return StageFailed(
            f"the worker running {stage} died ({type(exc).__name__}: killed by the operating system or out of "
            "memory?); its checkpoint is kept: run the same command again to resume it"
        )
    return None


def queue_frame(store: DatasetStore, rec: FlaggedFrame, oracle_name: str, oracle_hash: str) -> bool:
    """Queue one flagged frame as a pending row for the next generation; False if already there."""
    atoms = rec.atoms()
    u = rec.uncertainty
    prov = Provenance(
        source="active_learning",
        generation=rec.generation + 1,
        trajectory=rec.traj,
        sim_time_fs=rec.sim_time_fs,
        energy_std_eV=u.get("energy_eV_per_sqrt_atom", 0.0) * len(atoms) ** 0.5 if u else None,
        force_std_max_eV_A=u.get("force_max_eV_per_A"),
        extra={
            "outcome": rec.outcome,
            "reason": rec.reason,
            "uncertainty": u,
            "schedule": rec.schedule,
            "strain": rec.strain,
            "pressure": rec.pressure,
            "member": rec.member,
        },
    )
    return store.add_pending(atoms, prov, oracle_name, oracle_hash) is not None


def sampling_workers(config, sampling_dir: Path) -> int:
    """How many workers generation's sampling in ``sampling_dir`` is dealt over: as recorded
    when it started (a resumed generation keeps its split), else ``sampler.workers``, else 1
    with the local engines and the ``gpu`` executor's workers with ``engine.kind: parsl``; never
    more than ``sampler.max_trajectories``."""
    recorded = durable.read_json(sampling_dir / WORKERS_FILE)
    if recorded:
        return int(recorded["workers"])
    n = config.sampler.workers
    if n is None:
        n = executor_workers(config.engine, "gpu") if config.engine.kind == "parsl" else 1
    n = max(1, min(n, config.sampler.max_trajectories))
    durable.write_json(sampling_dir / WORKERS_FILE, {"workers": n})
    return n


def sample_worker_stage(
    model_path: str,
    sampling_dir: str,
    worker: int,
    workers: int,
    sampler_json: str,
    cells_json: str,
    seed: int,
    generation: int,
    threads: int | None = None,
    target_fs: float | None = None,
    starts: list[str] | None = None,
) -> dict:
    """Worker ``worker`` of ``workers`` of one generation's sampling (runs anywhere: a Parsl
    worker, a Slurm node); resumes from its checkpoint. Returns (and records in its directory)
    its :class:`~potforge.records.SampleSummary`, without the outcomes."""
    import torch

    from potforge.devices import resolve_device
    from potforge.model.io import load_model
    from potforge.sample import Sampler, SamplerConfig
    from potforge.stages import exclusive_stage
    from potforge.structures import RandomCellSpec

    base = Path(sampling_dir)
    out = worker_dir(base, worker)
    with exclusive_stage(out, threads) as done:
        if done is not None:
            return done
        if (out / SUMMARY_FILE).exists():  # finished, killed before it was marked done
            summary = SampleSummary.read(out / SUMMARY_FILE)
        else:
            config = SamplerConfig.model_validate_json(sampler_json)
            dtype = torch.float32 if config.dtype == "float32" else torch.float64
            model = load_model(model_path, dtype=dtype, device=resolve_device(config.device))
            cells = RandomCellSpec.model_validate_json(cells_json)
            frames = [FlaggedFrame.read(p) for p in starts or []]
            exchange = Exchange(base / EXCHANGE_DIR, worker, workers)
            sampler = Sampler(
                model, config, cells, out, seed, generation, target_fs=target_fs, starts=frames, worker=worker,
                workers=workers, flagged_dir=base / FLAGGED_DIR, exchange=exchange,
            )  # fmt: skip
            last = [0.0]

            def relay(status: dict) -> None:  # at most once a second: the campaign polls it
                if time.time() - last[0] > 1.0:
                    last[0] = time.time()
                    durable.write_status(out, status)

            summary = sampler.run(progress=relay)
        record = summary.model_dump(mode="json", exclude={"outcomes"})
        record["pid"] = os.getpid()
        return durable.mark_done(out, record)


class FrameStream:
    """Queues a running generation's frames that are certain to be labelled, in id order."""

    def __init__(self, store: DatasetStore, sampling_dir: Path, workers: int, max_flagged: int,
                 max_trajectories: int, generation: int, oracle_name: str, oracle_hash: str) -> None:  # fmt: skip
        self.store, self.dir, self.workers = store, Path(sampling_dir), workers
        self.max_flagged, self.max_trajectories, self.generation = max_flagged, max_trajectories, generation
        self.oracle_name, self.oracle_hash = oracle_name, oracle_hash
        self.queued: list[int] = []  # ids whose frames this stream has handed on, in order

    def step(self) -> int:
        """Queue the newly certain frames; returns how many were added to the dataset."""
        known = read_known(self.dir / EXCHANGE_DIR, range(self.workers))
        certain = labelled_prefix(known, self.max_flagged, self.max_trajectories)
        added = 0
        for k in certain[len(self.queued) :]:
            rec = FlaggedFrame.read(self.dir / FLAGGED_DIR / f"g{self.generation:03d}-t{k:05d}.json")
            added += queue_frame(self.store, rec, self.oracle_name, self.oracle_hash)
            self.queued.append(k)
        return added


def _status(sampling_dir: Path, workers: int) -> dict | None:
    """The workers' status files added up (what the progress display shows)."""
    statuses = [s for w in range(workers) if (s := durable.read_json(worker_dir(sampling_dir, w) / "status.json"))]
    if not statuses:
        return None
    total = {k: sum(s.get(k, 0) for s in statuses) for k in ("replicas", "trajectories", "flagged", "total_steps")}
    total["walltime_s"] = max(s.get("walltime_s", 0.0) for s in statuses)
    total["median_time_to_flag_fs"] = statuses[0].get("median_time_to_flag_fs") if workers == 1 else None
    total["workers"] = workers
    return total


def run_sampling(
    engine: Engine,
    sampling_dir: Path,
    model: str,
    sampler,
    cells_json: str,
    seed: int,
    generation: int,
    threads: int | None,
    target_fs: float,
    starts: list[str],
    workers: int,
    report: Callable[[dict], None],
    stream: FrameStream | None = None,
    labeller: StreamingLabeller | None = None,
    poll_s: float = 1.0,
) -> dict:
    """Run (or resume, or read back) a generation's sampling over ``workers`` tasks, streaming
    certain frames to ``labeller`` meanwhile; merge the workers' summaries into the generation's
    ``summary.json``. Returns the merged summary without its outcomes (as recorded in DONE.json)."""
    done = durable.read_done(sampling_dir)
    if done is not None:
        return done
    futures = {}
    for w in range(workers):
        futures[w] = engine.submit(
            "gpu", sample_worker_stage, model, str(sampling_dir), w, workers, sampler.model_dump_json(), cells_json,
            seed, generation, threads, target_fs, starts,
        )  # fmt: skip
    last: dict | None = None
    try:
        while futures:
            time.sleep(poll_s)
            status = _status(sampling_dir, workers)
            if status is not None and status != last:
                last = status
                report(status)
            if stream is not None and labeller is not None:
                stream.step()
                labeller.step()
            for w, fut in list(futures.items()):
                if fut.done():
                    try:
                        fut.result()
                    except Exception as exc:
                        failed = stage_failure(exc, f"g{generation:03d}/sampling/w{w:03d}")
                        if failed is not None:
                            raise failed from None
                        raise
                    del futures[w]
        if stream is not None and labeller is not None:
            stream.step()
            labeller.step()
    finally:
        if labeller is not None and not futures:
            labeller.finish()
    summaries = [SampleSummary.read(worker_dir(sampling_dir, w) / SUMMARY_FILE) for w in range(workers)]
    target = sampler.schedule.t_max_fs if target_fs is None else target_fs
    merged = merge(summaries, sampler.max_flagged, sampler.max_trajectories, target)
    merged.write(sampling_dir / SUMMARY_FILE)
    record = merged.model_dump(mode="json", exclude={"outcomes"})
    record["workers"] = workers
    return durable.mark_done(sampling_dir, record)


def legacy_sampling(sampling_dir: Path) -> bool:
    """A generation whose sampling an earlier potforge started in place (one sampler, no workers)."""
    return (sampling_dir / STATE_FILE).exists() and not (sampling_dir / WORKERS_FILE).exists()
