"""An oracle worker whose caller was killed: it finishes the calculation in hand, stores it and
stops; between calculations it stops at once, with the oracle's own child processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from potforge.oracle import get_oracle
from potforge.oracle.runner import claim_is_live

FAULTY = "python:potforge.oracle.fake:FaultyEMT"

CALLER = """
import json, sys
from potforge.oracle.runner import label_many
from potforge.structures import crystal
spec, inbox, work, timeout_s = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
tasks = [("tA", crystal("fcc", 16.5).repeat(2)), ("tB", crystal("fcc", 16.6).repeat(2))]
label_many(spec, tasks, inbox, work, timeout_s=timeout_s)
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan killed here may wait a while for init to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in "ZX"


def _wait(condition, timeout_s: float = 30.0) -> bool:
    end = time.time() + timeout_s
    while time.time() < end:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _kill_caller_mid_calculation(tmp_path: Path, settings: dict, timeout_s: float) -> tuple[Path, int]:
    """Start label_many in a process, SIGKILL it while its worker computes task tA; return the
    inbox and the worker's pid."""
    inbox = tmp_path / "inbox"
    spec = get_oracle(FAULTY, settings).spec()
    args = [json.dumps(spec), str(inbox), str(tmp_path / "work"), str(timeout_s)]
    caller = subprocess.Popen([sys.executable, "-c", CALLER, *args])
    claim = inbox / "tA.claim"
    assert _wait(lambda: claim.exists() and claim.read_text()), "the worker never claimed its task"
    worker = json.loads(claim.read_text())["worker"]
    caller.send_signal(signal.SIGKILL)
    caller.wait()
    return inbox, worker


def test_an_orphan_finishes_and_stores_its_calculation_then_stops(tmp_path):
    counter = tmp_path / "calls.txt"
    settings = {"mode": "ok", "delay_s": 3.0, "counter_file": str(counter)}
    inbox, worker = _kill_caller_mid_calculation(tmp_path, settings, timeout_s=60)
    # while it computes alone its claim stays live, so a new run waits instead of repeating it
    assert _running(worker) and claim_is_live(inbox, "tA", stale_s=60)
    assert _wait(lambda: not _running(worker)), "the orphan did not stop"
    assert json.loads((inbox / "tA.json").read_text())["status"] == "ok"
    assert counter.read_text().split() and len(counter.read_text().split()) == 1
    assert not (inbox / "tA.claim").exists()
    assert not (inbox / "tB.json").exists() and not (inbox / "tB.claim").exists()  # it took no new task


def test_an_orphan_enforces_the_timeout_itself(tmp_path):
    inbox, worker = _kill_caller_mid_calculation(tmp_path, {"mode": "hang"}, timeout_s=2)
    assert _wait(lambda: not _running(worker), timeout_s=20), "the hung orphan was not stopped"
    result = json.loads((inbox / "tA.json").read_text())
    assert result["status"] == "failed" and result["kind"] == "timeout"
    assert not claim_is_live(inbox, "tA", stale_s=60)


BETWEEN_TASKS = """
import os, signal, subprocess
from potforge.oracle import worker
signal.signal(signal.SIGTERM, worker._on_parent_death)
code = subprocess.Popen(["sleep", "60"])  # stands for a DFT code the oracle started
print(code.pid, flush=True)
os.kill(os.getpid(), signal.SIGTERM)
print("went on after the parent died", flush=True)
"""


def test_between_calculations_an_orphan_stops_at_once_with_its_children():
    # the worker is a session leader, as the runner starts it
    done = subprocess.run(
        [sys.executable, "-c", BETWEEN_TASKS], capture_output=True, text=True, start_new_session=True, timeout=30
    )
    (code_pid,) = done.stdout.split()
    assert done.returncode == -signal.SIGKILL
    assert _wait(lambda: not _running(int(code_pid)), timeout_s=5)


