"""The dataset store: exact round trips, no duplicates, deterministic splits, imports, PostgreSQL."""

from __future__ import annotations

import os
import threading

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from potforge.data import DatasetStore, Provenance, split_of
from potforge.data.io import export_extxyz, import_ani_h5, import_extxyz
from potforge.errors import DataError
from potforge.units import HARTREE_EV


def labelled_frame(seed: int, n: int = 7) -> Atoms:
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(6, 9, 3)) + rng.normal(0, 0.4, (3, 3))
    atoms = Atoms("Al" * n, scaled_positions=rng.random((n, 3)), cell=cell, pbc=True)
    atoms.calc = SinglePointCalculator(
        atoms, energy=float(rng.normal()), forces=rng.normal(size=(n, 3)), stress=rng.normal(size=6)
    )
    return atoms


def test_round_trip_is_exact_to_the_bit(tmp_path):
    store = DatasetStore(tmp_path / "d.db")
    frame = labelled_frame(1)
    store.add_labelled(frame, Provenance(source="test", generation=2, sim_time_fs=12.5), "ref", "h1")
    (back,) = list(store.frames())
    assert np.array_equal(back.positions, frame.positions)
    assert np.array_equal(back.cell.array, frame.cell.array)
    assert np.array_equal(back.get_forces(), frame.get_forces())
    assert np.array_equal(back.get_stress(), frame.get_stress())
    assert back.get_potential_energy() == frame.get_potential_energy()
    assert back.info["generation"] == 2 and back.info["sim_time_fs"] == 12.5 and back.info["source"] == "test"


def test_a_killed_writers_leftover_lock_file_blocks_nothing(tmp_path):
    # ASE's lock is a file created exclusively; a writer SIGKILLed mid-write leaves it behind
    db = tmp_path / "d.db"
    DatasetStore(db)
    (tmp_path / "d.db.lock").touch()
    store = DatasetStore(db)
    # a daemon thread, so that a regression fails this test instead of hanging the session
    writer = threading.Thread(
        target=store.add_labelled, args=(labelled_frame(3), Provenance(source="t"), "ref", "h"), daemon=True
    )
    writer.start()
    writer.join(timeout=60)
    assert not writer.is_alive(), "a write waited on a dead writer's lock file"
    assert store.count(status="ok") == 1


def test_identical_frames_are_stored_once(tmp_path):
    store = DatasetStore(tmp_path / "d.db")
    frame = labelled_frame(2)
    prov = Provenance(source="random")
    assert store.add_pending(frame, prov, "emt", "h") is not None
    assert store.add_pending(frame.copy(), prov, "emt", "h") is None
    # the same structure for another oracle is another task
    assert store.add_pending(frame, prov, "gpaw", "h2") is not None
    moved = frame.copy()
    moved.positions[0, 0] += 1e-12
    assert store.add_pending(moved, prov, "emt", "h") is not None
    assert store.count() == 3


def test_names_that_read_as_numbers_are_refused_with_the_field_named(tmp_path):
    store = DatasetStore(tmp_path / "d.db")
    with pytest.raises(DataError, match="source '2024' would be read back as a number"):
        store.add_labelled(labelled_frame(4), Provenance(source="2024"), "ref", "h")
    with pytest.raises(DataError, match="oracle_hash '70e02'"):
        store.add_pending(labelled_frame(4), Provenance(source="t"), "emt", "70e02")
    assert store.count() == 0


def test_splits_are_deterministic_and_near_their_fractions():
    hashes = [f"{k:08x}" for k in range(4000)]
    splits = [split_of(h) for h in hashes]
    assert splits == [split_of(h) for h in hashes]
    frac = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert frac["train"] == pytest.approx(0.8, abs=0.03) and frac["val"] == pytest.approx(0.1, abs=0.02)


def test_failures_retry_then_quarantine(tmp_path):
    store = DatasetStore(tmp_path / "d.db")
    tid = store.add_pending(labelled_frame(3), Provenance(source="random"), "emt", "h")
    failure = {"task_id": tid, "status": "failed", "kind": "scf", "message": "no convergence"}
    assert store.record_result(failure, max_attempts=2) == "failed"
    assert [t for t, _ in store.pending_tasks()] == [tid]
    assert store.record_result(failure, max_attempts=2) == "quarantined"
    assert store.pending_tasks() == []
    info = store.info()
    assert info["failures"] == {"quarantined:scf": 1} and info["status"]["quarantined"] == 1


