"""Isolated, crash-proof execution of oracle calculations.

``label_many`` runs a list of tasks through one oracle in a child process
(``python -m potforge.oracle.worker``), one calculation at a time; the child is kept for the
thread's next call (see :class:`_WorkerProcess`). The child writes each result
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
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ase import Atoms

from potforge.durable import write_json
from potforge.oracle.base import OracleCrashed

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


def child_environment() -> dict[str, str]:
    """The environment of an oracle child: this one, with ``OMP_NUM_THREADS`` defaulting to
    ``$POTFORGE_ORACLE_THREADS`` (1), so that a code does not take every core of a shared node."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", env.get("POTFORGE_ORACLE_THREADS", "1"))
    return env


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


#: ``0`` starts a fresh oracle process for every labelling task instead of keeping one per thread.
REUSE_ENV = "POTFORGE_ORACLE_REUSE"


class _WorkerProcess:
    """A ``python -m potforge.oracle.worker --serve`` child: it takes job files on stdin, one per
    line, and answers on stdout. Kept between calls of :func:`label_many` in the same thread and
    environment, so that its start-up (numpy, ASE, pydantic, the oracle's module: 0.4-0.6 CPU-s)
    is paid once per worker, not once per labelling task. Isolation is unchanged: it is a session
    leader, dies with its process group on a timeout, and a crash costs only the calculation in
    hand (the next call starts a fresh child)."""

    def __init__(self, key: tuple) -> None:
        self.key = key
        # stderr to a file, not a pipe: a chatty code can never fill a pipe nobody reads and block
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            start_new_session=True,
            preexec_fn=set_parent_death_signal if sys.platform.startswith("linux") else None,
            env=child_environment(),
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def submit(self, job_file: Path) -> bool:
        """Hand the child a job; False if it is gone."""
        try:
            self.proc.stdin.write(f"{job_file}\n".encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            return False
        return True

    def stderr_tail(self) -> str:
        try:
            self.stderr.seek(0, os.SEEK_END)
            size = self.stderr.tell()
            self.stderr.seek(max(0, size - 4096))
            lines = self.stderr.read().decode(errors="replace").strip().splitlines()
        except (OSError, ValueError):
            return ""
        return lines[-1] if lines else ""

    def kill(self) -> None:
        """Stop the child and everything in its session (the oracle's own processes) now."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self._close()

    def retire(self) -> None:
        """Let an idle child go: at the end of its input it exits by itself."""
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.kill()
            return
        self._close()

    def _close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout, self.stderr):
            try:
                stream.close()
            except (OSError, ValueError):
                pass


#: this thread's idle worker process, if any. Nothing retires it at exit: when this process ends,
#: the child's stdin closes and PR_SET_PDEATHSIG fires, and either way an idle child exits.
_kept = threading.local()


def _worker_process() -> _WorkerProcess:
    """This thread's kept worker process if it is alive and was started with today's interpreter,
    directory and environment (a changed environment must reach the oracle); else a fresh one."""
    key = (sys.executable, os.getcwd(), tuple(sorted(os.environ.items())))
    kept: _WorkerProcess | None = getattr(_kept, "worker", None)
    _kept.worker = None
    if kept is not None:
        if kept.key == key and kept.alive():
            return kept
        kept.retire() if kept.alive() else kept.kill()
    return _WorkerProcess(key)


def _keep(worker: _WorkerProcess) -> None:
    if os.environ.get(REUSE_ENV, "1") == "0":
        worker.retire()
    else:
        _kept.worker = worker


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
        worker = _worker_process()
        if not worker.submit(job_file):  # a kept child that died since: start afresh once
            worker.kill()
            worker = _worker_process()
            worker.submit(job_file)
        proc = worker.proc
        current: str | None = None
        started = time.time()
        buffer = b""
        finished = heard = False
        try:
            while not finished:
                ready, _, _ = select.select([proc.stdout], [], [], HEARTBEAT_S)
                if current is not None:
                    # heartbeat, besides the worker's own: a calculation holding the GIL can starve that
                    try:
                        os.utime(claim_path(inbox, current))
                    except OSError:
                        pass
                    if timeout_s is not None and time.time() - started > timeout_s:
                        worker.kill()
                        fail(current, started, "timeout", f"killed after {timeout_s:g} s")
                        break
                if not ready:
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:  # the child exited
                    proc.wait()
                    if not heard:  # it never got going (an interpreter or import problem): do not loop
                        message = f"the oracle worker process exited (code {proc.returncode}) before any task"
                        raise OracleCrashed(f"{message}: {worker.stderr_tail()}".rstrip(": "))
                    if current is not None and not result_path(inbox, current).exists():
                        tail = worker.stderr_tail()
                        fail(
                            current,
                            started,
                            "crashed",
                            f"oracle process died (exit code {proc.returncode}) {tail}".strip(),
                        )
                    break
                heard = True
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    word, _, tid = line.decode(errors="replace").partition(" ")
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
                    elif word == "DONE":
                        finished = True
        finally:
            if finished and worker.alive():
                _keep(worker)
            else:
                worker.kill()
            job_file.unlink(missing_ok=True)
        remaining = [(tid, at) for tid, at in remaining if tid not in done_ids and not is_done(inbox, tid)]
    return counts
