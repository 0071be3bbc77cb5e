"""Physics of the model (float64): forces are -dE/dr, stress is dE/d(strain)/V, and energies
are invariant under rotation, translation, permutation and supercell replication."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from scipy.spatial.transform import Rotation

from potforge.model import PotforgeCalculator, atoms_to_batch


@pytest.fixture(scope="module")
def calc(ani_al64):
    return PotforgeCalculator(ani_al64)


def with_calc(atoms, calc):
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms


@pytest.mark.parametrize(
    "name", ["random_cell_b", "sheared_triclinic", "cluster_nonperiodic", "fcc4_smaller_than_cutoff"]
)
def test_forces_are_minus_energy_gradient(name, structures, calc):
    atoms = with_calc(structures[name], calc)
    if name == "fcc4_smaller_than_cutoff":
        atoms.rattle(0.05, seed=7)
    forces = atoms.get_forces()
    idx = range(0, len(atoms), max(1, len(atoms) // 6))
    numeric = calculate_numerical_forces(atoms, eps=1e-4, iatoms=idx)
    np.testing.assert_allclose(forces[list(idx)], numeric, atol=2e-6)


@pytest.mark.parametrize("name", ["random_cell_b", "sheared_triclinic", "fcc4_smaller_than_cutoff"])
def test_stress_is_strain_derivative(name, structures, calc):
    atoms = with_calc(structures[name], calc)
    stress = atoms.get_stress(voigt=True)
    numeric = calculate_numerical_stress(atoms, eps=1e-5, voigt=True)
    np.testing.assert_allclose(stress, numeric, atol=1e-7)


def test_rotation_and_translation_invariance(structures, calc):
    atoms = with_calc(structures["sheared_triclinic"], calc)
    e0, f0, s0 = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False)
    rot = Rotation.from_euler("zyx", [0.7, -0.4, 1.1]).as_matrix()
    moved = atoms.copy()
    moved.set_cell(atoms.cell.array @ rot.T, scale_atoms=True)
    moved.positions += np.array([0.31, -1.7, 2.2])
    moved.calc = calc
    assert moved.get_potential_energy() == pytest.approx(e0, abs=1e-9)
    np.testing.assert_allclose(moved.get_forces(), f0 @ rot.T, atol=1e-9)
    np.testing.assert_allclose(moved.get_stress(voigt=False), rot @ s0 @ rot.T, atol=1e-10)


def test_permutation_invariance(structures, calc):
    atoms = with_calc(structures["random_cell_a"], calc)
    e0, f0 = atoms.get_potential_energy(), atoms.get_forces()
    perm = np.random.default_rng(0).permutation(len(atoms))
    shuffled = with_calc(atoms[perm], calc)
    assert shuffled.get_potential_energy() == pytest.approx(e0, abs=1e-9)
    np.testing.assert_allclose(shuffled.get_forces(), f0[perm], atol=1e-10)


@pytest.mark.parametrize("name", ["fcc4_smaller_than_cutoff", "sheared_triclinic"])
def test_supercell_energy_per_atom(name, structures, calc):
    atoms = with_calc(structures[name], calc)
    big = with_calc(atoms.repeat((2, 2, 2)), calc)
    assert big.get_potential_energy() / len(big) == pytest.approx(atoms.get_potential_energy() / len(atoms), abs=1e-9)
    np.testing.assert_allclose(big.get_forces()[: len(atoms)], atoms.get_forces(), atol=1e-9)


def test_batch_equals_individual(structures, ani_al64):
    frames = [
        structures[k] for k in ["fcc4_smaller_than_cutoff", "random_cell_a", "cluster_nonperiodic", "sheared_triclinic"]
    ]
    together = ani_al64.evaluate(atoms_to_batch(frames, ani_al64), member_forces=True)
    offset = 0
    for k, atoms in enumerate(frames):
        alone = ani_al64.evaluate(atoms_to_batch([atoms], ani_al64), member_forces=True)
        n = len(atoms)
        np.testing.assert_allclose(together.member_energies[:, k], alone.member_energies[:, 0], rtol=0, atol=1e-9)
        np.testing.assert_allclose(together.member_forces[:, offset : offset + n], alone.member_forces, atol=1e-10)
        np.testing.assert_allclose(together.force_std[offset : offset + n], alone.force_std, atol=1e-10)
        offset += n


def test_mean_forces_equal_mean_of_member_forces(structures, ani_al64):
    batch = atoms_to_batch([structures["random_cell_b"]], ani_al64)
    members = ani_al64.evaluate(batch, member_forces=True, stress=True)
    mean_only = ani_al64.evaluate(batch, member_forces=False, stress=True)
    np.testing.assert_allclose(mean_only.forces, members.member_forces.mean(0), atol=1e-10)
    np.testing.assert_allclose(mean_only.stress, members.member_stress.mean(0), atol=1e-12)
    # force_std is the spread of member force vectors, ddof = 1
    dev = members.member_forces - members.member_forces.mean(0)
    expected = np.sqrt((dev.numpy() ** 2).sum(-1).sum(0) / (ani_al64.n_members - 1))
    np.testing.assert_allclose(members.force_std, expected, rtol=1e-12)
    assert members.energy_std[0] == pytest.approx(float(members.member_energies[:, 0].std()), rel=1e-12)


def test_float32_close_to_float64(structures, ani_al32, ani_al64):
    atoms = structures["fcc256_rattled"]
    p32 = ani_al32.evaluate(atoms_to_batch([atoms], ani_al32))
    p64 = ani_al64.evaluate(atoms_to_batch([atoms], ani_al64))
    assert abs(float(p32.energy[0] - p64.energy[0])) / len(atoms) < 2e-5
    assert float((p32.forces.double() - p64.forces).abs().max()) < 2e-4


def test_member_weights_give_that_members_energy_forces_and_stress(structures, ani_al64):
    """A trajectory driven by one member moves on that member's surface: with one-hot weights the
    energy is the member's, the forces minus its gradient (finite differences of that member's
    energy) and the stress its strain derivative; the spread stays the whole ensemble's."""
    frames = [structures["random_cell_b"], structures["sheared_triclinic"]]
    batch = atoms_to_batch(frames, ani_al64)
    m = ani_al64.n_members
    weights = torch.zeros(m, 2, dtype=torch.float64)
    weights[3, 0] = 1.0  # system 0: member 3 alone; system 1: the mean
    weights[:, 1] = 1.0 / m
    full = ani_al64.evaluate(batch, member_forces=True, stress=True)
    driven = ani_al64.evaluate(batch, forces=True, stress=True, weights=weights)
    driven_members = ani_al64.evaluate(batch, member_forces=True, stress=True, weights=weights)
    n0 = len(frames[0])
    assert float(driven.energy[0]) == pytest.approx(float(full.member_energies[3, 0]), abs=1e-9)
    assert float(driven.energy[1]) == pytest.approx(float(full.energy[1]), abs=1e-9)
    for pred in (driven, driven_members):
        np.testing.assert_allclose(pred.forces[:n0], full.member_forces[3, :n0], atol=1e-10)
        np.testing.assert_allclose(pred.forces[n0:], full.forces[n0:], atol=1e-10)
        np.testing.assert_allclose(pred.stress[0], full.member_stress[3, 0], atol=1e-12)
    np.testing.assert_allclose(driven_members.force_std, full.force_std, atol=1e-12)
    # and against finite differences of member 3's energy alone
    atoms = frames[0]

    def member3(positions):
        moved = atoms.copy()
        moved.positions = positions
        return float(ani_al64.evaluate(atoms_to_batch([moved], ani_al64), forces=False).member_energies[3, 0])

    h = 1e-4
    for i, a in [(0, 0), (5, 2), (n0 - 1, 1)]:
        plus, minus = atoms.positions.copy(), atoms.positions.copy()
        plus[i, a] += h
        minus[i, a] -= h
        fd = -(member3(plus) - member3(minus)) / (2 * h)
        assert float(driven.forces[i, a]) == pytest.approx(fd, abs=2e-6)
    assert float(full.member_forces[:, :n0].std(0).max()) > 1e-3  # the members do differ here


def test_member_weights_must_be_weights(structures, ani_al64):
    batch = atoms_to_batch([structures["random_cell_b"]], ani_al64)
    with pytest.raises(ValueError, match="sum to 1"):
        ani_al64.evaluate(batch, weights=torch.full((ani_al64.n_members, 1), 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        ani_al64.evaluate(batch, weights=torch.ones(1, 1, dtype=torch.float64))
