"""Labelling throughput against the number of local workers, with an oracle that costs a fixed
wall time and no CPU (EMT behind a sleep), as a DFT code on its own nodes would look to the
engine: what is left is the engine's own cost per task.

For each worker count W: 20 × W random cells are queued and labelled by ``label_pending``
through Parsl's local HighThroughputExecutor (one labelling task per call), and the script
prints the wall time, the oracle throughput (calls/s), the efficiency against the ideal
(20 × delay, each worker busy all the time) and the CPU-seconds the whole machine spent per
call (from /proc/stat: Parsl's workers, each call's isolated oracle process with its start-up,
the database; the oracle itself sleeps). On a cluster each node brings its own cores, so that
last figure says how many calls per second one core of the submitting host can feed.

    python benchmarks/campaign_scaling.py [--workers 1 4 16 64] [--calls 20] [--delay-s 10]
        (the defaults take about 15 minutes; run it on an otherwise idle machine)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def busy_cpu_s() -> float:
    """CPU-seconds all cores of this machine have spent outside idle and iowait so far."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def run(workers: int, calls: int, delay_s: float, root: Path, chunk_size: int = 1) -> dict[str, float]:
    from potforge.data import DatasetStore, Provenance
    from potforge.engine import Engine, EngineConfig
    from potforge.labeling import label_pending
    from potforge.oracle import get_oracle
    from potforge.structures import RandomCellSpec, random_cell

    oracle = get_oracle("python:potforge.oracle.fake:FaultyEMT", {"mode": "ok", "delay_s": delay_s})
    directory = root / f"w{workers}"
    store = DatasetStore(directory / "scaling.db")
    spec = RandomCellSpec(box_min_A=6.0, box_max_A=7.0)
    for k in range(calls * workers):
        atoms = random_cell(spec, np.random.default_rng([7, workers, k]))
        store.add_pending(atoms, Provenance(source="random", trajectory=f"random:7:{k}"), oracle.name,
                          oracle.settings_hash())  # fmt: skip
    cpu0, t0 = busy_cpu_s(), time.perf_counter()
    with Engine(EngineConfig(kind="local", max_workers=workers), run_dir=directory / "parsl") as engine:
        report = label_pending(
            store, oracle, engine, directory / "work", chunk_size=chunk_size, timeout_s=delay_s + 120
        )
    wall_s, cpu_s = time.perf_counter() - t0, busy_cpu_s() - cpu0
    n = report.labelled
    return {
        "labelled": n,
        "wall_s": wall_s,
        "calls_per_s": n / wall_s,
        "efficiency": calls * delay_s / wall_s,
        "cpu_s_per_call": cpu_s / max(n, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--calls", type=int, default=20, help="oracle calls per worker")
    parser.add_argument("--delay-s", type=float, default=10.0, help="wall time of one oracle call")
    parser.add_argument("--chunk-size", type=int, default=1, help="oracle calls per labelling task")
    args = parser.parse_args()
    print(f"labelling, {args.calls} calls per worker, each {args.delay_s:g} s of wall time and no CPU, "
          f"{os.cpu_count()} cores; ideal wall time {args.calls * args.delay_s:g} s")  # fmt: skip
    print(f"{'workers':>8}{'calls':>7}{'wall s':>9}{'calls/s':>9}{'efficiency':>12}{'CPU s/call':>12}")
    with tempfile.TemporaryDirectory(prefix="potforge-scaling-") as tmp:
        for w in args.workers:
            r = run(w, args.calls, args.delay_s, Path(tmp), args.chunk_size)
            print(f"{w:>8}{r['labelled']:>7}{r['wall_s']:>9.1f}{r['calls_per_s']:>9.2f}{r['efficiency']:>12.2f}"
                  f"{r['cpu_s_per_call']:>12.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
