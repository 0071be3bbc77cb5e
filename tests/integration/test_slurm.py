"""A campaign on a real Slurm cluster (.ci/slurm.sh: one node, this machine) through Parsl's
Slurm provider, killed while its jobs are queued and while they compute, then resumed: no oracle
call lost, none killed half-way and repeated. The cheap tests above it need no Slurm."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from potforge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CI_CONFIG = ROOT / "examples" / "slurm-ci.yaml"
FAULTY = "python:potforge.oracle.fake:FaultyEMT"


# --- without Slurm -------------------------------------------------------------------------------


def test_the_ci_config_builds_slurm_blocks_that_share_one_node(tmp_path):
    from potforge.config import load_config
    from potforge.engine import _parsl_config
    from potforge.slurm import CampaignSlurmProvider, PoolLauncher, job_prefix

    cfg = load_config(CI_CONFIG)
    parsl_config = _parsl_config(cfg.engine, tmp_path / "my campaign" / "parsl")
    assert {ex.label for ex in parsl_config.executors} == {"cpu", "gpu"}
    for ex in parsl_config.executors:
        assert isinstance(ex.provider, CampaignSlurmProvider) and isinstance(ex.provider.launcher, PoolLauncher)
        assert "--exclusive" not in ex.provider.scheduler_options  # both executors' blocks fit on one node
        assert ex.address == "127.0.0.1" and (ex.heartbeat_period, ex.heartbeat_threshold) == (2, 10)
        assert ex.provider.prefix == job_prefix(tmp_path / "my campaign" / "parsl")
    prefix = job_prefix(tmp_path / "my campaign" / "parsl")
    assert prefix.startswith("potforge.my_campaign.") and prefix != job_prefix(tmp_path / "other" / "my campaign")
    # the pool runs under the wrapper that waits for the job's oracle workers, in the pool's job step
    script = parsl_config.executors[0].provider.launcher("process_worker_pool.py --x", 1, 1)
    assert "python3 -m potforge.slurm run-pool process_worker_pool.py --x" in script


@pytest.mark.parametrize(
    "provider,message",
    [
        ({"kind": "local", "partition": "gpu"}, r"cpu\.provider: partition is for kind: slurm only, not local"),
        ({"kind": "slurm", "init_blocks": 3, "max_blocks": 2}, r"init_blocks \(3\).*cannot exceed max_blocks \(2\)"),
        ({"kind": "slurm", "walltime": "90 minutes"}, r"cpu\.provider\.walltime"),
        ({"kind": "slurm", "mem_per_node": 64}, r"cpu\.provider\.mem_per_node: unknown field"),
    ],
)
def test_a_provider_that_cannot_work_is_one_line_naming_the_field(provider, message):
    from potforge.config import parse_config

    raw = yaml.safe_load(CI_CONFIG.read_text())
    raw["engine"]["executors"]["cpu"]["provider"] = provider
    with pytest.raises(ConfigError, match=message) as info:
        parse_config(raw)
    assert "\n" not in str(info.value)


def test_a_heartbeat_threshold_below_the_period_is_refused():
    from potforge.config import parse_config

    raw = yaml.safe_load(CI_CONFIG.read_text())
    raw["engine"]["executors"]["gpu"].update(heartbeat_period_s=30, heartbeat_threshold_s=20)
    with pytest.raises(ConfigError, match=r"gpu: heartbeat_threshold_s \(20\) must exceed heartbeat_period_s"):
        parse_config(raw)


ORACLE_WORKER = """
import sys, time
time.sleep(float(sys.argv[1]))
open(sys.argv[2], "w").write("stored")
"""

POOL = """
import os, subprocess, sys
# stands for a Parsl worker's oracle worker: a session of its own, named as the runner names it
for job, seconds, path in ((os.environ["SLURM_JOB_ID"], "2", sys.argv[1]), ("another-job", "6", sys.argv[2])):
    env = dict(os.environ, SLURM_JOB_ID=job)
    subprocess.Popen([sys.executable, "-c", sys.argv[3], seconds, path, "potforge.oracle.worker"], env=env,
                     start_new_session=True)
