"""HIP-NN ensembles (float64): forces are -dE/dr and stress dE/d(strain)/V by finite
differences, energies invariant under rotation, translation, permutation and supercell
replication (also of a box smaller than the cutoff, where images beyond the 27 nearest cells
interact), independent members, and model files that reload to the same numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from scipy.spatial.transform import Rotation
from tests.conftest import al_cluster, fcc_al, sheared_cell

from potforge.model import PotforgeCalculator, atoms_to_batch, load_model, save_model
from potforge.model.hipnn import HipnnEnsemble, HipnnParams, build_hipnn


def small_cell(seed: int):
    """A random Al cell of 6-7 Å (smaller than the 7 Å cutoff), as the demo campaign draws them."""
    from potforge.structures import RandomCellSpec, random_cell

    spec = RandomCellSpec(box_min_A=6.0, box_max_A=7.0, density_min_g_cm3=2.4, density_max_g_cm3=2.9)
    return random_cell(spec, np.random.default_rng(seed))


def make_model(tensor_order: int = 0, n_members: int = 2, seed: int = 5) -> HipnnEnsemble:
    # energy_decay 1: the interaction levels' read-outs at full strength, so that the forces
    # checked are of order 0.1-1 eV/Å, not the damped ones of a fresh training start
    return build_hipnn(("Al",), n_members, [-3.7], seed, tensor_order=tensor_order, energy_decay=1.0).to(torch.float64)


@pytest.fixture(scope="module", params=[0, 1], ids=["hipnn", "hipnn-ts"])
def model(request):
    return make_model(request.param)


@pytest.fixture(scope="module")
def calc(model):
    return PotforgeCalculator(model)


def with_calc(atoms, calc):
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms


def structures():
    fcc = fcc_al()  # 4 atoms, a 4.05 Å box: every atom sees images several cells away
    fcc.rattle(0.05, seed=7)
    return {"fcc4_smaller_than_cutoff": fcc, "random_small": small_cell(3), "cluster": al_cluster()}


@pytest.mark.parametrize("name", ["fcc4_smaller_than_cutoff", "random_small", "cluster"])
def test_forces_are_minus_energy_gradient(name, calc):
    atoms = with_calc(structures()[name], calc)
    forces = atoms.get_forces()
    assert np.abs(forces).max() > 0.05  # a test of real forces, not of zeros
    idx = list(range(0, len(atoms), max(1, len(atoms) // 4)))
    numeric = calculate_numerical_forces(atoms, eps=1e-5, iatoms=idx)  # HIP-NN-TS: sharp cusp
    np.testing.assert_allclose(forces[idx], numeric, atol=1e-6)


@pytest.mark.parametrize("name", ["fcc4_smaller_than_cutoff", "random_small"])
def test_stress_is_strain_derivative(name, calc):
    atoms = with_calc(structures()[name], calc)
    stress = atoms.get_stress(voigt=True)
    assert np.abs(stress).max() > 1e-3
    numeric = calculate_numerical_stress(atoms, eps=1e-5, voigt=True)
    np.testing.assert_allclose(stress, numeric, atol=1e-7)


def test_member_forces_are_each_members_gradient(model):
    """Member m's forces are the derivative of member m's energy (not of the mean)."""
    atoms = small_cell(4)
    batch = atoms_to_batch([atoms], model)
    pred = model.evaluate(batch, member_forces=True, stress=True)
    assert not torch.allclose(pred.member_forces[0], pred.member_forces[1])
    h, i = 1e-5, 2
    for d in range(3):
        plus, minus = batch.positions.clone(), batch.positions.clone()
        plus[i, d] += h
        minus[i, d] -= h
        ep = model.evaluate(type(batch)(plus, batch.species, batch.system, batch.cells, batch.pbc), forces=False)
        em = model.evaluate(type(batch)(minus, batch.species, batch.system, batch.cells, batch.pbc), forces=False)
        fd = -(ep.member_energies - em.member_energies)[:, 0] / (2 * h)
        torch.testing.assert_close(pred.member_forces[:, i, d], fd, atol=1e-6, rtol=0)
    torch.testing.assert_close(pred.forces, pred.member_forces.mean(0))
    torch.testing.assert_close(pred.stress, pred.member_stress.mean(0))
    spread = torch.sqrt(((pred.member_forces - pred.forces) ** 2).sum(-1).sum(0) / (model.n_members - 1))
    torch.testing.assert_close(pred.force_std, spread)
    # driven by member 1 alone (one-hot weights): that member's energy, forces (checked above
    # against its finite differences) and stress; the spread is unchanged
    weights = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    for mode in ({"forces": True}, {"member_forces": True}):
        driven = model.evaluate(batch, stress=True, weights=weights, **mode)
        torch.testing.assert_close(driven.energy[0], pred.member_energies[1, 0])
        torch.testing.assert_close(driven.forces, pred.member_forces[1])
        torch.testing.assert_close(driven.stress, pred.member_stress[1])
    torch.testing.assert_close(driven.force_std, pred.force_std)


def test_rotation_and_translation_invariance(calc):
    atoms = with_calc(sheared_cell(), calc)
    e0, f0, s0 = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False)
    rot = Rotation.from_euler("zyx", [0.7, -0.4, 1.1]).as_matrix()
    moved = atoms.copy()
    moved.set_cell(atoms.cell.array @ rot.T, scale_atoms=True)
    moved.positions += np.array([0.31, -1.7, 2.2])
    moved.calc = calc
    assert moved.get_potential_energy() == pytest.approx(e0, abs=1e-9)
    np.testing.assert_allclose(moved.get_forces(), f0 @ rot.T, atol=1e-9)
    np.testing.assert_allclose(moved.get_stress(voigt=False), rot @ s0 @ rot.T, atol=1e-10)


def test_permutation_invariance(calc):
    atoms = with_calc(small_cell(5), calc)
    e0, f0 = atoms.get_potential_energy(), atoms.get_forces()
    perm = np.random.default_rng(0).permutation(len(atoms))
    shuffled = with_calc(atoms[perm], calc)
    assert shuffled.get_potential_energy() == pytest.approx(e0, abs=1e-9)
    np.testing.assert_allclose(shuffled.get_forces(), f0[perm], atol=1e-10)


@pytest.mark.parametrize("name", ["fcc4_smaller_than_cutoff", "random_small"])
def test_supercell_energy_per_atom(name, calc):
    """A cell and its 2x2x2 supercell: same energy per atom, same forces on the same atoms
    (also for a 4 Å box, where a 7 Å cutoff reaches images two cells away and the two
    interaction layers pass messages through images)."""
    atoms = with_calc(structures()[name], calc)
    big = with_calc(atoms.repeat((2, 2, 2)), calc)
    assert big.get_potential_energy() / len(big) == pytest.approx(atoms.get_potential_energy() / len(atoms), abs=1e-9)
    np.testing.assert_allclose(big.get_forces()[: len(atoms)], atoms.get_forces(), atol=1e-9)
    np.testing.assert_allclose(big.get_stress(), atoms.get_stress(), atol=1e-10)


def test_batch_equals_individual_and_longer_graph(model):
    """Systems evaluated together = one by one; a neighbour graph built with a longer cutoff
    (as MD's, with its skin) gives the same numbers."""
    frames = [structures()["fcc4_smaller_than_cutoff"], small_cell(6), al_cluster()]
    together = model.evaluate(atoms_to_batch(frames, model), member_forces=True)
    start = 0
    for atoms in frames:
        alone = model.evaluate(atoms_to_batch([atoms], model), member_forces=True)
        k = frames.index(atoms)
        torch.testing.assert_close(together.member_energies[:, k], alone.member_energies[:, 0], atol=1e-9, rtol=0)
        torch.testing.assert_close(together.forces[start : start + len(atoms)], alone.forces, atol=1e-10, rtol=0)
        start += len(atoms)
    from potforge.model import build_graph

    batch = atoms_to_batch(frames, model)
    skin = model.evaluate(batch, member_forces=True, graph=build_graph(batch, model.cutoff_A + 1.0, 1))
    torch.testing.assert_close(skin.member_energies, together.member_energies, atol=1e-9, rtol=0)
    torch.testing.assert_close(skin.member_forces, together.member_forces, atol=1e-10, rtol=0)


def test_members_are_independently_initialised():
    model = build_hipnn(("Al",), 8, [0.0], seed=3)
    weights = next(model.networks.parameters())  # (8, ...)
    assert weights.shape[0] == 8
    flat = weights.reshape(8, -1)
    assert all(not torch.equal(flat[a], flat[b]) for a in range(8) for b in range(a))
    again = build_hipnn(("Al",), 8, [0.0], seed=3)
    assert all(torch.equal(p, q) for p, q in zip(model.networks.parameters(), again.networks.parameters(), strict=True))
    pred = model.to(torch.float64).evaluate(atoms_to_batch([small_cell(1)], model), forces=False)
    assert len(set(pred.member_energies[:, 0].tolist())) == 8


@pytest.mark.parametrize("tensor_order", [0, 1])
def test_saved_model_reloads_to_the_same_numbers(tmp_path, tensor_order):
    model = make_model(tensor_order, n_members=3, seed=11)
    model.self_energies_eV = [-3.712345678901]
    model.metadata = {"note": "round trip"}
    path = save_model(model, tmp_path / "m.pt")
    # the file is tensors and a JSON string only: loadable without unpickling code objects
    blob = torch.load(path, weights_only=True)
    assert set(blob) == {"hyperparameters", "tensors"}
    back = load_model(path, dtype=torch.float64)
    assert isinstance(back, HipnnEnsemble)
    assert back.params == model.params and back.n_members == 3 and back.metadata["note"] == "round trip"
    frames = [small_cell(8), structures()["fcc4_smaller_than_cutoff"]]
    a = model.evaluate(atoms_to_batch(frames, model), member_forces=True, stress=True)
    b = back.evaluate(atoms_to_batch(frames, back), member_forces=True, stress=True)
    assert torch.equal(a.member_energies, b.member_energies)
    assert torch.equal(a.member_forces, b.member_forces)
    assert torch.equal(a.member_stress, b.member_stress)
    # the ASE calculator opens the file by path and picks the architecture from it
    atoms = frames[0].copy()
    atoms.calc = PotforgeCalculator(str(path))
    assert atoms.get_potential_energy() == pytest.approx(float(a.energy[0]), abs=1e-9)


def test_model_file_with_wrong_shapes_is_refused(tmp_path):
    from potforge.errors import ModelFileError

    model = make_model()
    path = save_model(model, tmp_path / "m.pt")
    blob = torch.load(path, weights_only=True)
    import json

    hyper = json.loads(blob["hyperparameters"])
    hyper["hipnn"]["n_features"] = 12
    torch.save({"hyperparameters": json.dumps(hyper), "tensors": blob["tensors"]}, tmp_path / "bad.pt")
    with pytest.raises(ModelFileError, match="wrong shape"):
        load_model(tmp_path / "bad.pt")


def test_params_round_trip():
    p = HipnnParams(elements=("Al", "Cu"), n_features=8, tensor_order=1)
    assert HipnnParams.from_dict(p.to_dict()) == p


def test_kim_export_refuses_a_hipnn_model_in_one_line(tmp_path):
    from potforge.export.kim import KimExportError, export_kim

    path = save_model(make_model(), tmp_path / "m.pt")
    with pytest.raises(KimExportError, match="ANI models; this is a hipnn model"):
        export_kim(path, tmp_path / "kim")
