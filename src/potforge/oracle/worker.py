"""Child process of :func:`potforge.oracle.runner.label_many`: ``python -m potforge.oracle.worker JOB``.

Labels the job's tasks one by one. For each: claim it (exclusive file create), announce
``START <id>`` on stdout, compute, write the result atomically into the inbox, release the
claim, announce ``OK``/``FAILED <id>``. A task already done or claimed by a live process is
announced as ``SKIP``. Only failures the oracle can classify are written here; timeouts and
crashes of this process are recorded by the parent.

When the parent dies this process gets SIGTERM (``PR_SET_PDEATHSIG``). It then exits at once,
unless it is storing a finished result: that is completed first, so a result that was computed
is never lost and never computed again.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import sys
import time
from pathlib import Path


def _claim(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"host": socket.gethostname(), "owner": os.getppid(), "worker": os.getpid(), "t": time.time()}, f)
    return True


_storing = False
_parent_died = False


def _on_parent_death(signum: int, frame: object) -> None:
    global _parent_died
    if _storing:
        _parent_died = True  # exit right after the result is on disk
        return
    os._exit(128 + signum)


def main(job_file: str) -> None:
    global _storing
    from potforge.oracle import OracleFailure, oracle_from_spec
    from potforge.oracle.runner import (
        claim_is_live,
        claim_path,
        failure_record,
        is_done,
        result_path,
        write_json_atomic,
    )

    signal.signal(signal.SIGTERM, _on_parent_death)
    with open(job_file, "rb") as f:
        job = pickle.load(f)
    inbox, workdir = Path(job["inbox"]), Path(job["workdir"])
    oracle = oracle_from_spec(job["spec"])
    oracle_hash = oracle.settings_hash()
    out = sys.stdout
    for task_id, atoms in job["tasks"]:
        result, claim = result_path(inbox, task_id), claim_path(inbox, task_id)
        if is_done(inbox, task_id):
            print(f"SKIP {task_id}", file=out, flush=True)
            continue
        if not _claim(claim):
            if claim_is_live(inbox, task_id):
                print(f"SKIP {task_id}", file=out, flush=True)
                continue
            claim.unlink(missing_ok=True)  # stale claim of a dead worker
            if not _claim(claim):
                print(f"SKIP {task_id}", file=out, flush=True)
                continue
        if is_done(inbox, task_id):  # finished by another worker between our check and our claim
            claim.unlink(missing_ok=True)
            print(f"SKIP {task_id}", file=out, flush=True)
            continue
        print(f"START {task_id}", file=out, flush=True)
        t0 = time.time()
        try:
            label = oracle.compute(atoms, workdir / task_id)
            _storing = True
            payload = {
                "task_id": task_id,
                "status": "ok",
                "oracle_hash": oracle_hash,
                "energy": label.energy,
                "forces": label.forces.tolist(),
                "stress": None if label.stress is None else label.stress.tolist(),
                "walltime_s": time.time() - t0,
                "host": socket.gethostname(),
            }
            word = "OK"
        except OracleFailure as exc:
            _storing = True
            payload = failure_record(task_id, exc.kind, str(exc), oracle_hash, time.time() - t0)
            word = "FAILED"
        write_json_atomic(result, payload)
        claim.unlink(missing_ok=True)
        _storing = False
        if _parent_died:
            os._exit(0)
        print(f"{word} {task_id}", file=out, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