sys.exit(3)  # the pool stops at once, as when its interchange is gone
"""


def test_a_block_ends_only_after_its_oracle_workers_stored_their_calculation(tmp_path, monkeypatch):
    """Slurm kills every process of a job when the job ends: the pool's wrapper holds the job
    until this job's oracle workers are done (and only this job's), and keeps the pool's exit code."""
    from potforge.slurm import run_pool

    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    ours, theirs = tmp_path / "ours.txt", tmp_path / "theirs.txt"
    t0 = time.time()
    code = run_pool([sys.executable, "-c", POOL, str(ours), str(theirs), ORACLE_WORKER])
    waited_s = time.time() - t0
    assert code == 3
    assert ours.read_text() == "stored", "the job ended before its oracle worker stored its result"
    assert 2.0 <= waited_s < 5.0, "did not wait for this job's oracle worker, or waited for another job's"
    assert not theirs.exists()


def test_an_interrupted_run_leaves_its_slurm_jobs_to_finish(tmp_path):
    """Ctrl-C, SIGTERM or an error: Parsl's clean-up must not scancel blocks that may hold
    calculations; a run that finished cancels them."""
    from potforge.engine import ExecutorConfig, ProviderConfig
    from potforge.slurm import campaign_slurm_provider

    provider = campaign_slurm_provider(ProviderConfig(kind="slurm", exclusive=False), tmp_path / "parsl")
    provider.script_dir = str(tmp_path)
    calls: list[str] = []
    provider.execute_wait = lambda cmd, timeout=None: (calls.append(cmd), (0, "", ""))[1]
    provider.spare_jobs = True
    assert provider.cancel(["17", "18"]) == [False, False] and calls == []
    provider.spare_jobs = False
    provider.resources.update({j: {"status": None} for j in ("17", "18")})
    provider.cancel(["17", "18"])
    assert calls and calls[0].startswith("scancel") and "17 18" in calls[0]
    assert ExecutorConfig().heartbeat_threshold_s == 120  # Parsl's default unless configured


def test_the_submit_script_asks_slurm_for_what_the_config_says(tmp_path):
    from potforge.engine import ProviderConfig
    from potforge.slurm import campaign_slurm_provider, job_prefix

    config = ProviderConfig(kind="slurm", partition="debug", exclusive=False, cores_per_node=2, mem_per_node_GB=3,
                            walltime="00:20:00", scheduler_options="#SBATCH --ntasks-per-node=4")  # fmt: skip
    provider = campaign_slurm_provider(config, tmp_path / "c" / "parsl")
    provider.script_dir = str(tmp_path)
    submitted: list[str] = []
    provider.execute_wait = lambda cmd, timeout=None: (submitted.append(cmd), (0, "Submitted batch job 99", ""))[1]
    assert provider.submit("process_worker_pool.py --x", 1, "parsl.cpu.block-0") == "99"
    script = Path(submitted[0].split()[-1]).read_text()
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert f"#SBATCH --job-name={job_prefix(tmp_path / 'c' / 'parsl')}.parsl.cpu.block-0." in script
    assert "#SBATCH --exclusive" not in directives and "#SBATCH --partition=debug" in directives
    assert {"#SBATCH --mem=3g", "#SBATCH --cpus-per-task=2", "#SBATCH --time=20"} <= set(directives)
    # extra lines come after Parsl's own, so they win (sbatch takes the last of a repeated option)
    assert directives.index("#SBATCH --ntasks-per-node=4") > directives.index("#SBATCH --ntasks-per-node=1")
    assert "python3 -m potforge.slurm run-pool process_worker_pool.py --x" in script


