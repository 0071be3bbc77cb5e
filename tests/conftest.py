"""Shared fixtures: the published ANI-Al ensemble (float64), TorchANI's version of it, and
structures of every kind the model must handle."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def ani_al64():
    from potforge.model import load_model

    return load_model("ani-al", dtype=torch.float64)


@pytest.fixture(scope="session")
def ani_al32():
    from potforge.model import load_model

    return load_model("ani-al", dtype=torch.float32)


def fcc_al(a: float = 4.05, reps=(1, 1, 1), rattle: float = 0.0, seed: int = 0) -> Atoms:
    atoms = bulk("Al", "fcc", a=a, cubic=True).repeat(reps)
    if rattle:
        atoms.rattle(rattle, seed=seed)
    return atoms


def random_al_cell(seed: int, box=(7.0, 9.0)) -> Atoms:
    from potforge.structures import RandomCellSpec, random_cell

    spec = RandomCellSpec(box_min_A=box[0], box_max_A=box[1])
    return random_cell(spec, np.random.default_rng(seed))


def sheared_cell(seed: int = 3) -> Atoms:
    atoms = fcc_al(reps=(2, 2, 2), rattle=0.08, seed=seed)
    cell = atoms.cell.array.copy()
    cell[1] += 0.35 * cell[0]
    cell[2] += 0.2 * cell[0] - 0.25 * cell[1]
    atoms.set_cell(cell, scale_atoms=True)
    return atoms


def al_cluster(seed: int = 4) -> Atoms:
    from ase.cluster import Icosahedron

    atoms = Icosahedron("Al", 3, latticeconstant=4.05)
    atoms.rattle(0.05, seed=seed)
    atoms.pbc = False
    atoms.cell = np.zeros((3, 3))
    return atoms


@pytest.fixture(scope="session")
def structures() -> dict[str, Atoms]:
    """Every geometry class the model must handle, by name."""
    return {
        "fcc4_smaller_than_cutoff": fcc_al(),
        "fcc256_rattled": fcc_al(reps=(4, 4, 4), rattle=0.05, seed=1),
        "random_cell_a": random_al_cell(11, box=(10.5, 17.0)),
        "random_cell_b": random_al_cell(12, box=(10.5, 17.0)),
        "sheared_triclinic": sheared_cell(),
        "cluster_nonperiodic": al_cluster(),
    }
