"""Run an earlier commit's copy of a benchmark in a temporary git worktree, in the same run, so
that a speed claim against that commit is measured on the same machine at the same time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rate_at(rev: str, script: str, args: list[str], pattern: str) -> float | None:
    """The number ``pattern`` (a regex with one group) captures in the output of
    ``benchmarks/<script>`` run at commit ``rev`` with ``args``; None if it cannot run there."""
    with tempfile.TemporaryDirectory(prefix="potforge-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        try:
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), rev],
                           check=True, capture_output=True)  # fmt: skip
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            print(f"baseline {rev}: no worktree ({exc}); skipped")
            return None
        try:
            env = {**os.environ, "PYTHONPATH": str(tree / "src")}
            done = subprocess.run([sys.executable, str(tree / "benchmarks" / script), *args],
                                  env=env, capture_output=True, text=True, cwd=tree)  # fmt: skip
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True)
    match = re.search(pattern, done.stdout)
    if done.returncode != 0 or not match:
        print(f"baseline {rev}: {script} failed: {done.stderr.strip().splitlines()[-1:]}")
        return None
    return float(match.group(1))