def test_a_new_run_spares_the_killed_runs_oracle_workers(tmp_path):
    # a re-run kills the engine processes the killed run left behind, but not an oracle worker
    # finishing its calculation: killing it would throw that calculation away
    import psutil

    from potforge.engine import PIDS_FILE, _kill_stale_processes

    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    parsl_worker = subprocess.Popen(sleeper)
    oracle_worker = subprocess.Popen([*sleeper, "potforge.oracle.worker"])
    try:
        procs = [psutil.Process(p.pid) for p in (parsl_worker, oracle_worker)]
        (tmp_path / PIDS_FILE).write_text(json.dumps({str(p.pid): p.create_time() for p in procs}))
        assert _kill_stale_processes(tmp_path) == 1
        assert parsl_worker.wait(timeout=10) == -signal.SIGKILL
        assert oracle_worker.poll() is None
    finally:
        oracle_worker.kill()
        oracle_worker.wait()


SESSION_WORKER = """
import subprocess, sys, time
code = subprocess.Popen(["sleep", "60"])  # the DFT code this oracle worker runs (pw.x under mpirun)
print(code.pid, flush=True)
time.sleep(60)
"""


def test_a_new_run_spares_the_code_an_oracle_worker_runs(tmp_path):
    """The DFT code an orphaned oracle worker started (its child, in the worker's session) is
    spared with the worker: killing it would record a crash and compute the label again."""
    import psutil

    from potforge.engine import PIDS_FILE, _kill_stale_processes

    worker = subprocess.Popen([sys.executable, "-c", SESSION_WORKER, "potforge.oracle.worker"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        code = psutil.Process(int(worker.stdout.readline()))
        # the killed run recorded both (children(recursive=True) sees the grandchild)
        record = {str(p.pid): p.create_time() for p in (psutil.Process(worker.pid), code)}
        (tmp_path / PIDS_FILE).write_text(json.dumps(record))
        assert _kill_stale_processes(tmp_path) == 0
        assert worker.poll() is None and code.is_running() and code.status() != psutil.STATUS_ZOMBIE
    finally:
        worker.kill()
        worker.wait()


def test_leftovers_the_record_missed_are_found_by_their_run_directory(tmp_path):
    """A Parsl worker that started between two ticks of the process recorder is in no record:
    it is found because its command line names the run directory."""
    from potforge.engine import _kill_stale_processes

    run_dir = tmp_path / "parsl"
    run_dir.mkdir()
    leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", f"--logdir={run_dir}/000/cpu"],
                                start_new_session=True)  # fmt: skip
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        time.sleep(0.2)
        assert _kill_stale_processes(run_dir) == 1
        assert leftover.wait(timeout=10) == -signal.SIGKILL
        assert bystander.poll() is None
    finally:
        for p in (leftover, bystander):
            p.kill()
            p.wait()


IDLE_CALLER = """
import sys, time
from potforge.oracle import get_oracle
from potforge.oracle.runner import label_many
from potforge.structures import crystal
spec = get_oracle("emt").spec()
label_many(spec, [("t0", crystal("fcc", 16.5).repeat(2))], sys.argv[1], sys.argv[2])
print("labelled", flush=True)
time.sleep(120)
"""


def test_a_kept_idle_oracle_process_stops_with_its_caller(tmp_path):
    import psutil

    from potforge.oracle.runner import WORKER_MODULE

    caller = subprocess.Popen(
        [sys.executable, "-c", IDLE_CALLER, str(tmp_path / "inbox"), str(tmp_path / "work")], stdout=subprocess.PIPE
    )
    assert caller.stdout.readline().strip() == b"labelled"
    kept = [p.pid for p in psutil.Process(caller.pid).children() if WORKER_MODULE in " ".join(p.cmdline())]
    assert len(kept) == 1 and _running(kept[0])  # kept for the caller's next call
    caller.send_signal(signal.SIGKILL)
    caller.wait()
    assert _wait(lambda: not _running(kept[0]), timeout_s=10), "an idle oracle process outlived its caller"
    assert json.loads((tmp_path / "inbox" / "t0.json").read_text())["status"] == "ok"