def test_setup_failures_are_quarantined_at_once(tmp_path):
    store = DatasetStore(tmp_path / "d.db")
    tid = store.add_pending(labelled_frame(4), Provenance(source="random"), "emt", "h")
    result = {"task_id": tid, "status": "failed", "kind": "setup", "message": "no pseudopotential"}
    assert store.record_result(result, max_attempts=5) == "quarantined"


def test_extxyz_import_export(tmp_path):
    frames = [labelled_frame(k) for k in range(5)]
    write(tmp_path / "in.extxyz", frames)
    store = DatasetStore(tmp_path / "d.db")
    assert import_extxyz(store, tmp_path / "in.extxyz") == 5
    assert import_extxyz(store, tmp_path / "in.extxyz") == 0  # no duplicates
    assert export_extxyz(store, tmp_path / "out.extxyz") == 5
    back = read(tmp_path / "out.extxyz", ":")
    energies = sorted(a.get_potential_energy() for a in back)
    assert energies == pytest.approx(sorted(a.get_potential_energy() for a in frames), abs=1e-8)
    with pytest.raises(DataError, match="no energy"):
        write(tmp_path / "bare.extxyz", Atoms("Al2", positions=[[0, 0, 0], [2, 0, 0]]))
        import_extxyz(store, tmp_path / "bare.extxyz")


def test_ani_hdf5_import_converts_hartree(tmp_path):
    path = tmp_path / "ani.h5"
    rng = np.random.default_rng(5)
    with h5py.File(path, "w") as f:
        g = f.create_group("Al/conformers")
        g["coordinates"] = rng.uniform(0, 8, (3, 4, 3))
        g["species"] = np.array([b"Al"] * 4)
        g["cell"] = np.tile(np.eye(3) * 8.0, (3, 1, 1))
        g["energy"] = np.array([-10.0, -10.1, -10.2])
        g["force"] = rng.normal(size=(3, 4, 3)) * 0.01
    store = DatasetStore(tmp_path / "d.db")
    assert import_ani_h5(store, path) == 3
    energies = sorted(a.get_potential_energy() for a in store.frames())
    assert energies == pytest.approx(sorted(np.array([-10.0, -10.1, -10.2]) * HARTREE_EV))


def test_unreadable_inputs_raise_data_errors(tmp_path):
    (tmp_path / "x.db").write_text("this is not sqlite")
    with pytest.raises(DataError, match="cannot open dataset"):
        DatasetStore(tmp_path / "x.db")
    with pytest.raises(DataError):
        import_ani_h5(DatasetStore(tmp_path / "ok.db"), tmp_path / "missing.h5")


POSTGRES_URL = os.environ.get("POTFORGE_TEST_POSTGRES_URL")


@pytest.mark.skipif(not POSTGRES_URL and not os.environ.get("CI"), reason="no PostgreSQL server (CI starts one)")
def test_postgresql_round_trip():
    assert POSTGRES_URL, "CI must provide POTFORGE_TEST_POSTGRES_URL (see .ci/run)"
    store = DatasetStore(POSTGRES_URL)
    store.db.delete([row.id for row in store.db.select()])
    frame = labelled_frame(9)
    tid = store.add_pending(frame, Provenance(source="random"), "emt", "hpg")
    result = {
        "task_id": tid,
        "status": "ok",
        "energy": frame.get_potential_energy(),
        "forces": frame.get_forces().tolist(),
        "stress": frame.get_stress().tolist(),
    }
    assert store.record_result(result) == "ok"
    assert store.add_pending(frame, Provenance(source="random"), "emt", "hpg") is None
    (back,) = list(store.frames())
    assert np.array_equal(back.positions, frame.positions)
    assert np.array_equal(back.get_forces(), frame.get_forces())
    assert store.info()["status"]["ok"] == 1


def test_a_password_in_a_dataset_url_is_never_shown():
    from potforge.data.store import redact

    url = "postgresql://alice:s3cret@db.example.org:5433/potforge"
    assert redact(url) == "postgresql://alice:***@db.example.org:5433/potforge"
    assert redact("postgresql://alice@host/db") == "postgresql://alice@host/db"  # libpq reads ~/.pgpass
    assert redact("runs/c/campaign.db") == "runs/c/campaign.db"
    with pytest.raises(DataError) as err:  # nothing listens on port 1
        DatasetStore("postgresql://alice:s3cret@127.0.0.1:1/potforge")
    assert "s3cret" not in str(err.value) and "alice:***@127.0.0.1:1" in str(err.value)


