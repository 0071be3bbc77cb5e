"""Table I (paper IV): the FCC/Melt generator and the splits. No test frame of either dataset may
reach either model's training data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

from potforge.data import DatasetStore, Provenance
from potforge.data.store import split_of
from potforge.errors import DataError
from potforge.fccmelt import SOURCE, FccMeltSettings, liquid_conditions, queue_fccmelt
from potforge.hashing import structure_hash
from potforge.oracle import get_oracle
from potforge.table1 import check_no_leak, frame_hashes

TINY = dict(
    heatcool_supercell=2, heatcool_duration_fs=200.0, heatcool_snapshots=4, liquid_supercell=2, liquid_runs=2,
    liquid_snapshots=4, liquid_premelt_fs=60.0, liquid_equilibrate_fs=20.0, liquid_interval_fs=10.0,
)  # fmt: skip


def _labelled(atoms, seed: int):
    a = atoms.copy()
    a.rattle(0.05, seed=seed)
    a.calc = EMT()
    a.get_potential_energy()
    return a


def _stores(tmp_path, n: int = 40):
    """An AL store and an FCC/Melt store of EMT-labelled frames; frame 0 is in both."""
    oracle = get_oracle("emt")
    al, fm = DatasetStore(tmp_path / "al.db"), DatasetStore(tmp_path / "fm.db")
    base = bulk("Al", "fcc", a=4.05, cubic=True).repeat(2)
    shared = _labelled(base, 0)
    for k in range(n):
        al.add_labelled(shared if k == 0 else _labelled(base, 100 + k), Provenance("active_learning"), "emt",
                        oracle.settings_hash())  # fmt: skip
        fm.add_labelled(
            shared if k == 0 else _labelled(base, 200 + k), Provenance(SOURCE), "emt", oracle.settings_hash()
        )
    return al, fm, structure_hash(shared)


def test_splits_never_leak_a_test_frame_into_training(tmp_path):
    al, fm, shared = _stores(tmp_path)
    check_no_leak(al, fm)  # hash-based splits: the shared frame has the same split in both
    split = split_of(shared)
    assert shared in frame_hashes(al, split) and shared in frame_hashes(fm, split, source=SOURCE)
    tests = frame_hashes(al, "test") | frame_hashes(fm, "test", source=SOURCE)
    trains = {h for s in ("train", "val") for h in frame_hashes(al, s) | frame_hashes(fm, s, source=SOURCE)}
    assert tests and trains and not tests & trains
    # a frame moved into the other dataset's training split is caught
    row = next(iter(fm.db.select(split="test")))
    al.add_labelled(fm.db.get_atoms(id=row.id, add_additional_information=False), Provenance("x"), "emt", "other")
    for r in al.db.select(frame_hash=row.frame_hash):
        al.db.update(r.id, split="train")
    with pytest.raises(DataError, match="FCC/Melt test set are in the AL model's training data"):
        check_no_leak(al, fm)


def test_fccmelt_generator_is_seeded_and_queues_once(tmp_path, ani_al32):
    settings = FccMeltSettings(**TINY)
    store = DatasetStore(tmp_path / "fm.db")
    oracle = get_oracle("emt")
    added = queue_fccmelt(store, ani_al32, oracle, settings)
    assert added == settings.heatcool_snapshots + settings.liquid_snapshots
    assert queue_fccmelt(store, ani_al32, oracle, settings) == 0  # already generated: nothing new
    with pytest.raises(DataError, match="other settings"):  # never two generations in one store
        queue_fccmelt(store, ani_al32, oracle, settings.model_copy(update={"seed": 5}))
    rows = list(store.db.select(source=SOURCE))
    kinds = [r.data["provenance_extra"]["kind"] for r in rows]
    assert kinds.count("heatcool") == 4 and kinds.count("liquid") == 4
    assert {r.natoms for r in rows} == {32}
    times = [r.sim_time_fs for r in rows if r.trajectory.startswith("heatcool")]
    assert np.allclose(np.diff(times), 50.0)  # equally spaced along the trajectory
    again = DatasetStore(tmp_path / "fm2.db")
    queue_fccmelt(again, ani_al32, oracle, settings)
    first = sorted(r.frame_hash for r in rows)
    assert sorted(r.frame_hash for r in again.db.select()) == first  # same seed, same frames
    conds = liquid_conditions(settings)
    assert all(1000 <= t <= 2500 and 0 <= p <= 10 for t, p in conds)
    assert liquid_conditions(settings.model_copy(update={"seed": 1})) != conds
    assert ani_al32.dtype == torch.float32
