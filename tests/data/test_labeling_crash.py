"""`potforge label` survives SIGKILL at any moment: nothing finished is lost or recomputed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from potforge.data import DatasetStore

FAULTY = "python:potforge.oracle.fake:FaultyEMT"


def label_cmd(db, counter, engine, n=24):
    # with worker processes a call takes long enough that a fast machine cannot finish the whole
    # run between two kills (the kills come 9.5-12 s apart, the engine starts in a few seconds;
    # threads: 6 s of calls on 2 workers against kills 1.5-4 s apart)
    delay_s = 1.0 if engine == "local" else 0.5
    settings = json.dumps({"mode": "ok", "delay_s": delay_s, "counter_file": str(counter)})
    return [
        sys.executable, "-m", "potforge", "label", "--db", str(db), "--oracle", FAULTY,
        "--oracle-settings", settings, "--random", str(n), "--seed", "5", "--box-min-A", "6",
        "--box-max-A", "7", "--engine", engine, "--chunk", "3", "--workers", "2",
    ]  # fmt: skip


@pytest.mark.parametrize("engine", ["threads", pytest.param("local", marks=pytest.mark.slow)])
def test_sigkill_then_rerun_loses_and_repeats_nothing(tmp_path, engine):
    db, counter = tmp_path / "d.db", tmp_path / "calls.txt"
    env = dict(os.environ, POTFORGE_CLAIM_STALE_S="5")
    rng = random.Random(1)
    kills = 0
    for _ in range(4):
        proc = subprocess.Popen(
            label_cmd(db, counter, engine), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        time.sleep(rng.uniform(1.5, 4.0) + (8 if engine == "local" else 0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    done = subprocess.run(label_cmd(db, counter, engine), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert kills >= 2, "the run finished before it could be killed; lengthen it"
    store = DatasetStore(db)
    assert store.count(status="ok") == 24
    calls = counter.read_text().split()
    assert len(calls) == len(set(calls)) == 24, "an oracle call was repeated or lost"