def test_a_rerun_leaves_the_processes_of_slurm_jobs_to_slurm(tmp_path, monkeypatch):
    """Where this machine is also a compute node, the blocks of the killed run's Slurm jobs name
    the run directory too; the re-run's clean-up of local leftovers must not kill them (nor their
    slurmstepd): the block would never store its calculation, and Slurm would lose the job."""
    from potforge.engine import _kill_stale_processes

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    run_dir = tmp_path / "parsl"
    run_dir.mkdir()
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)", f"--logdir={run_dir}/001/cpu"]
    in_job = subprocess.Popen(sleeper, start_new_session=True, env=dict(os.environ, SLURM_JOB_ID="77"))
    local = subprocess.Popen(sleeper, start_new_session=True)
    try:
        time.sleep(0.2)
        assert _kill_stale_processes(run_dir) == 1
        assert local.wait(timeout=10) == -signal.SIGKILL
        assert in_job.poll() is None
    finally:
        for proc in (in_job, local):
            proc.kill()
            proc.wait()


# --- on a Slurm cluster --------------------------------------------------------------------------


def _slurm(*args: str, timeout_s: float = 30) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stderr.strip()}"
    return done.stdout


@pytest.fixture
def slurm_node() -> int:
    """CPUs of the cluster's one idle node; skips (fails on CI) where no controller answers."""
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%T %c"], capture_output=True, text=True, timeout=30)
        reason = done.stderr.strip() or f"sinfo exit code {done.returncode}"
        ok = done.returncode == 0 and done.stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        ok, reason = False, str(exc)
    if not ok:
        message = f"no Slurm controller reachable (sinfo: {reason}); run `bash .ci/slurm.sh` (needs root or sudo)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    state, cpus = done.stdout.split()[:2]
    if state not in ("idle", "mixed"):
        pytest.skip(f"the Slurm node is {state}, not idle")
    return int(cpus)


def _job_state(job_id: str) -> dict[str, str]:
    """JobState, StartTime, ... of a job, queued or finished (slurm.conf keeps finished jobs for
    MinJobAge: no accounting database needed)."""
    fields = {}
    for word in _slurm("scontrol", "show", "job", job_id).split():
        key, _, value = word.partition("=")
        fields.setdefault(key, value)
    return fields


def _wait_for(what: str, condition: Callable[[], Any], timeout_s: float = 180.0, poll_s: float = 0.3) -> Any:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _start(config: Path, directory: Path, log: Path) -> subprocess.Popen:
    # a session of its own: SIGKILL of its process group takes Parsl's interchange along, as a
    # killed login shell or a node failure would; the Slurm jobs live on in slurmd's care
    return subprocess.Popen(
        [sys.executable, "-m", "potforge", "run", str(config), "--dir", str(directory), "--no-validate"],
        stdout=subprocess.DEVNULL,
        stderr=log.open("a"),
        start_new_session=True,
        env=dict(os.environ, POTFORGE_CLAIM_STALE_S="20"),
    )


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture
def leftovers():
    """Runs and job-name prefixes a test started; whatever of them is left when it ends (a failed
    assertion) is killed or cancelled, so it cannot hold the node for the next test."""
    from potforge.slurm import campaign_jobs

    runs: list[subprocess.Popen] = []
    prefixes: list[str] = []
    yield runs, prefixes
    for proc in runs:
        if proc.poll() is None:
            _kill(proc)
    for prefix in prefixes:
        ids = [job.job_id for job in campaign_jobs(prefix)]
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True)


