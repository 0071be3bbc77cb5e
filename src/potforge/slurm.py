"""Slurm blocks of the Parsl engine: named after their campaign, and never killing a calculation.

Three things make a campaign on Slurm as crash-safe as one on this machine:

* **Names.** Every job a campaign submits is named ``potforge.<dir>.<hash>.parsl.<executor>.block-…``,
  where ``<hash>`` is taken from the absolute path of the campaign's Parsl directory, so a re-run
  of the same campaign (and only of it) recognises the jobs an earlier, killed run left behind.
* **Jobs that outlive ``potforge run``.** When ``potforge run`` dies, Parsl's interchange dies with
  it; each block notices within the executor's ``heartbeat_threshold_s`` and stops its workers.
  An oracle worker that was computing then finishes that one calculation and stores it
  (:mod:`potforge.oracle.worker`), but Slurm kills every process of a job when the job ends, so
  each block runs its worker pool under :func:`run_pool`, which, once the pool has exited, waits
  for the oracle workers of its own job before letting the job end.
* **What a re-run does with them** (:func:`handle_stale_jobs`): a stale job still *pending* has
  never run anything and would only find a dead interchange when it starts, so it is cancelled;
  a stale job *running* is left alone: it may hold a calculation, it stops by itself as above,
  and the re-run's labelling waits for the calculations it holds (their claims stay live) instead
  of repeating them. The same holds when ``potforge run`` stops early on Ctrl-C, SIGTERM or an
  error: its blocks are not cancelled (:class:`CampaignSlurmProvider`), only a run that finished
  cancels its blocks, as there is nothing left in them to lose.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from parsl.launchers import SingleNodeLauncher, SrunLauncher
from parsl.launchers.base import Launcher
from parsl.providers import SlurmProvider

from potforge.errors import ConfigError

if TYPE_CHECKING:
    from potforge.engine import ProviderConfig

log = logging.getLogger(__name__)

#: How often (seconds) a finished pool looks for its job's oracle workers.
DRAIN_POLL_S = 1.0


def job_prefix(run_dir: str | Path) -> str:
    """The name prefix of every Slurm job of the campaign whose Parsl directory is ``run_dir``.

    ``potforge.<campaign dir name>.<8 hex digits of the SHA-256 of run_dir's absolute path>``:
    readable in ``squeue``, and distinct for two campaigns whose directories share a name.
    """
    run_dir = Path(run_dir).resolve()
    campaign = run_dir.parent if run_dir.name == "parsl" else run_dir
    name = re.sub(r"[^A-Za-z0-9_-]", "_", campaign.name)[:24] or "campaign"
    digest = hashlib.sha256(str(run_dir).encode()).hexdigest()[:8]
    return f"potforge.{name}.{digest}"


@dataclass(frozen=True)
class Job:
    job_id: str
    state: str  # Slurm's long form: PENDING, RUNNING, COMPLETING, ...
    name: str


def campaign_jobs(prefix: str) -> list[Job]:
    """This user's jobs in the Slurm queue whose name starts with ``prefix`` (finished jobs leave
    the queue). Raises ConfigError when Slurm cannot be asked."""
    try:
        out = subprocess.run(
            ["squeue", "--me", "--noheader", "--format=%i %T %j"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"engine: cannot list Slurm jobs (squeue: {exc}); run potforge where Slurm is") from None
    if out.returncode != 0:
        message = (out.stderr.strip().splitlines() or ["no message"])[-1]
        raise ConfigError(f"engine: cannot list Slurm jobs (squeue: {message})")
    jobs = []
    for line in out.stdout.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) == 3 and parts[2].startswith(prefix + "."):
            jobs.append(Job(*parts))
    return jobs


def handle_stale_jobs(prefix: str) -> tuple[list[Job], list[Job]]:
    """Before a run submits anything: cancel the pending jobs earlier runs of this campaign left;
    leave the running ones to store their calculations and stop. Returns (cancelled, left)."""
    stale = campaign_jobs(prefix)
    pending = [job for job in stale if job.state == "PENDING"]
    running = [job for job in stale if job.state != "PENDING"]
    if pending:
        subprocess.run(["scancel", *(job.job_id for job in pending)], capture_output=True, text=True, timeout=60)
        log.warning(
            "cancelled %d pending Slurm job(s) of an earlier run of this campaign (%s): they had not started",
            len(pending),
            " ".join(job.job_id for job in pending),
        )
    if running:
        log.warning(
            "%d Slurm job(s) of an earlier run of this campaign still run (%s): each stores the "
            "calculation in hand and stops by itself within heartbeat_threshold_s; this run waits for them",
            len(running),
            " ".join(job.job_id for job in running),
        )
    return pending, running


class PoolLauncher(Launcher):
    """Wraps another launcher's command in :func:`run_pool`, in the same job step as the pool."""

    def __init__(self, inner: Launcher) -> None:
        super().__init__(debug=inner.debug)
        self.inner = inner

    def __call__(self, command: str, tasks_per_node: int, nodes_per_block: int, script_dir: str = "") -> str:
        # python3 from PATH, as Parsl finds process_worker_pool.py: worker_init's venv, or the one
        # `potforge run` exported to the job
        wrapped = f"python3 -m potforge.slurm run-pool {command}"
        return self.inner(wrapped, tasks_per_node, nodes_per_block, script_dir)


