"""Random disordered cells (paper II.B.2) and crystal builders."""

from __future__ import annotations

import numpy as np
import pytest
from ase.neighborlist import neighbor_list

from potforge.errors import StructureError
from potforge.structures import RandomCellSpec, crystal, place_atoms, random_cell, random_cells
from potforge.units import density_g_cm3


@pytest.fixture(scope="module")
def cells():
    return random_cells(RandomCellSpec(), 40, seed=7)


def test_box_and_density_ranges(cells):
    for atoms in cells:
        assert atoms.cell.orthorhombic
        sides = atoms.cell.lengths()
        assert np.all((sides >= 10.5) & (sides <= 17.0))
        rho = density_g_cm3(atoms.get_masses().sum(), atoms.get_volume())
        target = atoms.info["target_density_g_cm3"]
        assert 1.80 <= target <= 4.05
        # the atom count is the target rounded to a whole atom
        assert abs(rho - target) <= density_g_cm3(atoms.get_masses()[0], atoms.get_volume()) / 2 + 1e-12
    # the draws cover the ranges (uniform sampling, 40 cells)
    targets = [a.info["target_density_g_cm3"] for a in cells]
    assert min(targets) < 2.4 and max(targets) > 3.4


def test_minimum_distance_includes_periodic_images(cells):
    for atoms in cells:
        d = neighbor_list("d", atoms, 1.8)
        assert len(d) == 0, f"pair closer than 1.8 Å: {d.min() if len(d) else None}"


def test_small_boxes_count_self_images():
    spec = RandomCellSpec(box_min_A=2.5, box_max_A=3.2, density_min_g_cm3=1.0, density_max_g_cm3=1.5)
    for k in range(10):
        atoms = random_cell(spec, np.random.default_rng(k))
        assert len(neighbor_list("d", atoms, 1.8)) == 0


def test_seeds_reproduce_and_streams_are_independent():
    spec = RandomCellSpec()
    a = random_cells(spec, 3, seed=11)
    b = random_cells(spec, 5, seed=11)
    c = random_cells(spec, 3, seed=12)
    for x, y in zip(a, b[:3], strict=True):
        assert np.array_equal(x.positions, y.positions) and np.array_equal(x.cell.array, y.cell.array)
    assert not np.array_equal(a[0].cell.array, c[0].cell.array)


def test_impossible_density_is_an_error_not_a_hang():
    rng = np.random.default_rng(0)
    with pytest.raises(StructureError, match="could not place"):
        place_atoms(np.array([6.0, 6.0, 6.0]), 200, 1.8, rng, max_attempts_per_atom=50)
    with pytest.raises(ValueError):
        RandomCellSpec(box_min_A=12, box_max_A=10)


@pytest.mark.parametrize("name,n", [("fcc", 1), ("hcp", 2), ("bcc", 1), ("sc", 1), ("diamond", 2)])
def test_crystals_have_the_requested_volume(name, n):
    atoms = crystal(name, 17.3)
    assert len(atoms) == n
    assert atoms.get_volume() / len(atoms) == pytest.approx(17.3, rel=1e-12)
