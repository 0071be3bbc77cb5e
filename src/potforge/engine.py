"""Task execution on Parsl: a local pool of worker processes by default, a cluster by config.

potforge never schedules work itself; it hands Parsl python functions (labelling chunks,
training, sampling) and waits on futures. Parsl's state is never the source of truth: every
result is written to the campaign directory/database by the task or on its return, so a
lost executor costs only work in flight, which is resubmitted (see :mod:`potforge.labeling`).

Executors are named by the work they take: ``cpu`` (reference calculations) and ``gpu``
(training, sampling). With one executor, both kinds of work go to it.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from potforge.errors import ConfigError


class ProviderConfig(BaseModel):
    """Where workers run. ``local``: this machine; ``slurm``: blocks of Slurm jobs."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["local", "slurm"] = "local"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    walltime: str = Field("01:00:00", pattern=r"^\d+:\d\d:\d\d$", description="per block, HH:MM:SS")
    nodes_per_block: int = Field(1, ge=1)
    init_blocks: int = Field(1, ge=0)
    min_blocks: int = Field(0, ge=0)
    max_blocks: int = Field(1, ge=1)
    exclusive: bool = Field(
        True,
        description="slurm: whole nodes per block (#SBATCH --exclusive); false lets blocks, e.g. of the "
        "cpu and gpu executors, share a node",
    )
    cores_per_node: int | None = Field(None, ge=1, description="slurm: CPUs to request per node (default: Slurm's)")
    mem_per_node_GB: int | None = Field(None, ge=1, description="slurm: memory to request per node (#SBATCH --mem)")
    scheduler_options: str = Field("", description="extra #SBATCH lines, e.g. '#SBATCH --gres=gpu:4'")
    worker_init: str = Field("", description="shell lines run before workers start (module load, venv)")
    launcher: Literal["single", "srun"] = "single"

    @model_validator(mode="after")
    def _check(self) -> ProviderConfig:
        if self.kind == "local":
            slurm_only = ("partition", "account", "qos", "cores_per_node", "mem_per_node_GB", "scheduler_options",
                          "worker_init")  # fmt: skip
            given = [name for name in slurm_only if name in self.model_fields_set]
            if given or ("exclusive" in self.model_fields_set and not self.exclusive):
                names = given or ["exclusive"]
                raise ValueError(
                    f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} for kind: slurm only, not local"
                )
        if max(self.init_blocks, self.min_blocks) > self.max_blocks:
            raise ValueError(
                f"init_blocks ({self.init_blocks}) and min_blocks ({self.min_blocks}) "
                f"cannot exceed max_blocks ({self.max_blocks})"
            )
        return self


class ExecutorConfig(BaseModel):
    """One Parsl HighThroughputExecutor."""

    model_config = ConfigDict(extra="forbid")
    max_workers_per_node: int | None = Field(None, ge=1, description="default: one per core")
    cores_per_worker: float = Field(1.0, gt=0)
    available_accelerators: int | list[str] | None = Field(
        None, description="GPUs per node (one worker pinned to each), e.g. 4"
    )
    address: str | None = Field(
        None,
        description="where workers reach this process (Parsl's interchange binds to it), e.g. 127.0.0.1 "
        "when every worker runs on this machine; default: any address of this host",
    )
    heartbeat_period_s: int = Field(30, ge=1, description="how often workers and interchange check each other")
    heartbeat_threshold_s: int = Field(
        120,
        ge=2,
        description="a block whose interchange is silent this long stops (after `potforge run` died): "
        "it stores the calculation in hand, then frees its nodes",
    )
    provider: ProviderConfig = Field(default_factory=ProviderConfig)

    @model_validator(mode="after")
    def _check(self) -> ExecutorConfig:
        if self.heartbeat_threshold_s <= self.heartbeat_period_s:
            raise ValueError(
                f"heartbeat_threshold_s ({self.heartbeat_threshold_s}) must exceed heartbeat_period_s "
                f"({self.heartbeat_period_s}): a block would stop between two heartbeats"
            )
        return self