class CampaignSlurmProvider(SlurmProvider):
    """Parsl's SlurmProvider, with jobs named after the campaign, and with ``cancel`` refused
    once :attr:`spare_jobs` is set (a run stopped early: its jobs may hold calculations)."""

    def __init__(self, prefix: str, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.prefix = prefix
        self.spare_jobs = False

    def submit(self, command: str, tasks_per_node: int, job_name: str = "parsl.slurm") -> str:
        return super().submit(command, tasks_per_node, job_name=f"{self.prefix}.{job_name}")

    def cancel(self, job_ids: list) -> list[bool]:
        if self.spare_jobs:
            return [False for _ in job_ids]
        return super().cancel(job_ids)


def campaign_slurm_provider(p: ProviderConfig, run_dir: str | Path) -> CampaignSlurmProvider:
    inner = SrunLauncher() if p.launcher == "srun" else SingleNodeLauncher()
    return CampaignSlurmProvider(
        job_prefix(run_dir),
        partition=p.partition,
        account=p.account,
        qos=p.qos,
        walltime=p.walltime,
        nodes_per_block=p.nodes_per_block,
        init_blocks=p.init_blocks,
        min_blocks=p.min_blocks,
        max_blocks=p.max_blocks,
        exclusive=p.exclusive,
        cores_per_node=p.cores_per_node,
        mem_per_node=p.mem_per_node_GB,
        scheduler_options=p.scheduler_options,
        worker_init=p.worker_init,
        launcher=PoolLauncher(inner),
    )


def oracle_workers_of_job(job_id: str) -> list[int]:
    """Pids of this user's oracle workers (``python -m potforge.oracle.worker``) that run in Slurm
    job ``job_id`` (they inherit its ``SLURM_JOB_ID``)."""
    import psutil

    from potforge.oracle.runner import WORKER_MODULE

    found = []
    for proc in psutil.process_iter(["pid", "uids", "cmdline"]):
        try:
            if proc.info["uids"].real != os.getuid() or WORKER_MODULE not in (proc.info["cmdline"] or []):
                continue
            if proc.environ().get("SLURM_JOB_ID") == job_id and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (psutil.Error, TypeError):
            continue
    return found


def run_pool(command: list[str], job_id: str | None = None) -> int:
    """Run Parsl's worker pool ``command``; when it exits, wait for the oracle workers of this job
    (each storing the calculation it holds; an orphan enforces its own timeout), so that Slurm,
    which kills a job's processes when the job ends, does not throw their calculations away.
    Returns the pool's exit code."""
    job_id = job_id or os.environ.get("SLURM_JOB_ID")
    code = subprocess.call(command)
    if job_id:
        waiting = oracle_workers_of_job(job_id)
        if waiting:
            print(f"potforge: waiting for {len(waiting)} oracle worker(s) to store their calculation", flush=True)
        while waiting:
            time.sleep(DRAIN_POLL_S)
            waiting = oracle_workers_of_job(job_id)
    return code


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "run-pool":
        print("usage: python -m potforge.slurm run-pool COMMAND...", file=sys.stderr)
        return 2
    return run_pool(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