@pytest.mark.slow
def test_a_campaign_on_slurm_killed_while_queued_and_computing_loses_and_repeats_nothing(
    tmp_path, slurm_node, leftovers
):
    from potforge.campaign import CampaignState
    from potforge.data import DatasetStore
    from potforge.slurm import campaign_jobs, job_prefix

    started, finished = tmp_path / "started.txt", tmp_path / "finished.txt"
    raw = yaml.safe_load(CI_CONFIG.read_text())
    # a calculation takes 8 s, longer than a block outlives its dead interchange (5 s here), so the
    # calculation in flight at the kill is still running when its block's worker pool gives up
    settings = {"mode": "ok", "delay_s": 8.0, "counter_file": str(finished), "start_file": str(started)}
    raw["oracle"] = {"name": FAULTY, "settings": settings}
    for executor in raw["engine"]["executors"].values():
        executor.update(heartbeat_period_s=1, heartbeat_threshold_s=5)
    config, directory, log = tmp_path / "campaign.yaml", tmp_path / "run", tmp_path / "potforge-run.log"
    config.write_text(yaml.safe_dump(raw))
    prefix = job_prefix(directory / "parsl")
    runs, prefixes = leftovers
    prefixes.append(prefix)

    def jobs(state: str | None = None) -> list:
        return [job for job in campaign_jobs(prefix) if state is None or job.state == state]

    def start() -> subprocess.Popen:
        runs.append(_start(config, directory, log))
        return runs[-1]

    # 1. the node is busy, so the campaign's two blocks (cpu, gpu) queue; kill `potforge run` then
    out = _slurm("sbatch", "--parsable", "--job-name=potforge-test-blocker", f"--cpus-per-task={slurm_node}",
                 "--output=/dev/null", "--wrap=sleep 900")  # fmt: skip
    blocker = out.strip().split(";")[0]
    try:
        _wait_for("the blocker to run", lambda: _job_state(blocker)["JobState"] == "RUNNING")
        first = start()
        queued = _wait_for("two queued blocks", lambda: (found := jobs("PENDING")) and len(found) == 2 and found)
        _kill(first)

        # 2. the re-run cancels the killed run's queued blocks (they never ran) before it submits its own
        second = start()
        _wait_for("the stale queued blocks to be cancelled",
                  lambda: all(_job_state(j.job_id)["JobState"] == "CANCELLED" for j in queued))  # fmt: skip
        assert all(_job_state(j.job_id)["RunTime"] == "00:00:00" for j in queued), "a stale queued block ran"
    finally:
        subprocess.run(["scancel", blocker], capture_output=True)
    stale = {j.job_id for j in queued}

    # 3. kill it again the moment a calculation starts in a running block (two have finished)
    seen = [len(_lines(started))]

    def just_started() -> set[str]:
        begun, done = _lines(started), _lines(finished)
        fresh = len(begun) > seen[0]
        seen[0] = len(begun)
        return fresh and len(done) >= 2 and set(begun[-1:]) - set(done)

    computing = _wait_for("a calculation to start after two finished", just_started, timeout_s=300, poll_s=0.05)
    running = [j for j in jobs("RUNNING") if j.job_id not in stale]
    assert {j.name.split(".")[4] for j in running} == {"cpu", "gpu"}, running
    _kill(second)
    killed_at = time.time()

    # 4. the re-run leaves the running blocks alone: each stores the calculation in hand, then
    # stops by itself once its interchange is silent for heartbeat_threshold_s; the re-run waits
    # for their results instead of computing them again, and runs to the end on the freed node
    third = start()
    assert third.wait(timeout=600) == 0, log.read_text()[-3000:]
    for job in running:
        state = _job_state(job.job_id)
        assert state["JobState"] == "COMPLETED", f"the killed run's block {job.job_id} was {state['JobState']}"
    assert CampaignState.load(directory).finished
    calls, begun = _lines(finished), _lines(started)
    assert computing <= set(calls), "the calculation in flight at the kill was lost"
    assert len(calls) == len(set(calls)), "an oracle call was repeated"
    assert sorted(begun) == sorted(calls), "a calculation was killed half-way (and computed again)"
    # the cpu block's pool gave up while the calculation ran: the block ended only after it was stored
    (cpu_block,) = [j for j in running if ".parsl.cpu." in j.name]
    (job_out,) = directory.glob(f"parsl/*/submit_scripts/{cpu_block.name}.stdout")
    assert re.search(r"potforge: waiting for [12] oracle worker", job_out.read_text()), job_out.read_text()
    store = DatasetStore(directory / "campaign.db")
    assert store.count(status="pending") == 0
    assert {a.info["frame_hash"] for a in store.frames()} == set(calls)  # each label from exactly one call
    # the finished run cancelled its own blocks: nothing of this campaign is left in the queue
    _wait_for("the queue to empty", lambda: not jobs(), timeout_s=60)
    print(f"stale queued blocks cancelled: {sorted(stale)}; running blocks left to finish: "
          f"{[j.job_id for j in running]}; re-run finished {time.time() - killed_at:.0f} s after the kill; "
          f"{len(calls)} oracle calls")  # fmt: skip
