"""potforge reproduces TorchANI 2.9 on the published ANI-Al weights (float64): this pins the AEV
definition, the NeuroChem import and the Hartree -> eV conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from potforge.model import atoms_to_batch
from potforge.model.io import PUBLISHED_MODELS
from potforge.units import HARTREE_EV

torchani = pytest.importorskip("torchani")


@pytest.fixture(scope="module")
def torchani_model():
    from torchani.arch import ANI
    from torchani.neurochem import load_aev_computer_and_symbols, load_ensemble, load_sae

    info = PUBLISHED_MODELS["ani-al"]
    root = info.parent / "model-Al-75"
    aev, symbols = load_aev_computer_and_symbols(root / "rAl-7.0R_32-5.0A_a8-8.params")
    ensemble = load_ensemble(symbols, Path(root / "train"), 8)
    sae = load_sae(root / "sae_linfit.dat")
    return ANI(symbols, aev, ensemble, sae, periodic_table_index=True).double()


def torchani_energy_forces(model, atoms):
    species = torch.tensor(atoms.numbers).unsqueeze(0)
    pos = torch.tensor(atoms.positions, dtype=torch.float64).unsqueeze(0).requires_grad_(True)
    if atoms.pbc.any():
        out = model((species, pos), cell=torch.tensor(atoms.cell.array), pbc=torch.tensor(atoms.pbc))
    else:
        out = model((species, pos))
    energy = out.energies.sum()
    forces = -torch.autograd.grad(energy, pos)[0][0]
    return float(energy.detach()) * HARTREE_EV, forces.numpy() * HARTREE_EV


NAMES = [
    "fcc4_smaller_than_cutoff",
    "fcc256_rattled",
    "random_cell_a",
    "random_cell_b",
    "sheared_triclinic",
    "cluster_nonperiodic",
]


@pytest.mark.parametrize("name", NAMES)
def test_energy_and_forces_match_torchani(name, structures, ani_al64, torchani_model):
    atoms = structures[name]
    e_ref, f_ref = torchani_energy_forces(torchani_model, atoms)
    pred = ani_al64.evaluate(atoms_to_batch([atoms], ani_al64), forces=True)
    assert abs(float(pred.energy[0]) - e_ref) / len(atoms) <= 1e-12
    assert np.abs(pred.forces.numpy() - f_ref).max() <= 5e-8  # measured: up to 1.5e-8


def test_both_aev_backends_match_torchani(structures, ani_al64, torchani_model):
    """The pure-PyTorch fallback (GPUs, no compiler) is held to the same standard."""
    atoms = structures["random_cell_a"]
    e_ref, f_ref = torchani_energy_forces(torchani_model, atoms)
    ani_al64.aev.backend = "torch"
    try:
        op = ani_al64.aev_operator(atoms_to_batch([atoms], ani_al64))[2]
        assert op.backend == "torch"  # the switch reaches the operator
        pred = ani_al64.evaluate(atoms_to_batch([atoms], ani_al64), forces=True)
    finally:
        ani_al64.aev.backend = "auto"
    assert abs(float(pred.energy[0]) - e_ref) / len(atoms) <= 1e-12
    assert np.abs(pred.forces.numpy() - f_ref).max() <= 5e-8  # measured: up to 1.5e-8