class EngineConfig(BaseModel):
    """How tasks run. ``local`` (default): Parsl worker processes on this machine, one per core;
    ``threads``: Parsl threads in this process (tests, debugging; oracle calls still run in
    their own processes); ``parsl``: the executors listed here (e.g. Slurm)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["local", "threads", "parsl"] = "local"
    max_workers: int | None = Field(None, ge=1, description="local/threads: default one per core")
    executors: dict[str, ExecutorConfig] = Field(default_factory=dict)
    run_dir: str | None = Field(None, description="Parsl's log directory (default: <campaign>/parsl)")


def executor_workers(cfg: EngineConfig, kind: str) -> int:
    """How many tasks the executor for ``kind`` (``cpu``/``gpu``, falling back to the first
    executor, as :meth:`Engine.executor_for`) runs at once at full scale: workers per node
    (``max_workers_per_node``; one per accelerator when ``available_accelerators`` is given,
    at most ``max_workers_per_node``; else one per ``cores_per_worker`` of a node's cores) x
    ``nodes_per_block`` x ``max_blocks``. The local and threads engines: ``max_workers`` (default
    one per core)."""
    if cfg.kind != "parsl" or not cfg.executors:
        return cfg.max_workers or _cores()
    label = kind if kind in cfg.executors else next(iter(cfg.executors))
    ex = cfg.executors[label]
    per_node = ex.max_workers_per_node
    accelerators = ex.available_accelerators
    if accelerators is not None:
        n_acc = accelerators if isinstance(accelerators, int) else len(accelerators)
        per_node = n_acc if per_node is None else min(per_node, n_acc)
    if per_node is None:
        cores = ex.provider.cores_per_node if ex.provider.kind == "slurm" else _cores()
        per_node = max(1, int((cores or 1) // ex.cores_per_worker))
    return max(1, per_node * ex.provider.nodes_per_block * ex.provider.max_blocks)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _parsl_config(cfg: EngineConfig, run_dir: Path):
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor, ThreadPoolExecutor
    from parsl.providers import LocalProvider

    workers = cfg.max_workers or _cores()
    if cfg.kind == "threads":
        executors = [ThreadPoolExecutor(label="cpu", max_threads=workers)]
    elif cfg.kind == "local":
        executors = [
            HighThroughputExecutor(
                label="cpu",
                max_workers_per_node=workers,
                # Parsl caps workers at cores / cores_per_worker: more workers than cores (an oracle
                # that waits on other machines) share the cores rather than being silently dropped
                cores_per_worker=min(1.0, _cores() / workers),
                provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
            )
        ]
    else:
        if not cfg.executors:
            raise ConfigError("engine.kind = parsl needs at least one entry under engine.executors")
        executors = []
        for label, ex in cfg.executors.items():
            p = ex.provider
            if p.kind == "slurm":
                from potforge.slurm import campaign_slurm_provider

                provider = campaign_slurm_provider(p, run_dir)
            else:
                provider = LocalProvider(init_blocks=p.init_blocks, min_blocks=p.min_blocks, max_blocks=p.max_blocks)
            kwargs: dict[str, Any] = {
                "label": label,
                "cores_per_worker": ex.cores_per_worker,
                "provider": provider,
                "heartbeat_period": ex.heartbeat_period_s,
                "heartbeat_threshold": ex.heartbeat_threshold_s,
            }
            if ex.address is not None:
                kwargs["address"] = ex.address
            if ex.max_workers_per_node:
                kwargs["max_workers_per_node"] = ex.max_workers_per_node
            if ex.available_accelerators is not None:
                kwargs["available_accelerators"] = ex.available_accelerators
            executors.append(HighThroughputExecutor(**kwargs))
    return Config(executors=executors, run_dir=str(run_dir), strategy="simple", initialize_logging=False)


PIDS_FILE = "engine-processes.json"


def _kill_stale_processes(run_dir: Path) -> int:
    """Kill the worker processes a killed earlier run left behind.

    Parsl's interchange and workers outlive a SIGKILLed parent; an orphan would keep computing
    beside the new run (wasting the machine) and hold stage locks. Leftovers are found two ways:
    by the record in ``run_dir`` (pid and start time must both match, so a recycled pid is never
    touched) and by what they are — a process of this user, not of this run, whose command line
    or open files name ``run_dir`` (Parsl's workers and interchange do), which catches those that
    started between two ticks of the recorder.

    Oracle workers are spared, and so is everything in their session (the DFT code they run,
    its ``mpirun`` and ranks: the runner starts each worker as a session leader): each finishes
    the calculation in hand, stores it and stops by itself (oracle/worker.py). So are the
    processes of Slurm jobs (the blocks of a Slurm executor, when this machine is also a compute
    node): what becomes of those is :mod:`potforge.slurm`'s business, not this run's.
    """
    import json

    import psutil

    from potforge.oracle.runner import WORKER_MODULE

    path = run_dir / PIDS_FILE
    try:
        recorded = {int(pid): float(created) for pid, created in json.loads(path.read_text()).items()}
    except (OSError, ValueError):
        recorded = {}
    me = psutil.Process()
    ours = {me.pid} | {p.pid for p in me.parents()}  # this run and whatever started it
    marker = str(Path(run_dir).resolve())
    candidates: dict[int, psutil.Process] = {}
    for pid, created in recorded.items():
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) < 1e-3:
                candidates[pid] = proc
        except psutil.Error:
            continue
    for proc in psutil.process_iter(["pid", "uids", "cmdline"]):
        try:
            if proc.pid in candidates or proc.pid in ours or proc.info["uids"].real != os.getuid():
                continue
            cmdline = " ".join(proc.info["cmdline"] or [])
            if (
                marker in cmdline
                or str(run_dir) in cmdline
                or any(f.path.startswith(marker) for f in proc.open_files())
            ) and not _in_another_slurm_job(proc):
                candidates[proc.pid] = proc
        except (psutil.Error, TypeError):
            continue
    workers, sessions = set(), set()
    for proc in candidates.values():
        try:
            if WORKER_MODULE in proc.cmdline():
                workers.add(proc.pid)
                if os.getsid(proc.pid) == proc.pid:  # the runner makes each worker a session leader
                    sessions.add(proc.pid)
        except (psutil.Error, OSError):
            continue
    killed = 0
    for pid, proc in candidates.items():
        try:
            if pid in ours or pid in workers or os.getsid(pid) in sessions:
                continue  # an oracle worker or its code: finishing the calculation in hand
            proc.kill()
            killed += 1
        except (psutil.Error, OSError):
            continue
    path.unlink(missing_ok=True)
    return killed


def _in_another_slurm_job(proc: Any) -> bool:
    """Whether ``proc`` (psutil) runs for a Slurm job other than this process's: a job step
    daemon, or a process of a job's step (it inherits the job's ``SLURM_JOB_ID``)."""
    if proc.name().startswith("slurmstepd"):
        return True
    job = proc.environ().get("SLURM_JOB_ID")
    return job is not None and job != os.environ.get("SLURM_JOB_ID")


class Engine:
    """A loaded Parsl configuration. Use as a context manager; ``submit`` returns futures."""

    def __init__(self, config: EngineConfig | None = None, run_dir: str | Path = "parsl-runinfo") -> None:
        self.config = config or EngineConfig()
        self.run_dir = Path(self.config.run_dir or run_dir)
        self._dfk = None
        self._apps: dict[str, Any] = {}

    def __enter__(self) -> Engine:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        # stopped early (Ctrl-C, SIGTERM, an error): Slurm blocks may hold calculations
        self.shutdown(interrupted=exc_type is not None)

    def start(self) -> None:
        import parsl

        if self._dfk is not None:
            return
        # Parsl starts its interchange and workers as commands found on PATH; a virtual
        # environment used without activation must still provide them
        bindir = str(Path(sys.executable).parent)
        if bindir not in os.environ.get("PATH", "").split(os.pathsep):
            os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _kill_stale_processes(self.run_dir)
        parsl_config = _parsl_config(self.config, self.run_dir)
        if self._slurm_providers(parsl_config):
            from potforge.slurm import handle_stale_jobs, job_prefix

            if shutil.which("sbatch") is None:
                raise ConfigError("engine: a Slurm provider needs sbatch on PATH: run potforge on the cluster")
            # before this run submits its own blocks: every job of this campaign now queued is stale
            handle_stale_jobs(job_prefix(self.run_dir))
        self._dfk = parsl.load(parsl_config)
        self.labels = [ex.label for ex in self._dfk.config.executors]
        self._record_processes()
        # workers start lazily and are replaced; a daemon thread keeps the record current
        self._stop = threading.Event()
        self._recorder = threading.Thread(target=self._keep_recording, daemon=True)
        self._recorder.start()

    def _keep_recording(self) -> None:
        while not self._stop.wait(5.0):
            self._record_processes()

    def _record_processes(self) -> None:
        """Remember this engine's child processes (pid, start time) for the next run's cleanup."""
        import psutil

        from potforge.durable import write_json

        try:
            children = psutil.Process().children(recursive=True)
            record = {str(c.pid): c.create_time() for c in children}
        except psutil.Error:
            return
        if record:
            write_json(self.run_dir / PIDS_FILE, record)

    @staticmethod
    def _slurm_providers(parsl_config: Any) -> list:
        from potforge.slurm import CampaignSlurmProvider

        return [ex.provider for ex in parsl_config.executors if isinstance(getattr(ex, "provider", None),
                                                                           CampaignSlurmProvider)]  # fmt: skip

    def shutdown(self, interrupted: bool = False) -> None:
        """Stop Parsl. A run that finished cancels its Slurm blocks; one ``interrupted`` leaves
        them, as they may hold calculations: each stores the one in hand, then stops by itself
        within ``heartbeat_threshold_s`` (see :mod:`potforge.slurm`)."""
        if self._dfk is not None:
            if interrupted:
                for provider in self._slurm_providers(self._dfk.config):
                    provider.spare_jobs = True
            self._stop.set()
            self._recorder.join(timeout=30)
            self._dfk.cleanup()
            self._dfk = None
            (self.run_dir / PIDS_FILE).unlink(missing_ok=True)

    def executor_for(self, kind: str) -> str:
        """``cpu`` or ``gpu`` work -> an executor label (falls back to the only/first one)."""
        return kind if kind in self.labels else self.labels[0]

    def submit(self, kind: str, fn, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` as a Parsl python app on the executor for ``kind``."""
        from parsl.app.app import python_app

        if self._dfk is None:
            self.start()
        label = self.executor_for(kind)
        key = f"{fn.__module__}.{fn.__qualname__}@{label}"
        if key not in self._apps:
            self._apps[key] = python_app(fn, executors=[label], cache=False)
        return self._apps[key](*args, **kwargs)
