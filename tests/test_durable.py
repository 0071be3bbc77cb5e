"""The durable-state layer: a write is all or nothing, concurrent writers never mix, permissions
follow the umask, a lock's holder is exclusive."""

from __future__ import annotations

import json
import os
import threading

import pytest

from potforge import durable


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    durable.write_json(path, {"generation": 1})

    def broken_fsync(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk gone"):
        durable.write_json(path, {"generation": 2})
    assert json.loads(path.read_text()) == {"generation": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_concurrent_writers_each_leave_a_whole_file(tmp_path):
    path = tmp_path / "status.json"
    payloads = [{"writer": k, "blob": "x" * (10_000 + k)} for k in range(8)]
    seen = []

    def write(p):
        for _ in range(20):
            durable.write_json(path, p)
            seen.append(json.loads(path.read_text()))  # a reader never sees half a file

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(s in payloads for s in seen) and json.loads(path.read_text()) in payloads
    assert not list(tmp_path.glob(".*.tmp"))


def test_files_follow_the_umask_not_private(tmp_path):
    old = os.umask(0o022)
    try:
        durable.write_text(tmp_path / "a.txt", "hello")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


def test_markers_and_lock(tmp_path):
    assert durable.read_done(tmp_path) is None
    durable.mark_done(tmp_path, {"epochs": 3})
    assert durable.read_done(tmp_path) == {"epochs": 3}
    order = []

    def other():
        with durable.stage_lock(tmp_path):
            order.append("other")

    with durable.stage_lock(tmp_path):
        t = threading.Thread(target=other)
        t.start()
        t.join(0.3)
        assert t.is_alive()  # waits for the holder (flock is per open file, also across threads)
        order.append("holder")
    t.join()
    assert order == ["holder", "other"]
