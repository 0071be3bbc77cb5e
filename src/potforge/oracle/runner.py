"""Isolated, crash-proof execution of oracle calculations.

``label_many`` runs a list of tasks through one oracle in a child process
(``python -m potforge.oracle.worker``), one calculation at a time. The child writes each result
into the *inbox* directory itself, atomically, the moment it has it; the caller's database
ingests the inbox later. So a result, once computed, survives any crash of the caller.

Timeouts really stop a hung code: the child is a session leader, and a calculation that runs
past ``timeout_s`` gets its whole process group SIGKILLed; a timeout failure is recorded for it
and a fresh child continues with the remaining tasks. A child that dies (segfault, os._exit,
out of memory) likewise costs only the calculation it was running, recorded as ``crashed``.

Claims: before computing a task the child creates ``<inbox>/<task>.claim`` (exclusively) and
both it and the parent refresh its mtime while the work goes on (a child whose parent was
killed finishes its calculation alone, see :mod:`potforge.oracle.worker`). Whoever schedules
work skips tasks with a *live* claim (see :func:`claim_is_live`) instead of computing them a
second time; a claim left by a dead process goes stale and is ignored.
"""

from __future__ import annotations

import json
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ase import Atoms

from potforge.durable import write_json

#: A claim whose mtime is older than this (seconds) belongs to a dead worker.
CLAIM_STALE_S = float(os.environ.get("POTFORGE_CLAIM_STALE_S", "60"))
#: The module each oracle calculation runs in (``python -m WORKER_MODULE JOB``).
WORKER_MODULE = "potforge.oracle.worker"
#: How often (seconds) the claim of a running calculation is refreshed.
HEARTBEAT_S = 2.0


def result_path(inbox: Path, task_id: str) -> Path:
    return inbox / f"{task_id}.json"


def done_marker(inbox: Path, task_id: str) -> Path:
    """Left behind when the database has taken a result, so no worker redoes the task."""
    return inbox / "done" / task_id


def is_done(inbox: Path, task_id: str) -> bool:
    return result_path(inbox, task_id).exists() or done_marker(inbox, task_id).exists()


def claim_path(inbox: Path, task_id: str) -> Path:
    return inbox / f"{task_id}.claim"


def claim_is_live(inbox: Path, task_id: str, stale_s: float | None = None) -> bool:
    """Whether another process is computing ``task_id`` right now."""
    path = claim_path(inbox, task_id)
    try:
        info = json.loads(path.read_text() or "{}")
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        return False
    if info.get("host") == socket.gethostname() and not (_alive(info.get("owner")) or _alive(info.get("worker"))):
        return False  # the process that claimed it and its owner are both gone: stale
    return age < (CLAIM_STALE_S if stale_s is None else stale_s)


def _alive(pid: Any) -> bool:
    """Whether a process runs (a zombie does not: an orphan may wait long for init to reap it)."""
    import psutil

    try:
        return psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, TypeError, ValueError):
        return False


def failure_record(task_id: str, kind: str, message: str, oracle_hash: str, walltime_s: float) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "status": "failed",
        "kind": kind,
        "message": message,
        "oracle_hash": oracle_hash,
        "walltime_s": walltime_s,
        "host": socket.gethostname(),
    }


def set_parent_death_signal() -> None:
    """In a child (``preexec_fn``): get SIGTERM when the parent dies."""
    # the child learns of its parent's death; SIGTERM, not SIGKILL: it finishes the calculation
    # in hand and stores it, then stops (see worker.py)
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _spawn(job_file: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", env.get("POTFORGE_ORACLE_THREADS", "1"))
    return subprocess.Popen(
        [sys.executable, "-m", WORKER_MODULE, str(job_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=set_parent_death_signal if sys.platform.startswith("linux") else None,
        env=env,
    )


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def label_many(
    oracle_spec: dict[str, Any],
    tasks: list[tuple[str, Atoms]],
    inbox: str | Path,
    workdir: str | Path,
    timeout_s: float | None = None,
    on_result: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Label ``tasks`` = [(task_id, atoms), ...] with the oracle ``oracle_spec``; every result
    (or typed failure) lands in ``inbox`` as ``<task_id>.json``. Tasks whose result already
    exists, or that another live process has claimed, are skipped. Returns counts by outcome."""
    from potforge.oracle import oracle_from_spec

    inbox, workdir = Path(inbox), Path(workdir)
    inbox.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    oracle_hash = oracle_from_spec(oracle_spec).settings_hash()
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    done_ids: set[str] = set()

    def fail(task: str, started: float, kind: str, message: str) -> None:
        """Record a running task's failure (its process cannot: it is dead or being killed)."""
        write_json(result_path(inbox, task), failure_record(task, kind, message, oracle_hash, time.time() - started))
        claim_path(inbox, task).unlink(missing_ok=True)
        done_ids.add(task)
        counts["failed"] += 1
        if on_result:
            on_result(task)

    remaining = [(tid, at) for tid, at in tasks if not is_done(inbox, tid)]
    counts["skipped"] = len(tasks) - len(remaining)
    while remaining:
        with tempfile.NamedTemporaryFile(dir=workdir, suffix=".job", delete=False) as f:
            job = {
                "spec": oracle_spec,
                "tasks": remaining,
                "inbox": str(inbox),
                "workdir": str(workdir),
                "timeout_s": timeout_s,
            }
            pickle.dump(job, f)
            job_file = Path(f.name)
        proc = _spawn(job_file)
        current: str | None = None
        started = time.time()
        buffer = b""
        try:
            while True:
                ready, _, _ = select.select([proc.stdout], [], [], HEARTBEAT_S)
                if current is not None:
                    # heartbeat, besides the worker's own: a calculation holding the GIL can starve that
                    try:
                        os.utime(claim_path(inbox, current))
                    except OSError:
                        pass
                    if timeout_s is not None and time.time() - started > timeout_s:
                        _kill(proc)
                        fail(current, started, "timeout", f"killed after {timeout_s:g} s")
                        break
                if not ready:
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:  # the child exited
                    proc.wait()
                    if current is not None and not result_path(inbox, current).exists():
                        err = proc.stderr.read().decode(errors="replace").strip().splitlines()
                        tail = err[-1] if err else ""
                        fail(
                            current,
                            started,
                            "crashed",
                            f"oracle process died (exit code {proc.returncode}) {tail}".strip(),
                        )
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    word, _, tid = line.decode().partition(" ")
                    if word == "START":
                        current, started = tid, time.time()
                    elif word in ("OK", "FAILED", "SKIP"):
                        done_ids.add(tid)
                        current = None
                        if word != "SKIP":
                            counts["ok" if word == "OK" else "failed"] += 1
                            if on_result:
                                on_result(tid)
                        else:
                            counts["skipped"] += 1
        finally:
            if proc.poll() is None:
                _kill(proc)
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
            job_file.unlink(missing_ok=True)
        remaining = [(tid, at) for tid, at in remaining if tid not in done_ids and not is_done(inbox, tid)]
    return counts
