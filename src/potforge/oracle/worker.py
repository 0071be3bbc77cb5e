"""Child process of :func:`potforge.oracle.runner.label_many`: ``python -m potforge.oracle.worker
--serve`` labels the job file named on each line of stdin, so that one process (and its imports)
serves many labelling tasks.

Labels a job's tasks one by one. For each: claim it (exclusive file create), announce
``START <id>`` on stdout, compute, write the result atomically into the inbox, release the
claim, announce ``OK``/``FAILED <id>``. A task already done or claimed by a live process is
announced as ``SKIP``. Only failures the oracle can classify are written here; timeouts and
crashes of this process are recorded by the parent.

When the parent dies (``potforge run`` killed) this process gets SIGTERM (``PR_SET_PDEATHSIG``).
Between tasks it stops at once, with its whole process group. With a task in hand it finishes
that one calculation, stores the result and then stops: a DFT calculation that may have run for
hours is not thrown away, and a result is never computed twice. Meanwhile its claim stays live
(this process refreshes it, and :func:`~potforge.oracle.runner.claim_is_live` sees the worker
alive), so a new run waits for the result instead of repeating the calculation. An orphan
enforces the job's timeout itself, since nobody else is left to.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any


def _claim(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"host": socket.gethostname(), "owner": os.getppid(), "worker": os.getpid(), "t": time.time()}, f)
    return True


class _Task:
    """The calculation in hand: what the heartbeat refreshes and an orphan's watchdog gives up on."""

    def __init__(self) -> None:
        self.busy = False  # between picking a task and storing its result
        self.parent_died = False
        self.task_id: str | None = None
        self.claim: Path | None = None
        self.started = 0.0
        self.store_lock = threading.Lock()  # the result is written once: by the task or the watchdog
        self.job: dict[str, Any] = {}
        self.oracle_hash = ""


_task = _Task()


def _stop(code: int) -> None:
    """Exit, taking the oracle's own child processes (pw.x, mpirun) along: the runner starts each
    worker in its own session, so its process group is exactly the calculation."""
    if os.getpgid(0) == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(code)


def _say(word: str, task_id: str) -> None:
    try:
        print(f"{word} {task_id}", flush=True)
    except OSError:  # nobody reads any more: the parent died
        pass


def _on_parent_death(signum: int, frame: object) -> None:
    first = not _task.parent_died
    _task.parent_died = True
    if not _task.busy:
        _stop(128 + signum)
    timeout_s = _task.job.get("timeout_s")
    if first and timeout_s is not None and _task.task_id is not None:
        remaining = max(0.0, timeout_s - (time.time() - _task.started))
        threading.Timer(remaining, _give_up, args=(_task.task_id, timeout_s)).start()


def _give_up(task_id: str, timeout_s: float) -> None:
    """An orphan's calculation ran past the timeout: record it as such and stop."""
    from potforge.durable import write_json
    from potforge.oracle.runner import failure_record, result_path

    with _task.store_lock:
        if _task.task_id == task_id:
            inbox = Path(_task.job["inbox"])
            message = f"killed after {timeout_s:g} s (its campaign had stopped)"
            record = failure_record(task_id, "timeout", message, _task.oracle_hash, time.time() - _task.started)
            write_json(result_path(inbox, task_id), record)
            if _task.claim is not None:
                _task.claim.unlink(missing_ok=True)
        _stop(1)


def _heartbeat() -> None:
    """Keep the claim of the calculation in hand live, whether or not the parent still does."""
    from potforge.oracle.runner import HEARTBEAT_S

    while True:
        time.sleep(HEARTBEAT_S)
        claim = _task.claim
        if claim is not None:
            try:
                os.utime(claim)
            except OSError:
                pass


def _label_one(oracle: Any, task_id: str, atoms: Any) -> None:
    from potforge.durable import write_json
    from potforge.oracle import OracleFailure
    from potforge.oracle.runner import (
        claim_is_live,
        claim_path,
        failure_record,
        is_done,
        result_path,
    )

    inbox, workdir = Path(_task.job["inbox"]), Path(_task.job["workdir"])
    result, claim = result_path(inbox, task_id), claim_path(inbox, task_id)
    if is_done(inbox, task_id):
        return _say("SKIP", task_id)
    if not _claim(claim):
        if claim_is_live(inbox, task_id):
            return _say("SKIP", task_id)
        claim.unlink(missing_ok=True)  # stale claim of a dead worker
        if not _claim(claim):
            return _say("SKIP", task_id)
    if is_done(inbox, task_id):  # finished by another worker between our check and our claim
        claim.unlink(missing_ok=True)
        return _say("SKIP", task_id)
    _task.task_id, _task.claim, _task.started = task_id, claim, time.time()
    if _task.parent_died:  # before this calculation began: leave it to the next run
        _task.task_id = _task.claim = None
        claim.unlink(missing_ok=True)
        return None
    _say("START", task_id)
    try:
        label = oracle.compute(atoms, workdir / task_id)
        payload = {
            "task_id": task_id,
            "status": "ok",
            "oracle_hash": _task.oracle_hash,
            "energy": label.energy,
            "forces": label.forces.tolist(),
            "stress": None if label.stress is None else label.stress.tolist(),
            "walltime_s": time.time() - _task.started,
            "host": socket.gethostname(),
        }
        word = "OK"
    except OracleFailure as exc:
        payload = failure_record(task_id, exc.kind, str(exc), _task.oracle_hash, time.time() - _task.started)
        word = "FAILED"
    with _task.store_lock:
        write_json(result, payload)
        claim.unlink(missing_ok=True)
        _task.task_id = _task.claim = None
    _say(word, task_id)


def run_job(job_file: str) -> None:
    """Label every task of one job file (written by the runner)."""
    from potforge.oracle import oracle_from_spec

    with open(job_file, "rb") as f:
        _task.job = pickle.load(f)
    oracle = oracle_from_spec(_task.job["spec"])
    _task.oracle_hash = oracle.settings_hash()
    for task_id, atoms in _task.job["tasks"]:
        _task.busy = True
        try:
            _label_one(oracle, task_id, atoms)
        finally:
            _task.busy = False
        if _task.parent_died:
            _stop(0)


def main() -> None:
    """Label the job file named on each line of stdin, answering ``DONE -`` after each, until
    stdin ends (the runner keeps this process for its next call)."""
    signal.signal(signal.SIGTERM, _on_parent_death)
    threading.Thread(target=_heartbeat, daemon=True).start()
    for line in sys.stdin:
        if line.strip():
            run_job(line.strip())
            _say("DONE", "-")


if __name__ == "__main__":
    main()
