"""Labelling: pending frames of a dataset -> oracle -> labelled frames, in parallel, crash-proof.

The loop reads like this:

1. ingest the inbox (results a previous, possibly killed, run finished but did not store);
2. send every pending frame without a result and without a live claim to the engine, in
   chunks (one oracle process per chunk; each calculation isolated and timed out);
3. as results land in the inbox, store them, one commit each, and advance the progress bar;
4. failed frames are retried until ``max_attempts``, then quarantined;
5. frames claimed by a still-running worker of an earlier run are waited for, not redone.

A result is written to the inbox by the process that computed it, before anyone is told, and
the database takes it from there, so a kill at any moment loses nothing that finished, and
nothing is computed twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from potforge.data.store import DatasetStore
from potforge.engine import Engine
from potforge.oracle import Oracle
from potforge.oracle.runner import claim_is_live, done_marker, label_many, result_path


@dataclass
class LabelingReport:
    """What one call of :func:`label_pending` did."""

    labelled: int = 0
    failed: int = 0
    quarantined: int = 0
    already_done: int = 0
    failure_kinds: dict[str, int] = field(default_factory=dict)


def ingest_inbox(store: DatasetStore, inbox: Path, max_attempts: int, report: LabelingReport | None = None) -> int:
    """Store every result waiting in ``inbox`` and delete it once committed. Returns how many."""
    n = 0
    if not inbox.exists():
        return 0
    for path in sorted(inbox.glob("*.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # never half-written (atomic rename); unreadable means foreign: leave it
        if store.status_of(result.get("task_id", "")) is None:
            continue  # a result for another dataset sharing this inbox
        status = store.record_result(result, max_attempts=max_attempts)
        if status == "ok":
            # the marker outlives the file, so a worker of a killed run never redoes the task
            marker = done_marker(inbox, result["task_id"])
            marker.parent.mkdir(exist_ok=True)
            marker.touch()
        path.unlink(missing_ok=True)
        n += 1
        if report is not None:
            if status == "ok":
                report.labelled += 1
            else:
                kind = result.get("kind", "?")
                report.failure_kinds[kind] = report.failure_kinds.get(kind, 0) + 1
                report.failed += status == "failed"
                report.quarantined += status == "quarantined"
    return n


def _chunks(items: list, size: int) -> list[list]:
    return [items[k : k + size] for k in range(0, len(items), size)]


def label_pending(
    store: DatasetStore,
    oracle: Oracle,
    engine: Engine,
    workdir: str | Path,
    *,
    chunk_size: int = 8,
    timeout_s: float | None = 3600.0,
    max_attempts: int = 3,
    progress: Callable[[int, int], None] | None = None,
    poll_s: float = 0.5,
) -> LabelingReport:
    """Label every pending frame of ``store`` that belongs to ``oracle``.

    workdir: holds ``inbox/`` (results on their way to the database) and the oracle's
    scratch directories. progress(done, total) is called whenever results are stored.
    """
    workdir = Path(workdir)
    inbox = workdir / "inbox"
    scratch = workdir / "scratch"
    report = LabelingReport()
    oracle.check()
    oracle_hash = oracle.settings_hash()
    store.adopt_labels(oracle_hash, oracle.legacy_hashes())
    spec = oracle.spec()
    ingest_inbox(store, inbox, max_attempts, report)
    total = len(store.pending_tasks(oracle_hash))
    done = 0
    if progress:
        progress(0, total)
    while True:
        todo = store.pending_tasks(oracle_hash)
        if not todo:
            break
        fresh = [(tid, at) for tid, at in todo if not claim_is_live(inbox, tid)]
        futures = [
            engine.submit("cpu", label_many, spec, chunk, str(inbox), str(scratch), timeout_s)
            for chunk in _chunks(fresh, chunk_size)
        ]
        waiting_on_claims = len(fresh) < len(todo)
        while futures or waiting_on_claims:
            time.sleep(poll_s)
            n = ingest_inbox(store, inbox, max_attempts, report)
            if n:
                done += n
                if progress:
                    progress(min(done, total), total)
            still = []
            for fut in futures:
                if fut.done():
                    fut.result()  # surfaces engine errors (not oracle failures: those are data)
                else:
                    still.append(fut)
            futures = still
            if waiting_on_claims and not futures:
                todo_now = store.pending_tasks(oracle_hash)
                waiting_on_claims = any(
                    claim_is_live(inbox, tid) and not result_path(inbox, tid).exists() for tid, _ in todo_now
                )
        n = ingest_inbox(store, inbox, max_attempts, report)
        done += n
        if progress and n:
            progress(min(done, total), total)
    return report


class StreamingLabeller:
    """Label pending frames while something else runs (a generation's sampling): call
    :meth:`step` as often as convenient; it stores finished results and sends fresh pending
    frames to the ``cpu`` executor. Frames arrive one at a time, so chunks form by themselves:
    whatever is pending goes out when nothing is in flight, and while something is, only full
    chunks of ``chunk_size`` go. Every guarantee of :func:`label_pending` holds (a result is in
    the inbox before its task is reported done; frames in flight, or claimed by a live worker of
    an earlier run, are never sent twice), and :func:`label_pending` takes over whatever is left."""

    def __init__(
        self,
        store: DatasetStore,
        oracle: Oracle,
        engine: Engine,
        workdir: str | Path,
        *,
        chunk_size: int = 8,
        timeout_s: float | None = 3600.0,
        max_attempts: int = 3,
    ) -> None:
        self.store, self.engine = store, engine
        self.inbox = Path(workdir) / "inbox"
        self.scratch = Path(workdir) / "scratch"
        self.chunk_size, self.timeout_s, self.max_attempts = chunk_size, timeout_s, max_attempts
        self.oracle_hash = oracle.settings_hash()
        self.spec = oracle.spec()
        self.report = LabelingReport()
        self.in_flight: list[tuple[object, set[str]]] = []  # (future, its task ids)

    def _reap(self) -> None:
        still = []
        for fut, ids in self.in_flight:
            if fut.done():
                fut.result()  # surfaces engine errors (not oracle failures: those are data)
            else:
                still.append((fut, ids))
        self.in_flight = still
        # after reaping: a finished task's result was in the inbox before its future was done
        ingest_inbox(self.store, self.inbox, self.max_attempts, self.report)

    def step(self, flush: bool = False) -> None:
        """Store what has finished; send what is pending and neither in flight nor claimed (while
        something is in flight, in full chunks only, unless ``flush``)."""
        self._reap()
        busy = set().union(*(ids for _, ids in self.in_flight))
        fresh = [
            (tid, at)
            for tid, at in self.store.pending_tasks(self.oracle_hash)
            if tid not in busy and not claim_is_live(self.inbox, tid)
        ]
        if self.in_flight and not flush:
            fresh = fresh[: len(fresh) - len(fresh) % self.chunk_size]  # full chunks only
        for chunk in _chunks(fresh, self.chunk_size):
            fut = self.engine.submit(
                "cpu", label_many, self.spec, chunk, str(self.inbox), str(self.scratch), self.timeout_s
            )
            self.in_flight.append((fut, {tid for tid, _ in chunk}))

    def finish(self, poll_s: float = 0.5) -> LabelingReport:
        """Send what is pending (once: retries of failures are :func:`label_pending`'s), wait for
        the calculations in flight and store them."""
        self.step(flush=True)
        while self.in_flight:
            time.sleep(poll_s)
            self._reap()
        self._reap()
        return self.report
