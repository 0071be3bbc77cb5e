"""Implausible labels are quarantined as their own kind, kept, re-admitted when the policy
allows, never trained on; a campaign that is not learning says so."""

from __future__ import annotations

import numpy as np
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from potforge.data import DatasetStore, Provenance
from potforge.data.plausibility import PlausibilityPolicy, apply_policy


def _store_with_labels(tmp_path, energies_per_atom, fmax):
    store = DatasetStore(tmp_path / "d.db")
    for k, (e, f) in enumerate(zip(energies_per_atom, fmax, strict=True)):
        atoms = bulk("Al", "fcc", a=4.0 + 0.01 * k, cubic=True)
        forces = np.zeros((4, 3))
        forces[0, 0], forces[1, 0] = f, -f
        atoms.calc = SinglePointCalculator(atoms, energy=4 * e, forces=forces)
        store.add_labelled(atoms, Provenance(source="random", trajectory=f"r{k}"), "stiff", "ostiff")
    return store


def test_absurd_labels_are_kept_but_not_trained_on_and_a_looser_policy_readmits_them(tmp_path):
    # twenty ordinary labels near -3.4 eV/atom, one at +159 eV/atom, one with 5,000 eV/Å forces
    energies = [-3.4 + 0.05 * k for k in range(20)] + [159.0, -3.0]
    fmax = [2.0] * 20 + [3.0, 5000.0]
    store = _store_with_labels(tmp_path, energies, fmax)
    report = apply_policy(store, "ostiff", PlausibilityPolicy())
    assert report.implausible == report.newly_implausible == 2 and report.labels == 22
    assert store.count(status="implausible") == 2 and store.count(status="ok") == 20
    assert len(list(store.frames())) == 20  # training reads ok labels only
    info = store.info()
    assert info["status"]["implausible"] == 2 and info["failures"] == {"implausible:implausible": 2}
    assert any("above the reference" in e for e in info["failure_examples"])
    assert any("5e+03 eV/Å" in e for e in info["failure_examples"])
    assert store.oracle_calls("ostiff") == 22  # an implausible label was still a calculation
    # the same labels under a policy without a force bound: the forceful one comes back, nothing is lost
    again = apply_policy(store, "ostiff", PlausibilityPolicy(max_force_eV_per_A=None))
    assert again.readmitted == 1 and store.count(status="ok") == 21 and store.count() == 22


def test_ordinary_random_cells_are_plausible(tmp_path):
    """EMT's random cells of the demo sit 0.8-1.8 eV/atom above fcc with forces below 11 eV/Å."""
    store = _store_with_labels(tmp_path, [*np.linspace(0.83, 1.84, 30), 0.14], [10.8] * 31)
    assert apply_policy(store, "ostiff", PlausibilityPolicy()).implausible == 0


def test_a_campaign_that_is_not_learning_says_so():
    from potforge.campaign import not_learning
    from potforge.config import parse_config

    cfg = parse_config({"sampler": {"timestep_fs": 2.0}})
    flat = [{"stage": f"g{g:03d}:train", "test": {"force_rmse_eV_per_A": 9.0 + 0.1 * g}} for g in range(3)]
    flat += [{"stage": f"g{g:03d}:sample", "median_time_to_flag_fs": 20.0} for g in range(2)]
    assert "not learning" in not_learning(cfg, flat, {"median_time_to_flag_fs": 20.0})[0]
    learning = [r if "train" not in r["stage"] else {**r, "test": {"force_rmse_eV_per_A": 9.0 / (1 + i)}}
                for i, r in enumerate(flat)]  # fmt: skip
    assert not_learning(cfg, learning, {"median_time_to_flag_fs": 20.0}) == []
    assert not_learning(cfg, flat, {"median_time_to_flag_fs": 5000.0}) == []  # trajectories run: fine
