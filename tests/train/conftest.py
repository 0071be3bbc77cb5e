"""Small EMT-labelled datasets for training tests (computed in-process: EMT takes milliseconds)."""

from __future__ import annotations

import numpy as np
import pytest

from potforge.oracle import get_oracle
from potforge.structures import RandomCellSpec, random_cell
from potforge.train import FrameSet


def emt_frames(n: int, seed: int, box=(6.0, 7.0)) -> FrameSet:
    oracle = get_oracle("emt")
    spec = RandomCellSpec(box_min_A=box[0], box_max_A=box[1], density_min_g_cm3=2.2, density_max_g_cm3=3.0)
    frames = []
    for k in range(n):
        atoms = random_cell(spec, np.random.default_rng([seed, k]))
        label = oracle.compute(atoms, "/tmp")
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms.calc = SinglePointCalculator(atoms, energy=label.energy, forces=label.forces, stress=label.stress)
        frames.append(atoms)
    return FrameSet.from_atoms(frames, ("Al",))


@pytest.fixture(scope="session")
def tiny_train():
    return emt_frames(6, seed=1)


@pytest.fixture(scope="session")
def tiny_heldout():
    return emt_frames(6, seed=2)