def test_a_campaign_records_its_dataset_url_without_the_password(tmp_path):
    import yaml

    from potforge.campaign import prepare_directory
    from potforge.config import parse_config

    cfg = parse_config({"dataset": "postgresql://alice:s3cret@127.0.0.1:1/potforge"})
    prepare_directory(cfg, tmp_path)
    text = (tmp_path / "config.yaml").read_text()
    assert "s3cret" not in text and yaml.safe_load(text)["config"]["dataset"].startswith("postgresql://alice:***@")
    prepare_directory(cfg, tmp_path)  # the same campaign again: still its configuration


@pytest.mark.skipif(not POSTGRES_URL and not os.environ.get("CI"), reason="no PostgreSQL server (CI starts one)")
def test_postgresql_password_from_the_environment(monkeypatch):
    """A URL without a password connects with $PGPASSWORD (libpq), so none is written anywhere."""
    from urllib.parse import urlsplit, urlunsplit

    assert POSTGRES_URL, "CI must provide POTFORGE_TEST_POSTGRES_URL (see .ci/run)"
    parts = urlsplit(POSTGRES_URL)
    bare = urlunsplit(parts._replace(netloc=f"{parts.username}@{parts.hostname}:{parts.port}"))
    monkeypatch.setenv("PGPASSWORD", parts.password)
    assert DatasetStore(bare).count() >= 0


def test_labels_stored_under_a_legacy_oracle_hash_are_adopted_not_recomputed(tmp_path):
    """A dataset labelled when the oracle hash still covered the launch command keeps its
    labels: the rows move to the new hash and its task ids, a result still on its way under
    the old task id finds its row, and queuing the same structure again adds nothing."""
    old, new = "oLEGACY", "oIDENTITY"
    done, waiting = labelled_frame(1), labelled_frame(2)
    store = DatasetStore(tmp_path / "d.db")
    store.add_labelled(done, Provenance(source="random"), "espresso", old)
    old_tid = store.add_pending(waiting, Provenance(source="random"), "espresso", old)

    assert store.adopt_labels(new, [old]) == 2
    assert store.adopt_labels(new, [old]) == 0  # idempotent
    assert store.add_pending(done, Provenance(source="random"), "espresso", new) is None
    assert store.add_pending(waiting, Provenance(source="random"), "espresso", new) is None
    assert [a.info["oracle_hash"] for a in store.frames(oracle_hash=new)] == [new]
    result = {"task_id": old_tid, "status": "ok", "energy": -3.0, "forces": np.zeros((7, 3)).tolist(),
              "stress": [0.0] * 6}  # fmt: skip
    assert store.record_result(result) == "ok"
    assert store.count(status="ok", oracle_hash=new) == 2 and store.count(oracle_hash=old) == 0
    assert store.metadata()["oracle_aliases"] == {old: new}


KILLED_WHILE_CREATING = """
import os, sys, sqlite3
real_commit = sqlite3.Connection.commit
class Dying(sqlite3.Connection):
    def commit(self):
        os._exit(9)  # killed after ASE's CREATE TABLE statements, before its version row
sqlite3_connect = sqlite3.connect
sqlite3.connect = lambda *a, **k: sqlite3_connect(*a, factory=Dying, **k)
from potforge.data import DatasetStore
DatasetStore(sys.argv[1])
"""


def test_a_store_killed_while_it_was_being_created_opens_afterwards(tmp_path):
    import subprocess
    import sys

    from potforge.data import DatasetStore

    path = tmp_path / "campaign.db"
    done = subprocess.run([sys.executable, "-c", KILLED_WHILE_CREATING, str(path)], capture_output=True)
    assert done.returncode == 9
    left = list(tmp_path.glob(".campaign.db.*.creating"))
    assert len(left) == 1  # the killed creator's private file
    elsewhere = tmp_path / ".campaign.db.otherhost.123.creating"  # another host's, maybe still creating
    elsewhere.write_bytes(b"")
    store = DatasetStore(path)  # ASE alone would fail here for ever: tables without a version row
    assert store.count() == 0
    assert not left[0].exists() and elsewhere.exists()  # this host's dead creator: swept; the other: kept
