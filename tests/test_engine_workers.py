"""The local engine runs as many workers as asked, even more than this machine has cores."""

from __future__ import annotations

import os
import time

from potforge.engine import Engine, EngineConfig
from potforge.oracle.fake import sleep_interval


def test_more_local_workers_than_cores_all_run_at_once(tmp_path):
    """An oracle that waits on other machines needs many workers on a small host: with
    ``max_workers`` = 2 × cores, that many tasks must overlap in time (Parsl would otherwise cap
    the workers at one per core, silently)."""
    workers = 2 * (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    with Engine(EngineConfig(kind="local", max_workers=workers), run_dir=tmp_path / "parsl") as engine:
        engine.submit("cpu", sleep_interval, 0.1).result(timeout=120)  # the pool is up
        t0 = time.time()
        futures = [engine.submit("cpu", sleep_interval, 3.0) for _ in range(workers)]
        intervals = [f.result(timeout=120) for f in futures]
    latest_start = max(s for s, _ in intervals)
    earliest_end = min(e for _, e in intervals)
    assert latest_start < earliest_end, f"not all {workers} tasks ran at once: {intervals} (t0 {t0})"
