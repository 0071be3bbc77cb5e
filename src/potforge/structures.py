"""Where structures come from: random disordered cells (paper II.B.2) and crystal builders.

Random disordered cells follow the paper exactly: each side of an orthorhombic box uniform in
[10.5, 17.0] Å, a target density uniform in [1.80, 4.05] g/cm³, atoms placed uniformly at random,
a placement closer than r_min = 1.8 Å to any atom (periodic images included) rejected, until the
target density is reached. Every range is configurable and every draw comes from a seeded
generator, so a seed names a structure.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.data import atomic_masses, atomic_numbers
from pydantic import BaseModel, ConfigDict, Field, model_validator

from potforge.errors import StructureError
from potforge.units import volume_for_density_A3


class RandomCellSpec(BaseModel):
    """Ranges of the paper's random disordered cells (II.B.2). Lengths Å, densities g/cm³."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    box_min_A: float = Field(10.5, gt=0, description="shortest box side, Å")
    box_max_A: float = Field(17.0, gt=0, description="longest box side, Å")
    density_min_g_cm3: float = Field(1.80, gt=0, description="lowest target density, g/cm³")
    density_max_g_cm3: float = Field(4.05, gt=0, description="highest target density, g/cm³")
    r_min_A: float = Field(1.8, ge=0, description="minimum interatomic distance, Å (periodic images included)")
    composition: dict[str, float] = Field(default_factory=lambda: {"Al": 1.0}, description="element fractions")
    max_attempts_per_atom: int = Field(2000, gt=0, description="rejected placements tolerated per atom")

    @model_validator(mode="after")
    def _check(self) -> RandomCellSpec:
        if self.box_max_A < self.box_min_A:
            raise ValueError("box_max_A must be >= box_min_A")
        if self.density_max_g_cm3 < self.density_min_g_cm3:
            raise ValueError("density_max_g_cm3 must be >= density_min_g_cm3")
        unknown = [el for el in self.composition if el not in atomic_numbers]
        if unknown:
            raise ValueError(f"unknown element(s) in composition: {unknown}")
        if not self.composition or any(v < 0 for v in self.composition.values()) or sum(self.composition.values()) <= 0:
            raise ValueError("composition needs non-negative fractions with a positive sum")
        return self


def _mean_mass(composition: Mapping[str, float]) -> float:
    total = sum(composition.values())
    return sum(atomic_masses[atomic_numbers[el]] * w / total for el, w in composition.items())


def random_cell(spec: RandomCellSpec, rng: np.random.Generator) -> Atoms:
    """One random disordered cell drawn from ``spec`` with ``rng``.

    Raises :class:`StructureError` when the target density cannot be reached within
    ``max_attempts_per_atom`` rejected placements per atom (too dense for r_min), not a hang.
    """
    lengths = rng.uniform(spec.box_min_A, spec.box_max_A, size=3)
    density = rng.uniform(spec.density_min_g_cm3, spec.density_max_g_cm3)
    volume = float(np.prod(lengths))
    n_atoms = max(1, round(volume / volume_for_density_A3(_mean_mass(spec.composition), density)))
    elements = list(spec.composition)
    weights = np.array([spec.composition[e] for e in elements], dtype=float)
    symbols = list(rng.choice(elements, size=n_atoms, p=weights / weights.sum()))
    positions = place_atoms(lengths, n_atoms, spec.r_min_A, rng, spec.max_attempts_per_atom)
    atoms = Atoms(symbols=symbols, positions=positions, cell=np.diag(lengths), pbc=True)
    atoms.info["target_density_g_cm3"] = float(density)
    return atoms


def place_atoms(
    lengths: np.ndarray, n_atoms: int, r_min: float, rng: np.random.Generator, max_attempts_per_atom: int = 2000
) -> np.ndarray:
    """Random sequential placement of ``n_atoms`` in an orthorhombic periodic box, no two
    closer than ``r_min`` Å including periodic images. Positions (n_atoms, 3) Å."""
    lengths = np.asarray(lengths, dtype=float)
    # the minimum-image convention sees every image closer than half a box; a box shorter than
    # 2 r_min would hide an atom's own image, so such boxes are checked against 27 images
    shifts = (
        np.zeros((1, 3))
        if np.all(lengths > 2 * r_min)
        else np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=float)
    )
    if np.any(lengths <= r_min):
        raise StructureError(f"box sides {lengths} must exceed r_min = {r_min} Å")
    pos = np.empty((n_atoms, 3))
    placed, attempts = 0, 0
    budget = max_attempts_per_atom * n_atoms
    r2 = r_min * r_min
    # candidates are drawn in blocks: a numpy call per candidate would dominate the run time
    while placed < n_atoms:
        trial = rng.uniform(0.0, 1.0, size=(64, 3)) * lengths
        for t in trial:
            attempts += 1
            if attempts > budget:
                raise StructureError(
                    f"could not place {n_atoms} atoms {r_min} Å apart in a {lengths.round(2)} Å box after "
                    f"{budget} attempts: lower the density or r_min"
                )
            if placed:
                d = pos[:placed] - t
                d -= lengths * np.round(d / lengths)
                if len(shifts) > 1:
                    d = (d[:, None, :] + shifts[None] * lengths).reshape(-1, 3)
                if np.einsum("ij,ij->i", d, d).min() < r2:
                    continue
            pos[placed] = t
            placed += 1
            if placed == n_atoms:
                break
    return pos


def random_cells(spec: RandomCellSpec, n: int, seed: int) -> list[Atoms]:
    """``n`` random cells; cell k is drawn from its own stream (seed, k), so any one cell can be
    regenerated alone and adding cells never changes the earlier ones."""
    return [random_cell(spec, np.random.default_rng([seed, k])) for k in range(n)]


def crystal(structure: str, volume_per_atom_A3: float, element: str = "Al", c_over_a: float | None = None) -> Atoms:
    """A primitive crystal (fcc, hcp, bcc, sc, diamond) of ``element`` at a volume per atom (Å³).

    hcp uses the ideal c/a = sqrt(8/3) unless ``c_over_a`` is given.
    """
    atoms_per_cubic = {"fcc": 4, "bcc": 2, "sc": 1, "diamond": 8}
    if structure in atoms_per_cubic:
        a = (volume_per_atom_A3 * atoms_per_cubic[structure]) ** (1 / 3)
        return bulk(element, structure, a=a)
    if structure == "hcp":
        ratio = c_over_a if c_over_a is not None else float(np.sqrt(8 / 3))
        # hcp cell volume = (sqrt(3)/2) a^2 c with 2 atoms
        a = (2 * volume_per_atom_A3 / (np.sqrt(3) / 2 * ratio)) ** (1 / 3)
        return bulk(element, "hcp", a=a, c=ratio * a)
    raise StructureError(f"unknown crystal structure {structure!r}; use fcc, hcp, bcc, sc or diamond")
