"""Batched Langevin dynamics of many replicas (cells of different sizes) in one model call.

State is data: each :class:`Replica` holds its positions, velocities, cell, clock, schedules
and random stream; the integrator (BAOAB, Leimkuhler & Matthews) advances a list of replicas
together, evaluating the model once per step for all of them. Replicas are independent: each
draws noise from its own generator, so removing or adding one never changes another's path.

Units: positions Å, velocities Å/fs, masses amu, forces eV/Å, time fs, temperature K.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from ase import Atoms, units

from potforge.model.ensemble import ANIEnsemble, Prediction
from potforge.model.neighbors import AtomsBatch
from potforge.sample.schedule import StrainSchedule, TemperatureSchedule

#: (eV/Å)/amu in Å/fs².
ACCEL = float(units.fs**2)
#: amu (Å/fs)² in eV.
MV2_EV = 1.0 / ACCEL
KB = float(units.kB)


@dataclass
class Replica:
    """One trajectory. ``last_sane`` is the last configuration that passed the stability checks."""

    traj_id: str
    numbers: np.ndarray
    species: torch.Tensor
    masses: torch.Tensor
    positions: torch.Tensor
    velocities: torch.Tensor
    cell0: torch.Tensor
    cell: torch.Tensor
    schedule: TemperatureSchedule
    strain: StrainSchedule | None
    rng: torch.Generator
    t_fs: float = 0.0
    steps: int = 0
    forces: torch.Tensor | None = None
    last_sane: tuple[torch.Tensor, torch.Tensor, float] | None = None
    info: dict = field(default_factory=dict)

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    def temperature_K(self) -> float:
        """Instantaneous kinetic temperature (3N degrees of freedom)."""
        ke = 0.5 * float((self.masses[:, None] * self.velocities**2).sum()) * MV2_EV
        return 2 * ke / (3 * self.n_atoms * KB)

    def to_atoms(self, sane: bool = False) -> Atoms:
        pos, cell, _ = self.last_sane if sane and self.last_sane else (self.positions, self.cell, self.t_fs)
        atoms = Atoms(numbers=self.numbers, positions=pos.double().numpy(), cell=cell.double().numpy(), pbc=True)
        atoms.wrap()
        return atoms


def new_replica(
    traj_id: str,
    atoms: Atoms,
    model: ANIEnsemble,
    schedule: TemperatureSchedule,
    strain: StrainSchedule | None,
    seed: tuple[int, ...],
) -> Replica:
    """A replica starting from ``atoms`` with Maxwell-Boltzmann velocities at T(0) (no drift)."""
    dtype = model.dtype
    rng = torch.Generator().manual_seed(int(np.random.SeedSequence(list(seed)).generate_state(1)[0]))
    masses = torch.tensor(atoms.get_masses(), dtype=dtype)
    t0 = schedule(0.0)
    sigma = torch.sqrt(KB * t0 / masses * ACCEL)
    v = torch.randn(len(atoms), 3, generator=rng, dtype=dtype) * sigma[:, None]
    v -= (masses[:, None] * v).sum(0) / masses.sum()
    cell = torch.tensor(atoms.cell.array, dtype=dtype)
    return Replica(
        traj_id=traj_id,
        numbers=atoms.numbers.copy(),
        species=model.species_index(atoms.get_chemical_symbols()).cpu(),
        masses=masses,
        positions=torch.tensor(atoms.positions, dtype=dtype),
        velocities=v,
        cell0=cell.clone(),
        cell=cell,
        schedule=schedule,
        strain=strain,
        rng=rng,
    )


def batch_of(replicas: list[Replica]) -> AtomsBatch:
    counts = torch.tensor([r.n_atoms for r in replicas])
    return AtomsBatch(
        positions=torch.cat([r.positions for r in replicas]),
        species=torch.cat([r.species for r in replicas]),
        system=torch.repeat_interleave(torch.arange(len(replicas)), counts),
        cells=torch.stack([r.cell for r in replicas]),
        pbc=torch.ones(len(replicas), 3, dtype=torch.bool),
    )


def evaluate(model: ANIEnsemble, replicas: list[Replica], members: bool) -> Prediction:
    """One batched model call (on the model's device); stores each replica's (mean) forces."""
    pred = model.evaluate(batch_of(replicas), forces=True, member_forces=members)
    # replicas stay on the CPU whatever the model's device: their per-replica updates are a
    # few tiny operations, which a GPU would run no faster, and one copy per step is cheap
    forces = pred.forces.cpu()
    offset = 0
    for r in replicas:
        r.forces = forces[offset : offset + r.n_atoms]
        offset += r.n_atoms
    return pred


def drift_and_kick(replicas: list[Replica], dt_fs: float, friction_per_fs: float) -> None:
    """BAOA part of a BAOAB step (the final B needs the new forces): half kick, half drift,
    Ornstein-Uhlenbeck thermostat at T(t + dt/2), half drift; then the clock and the strain."""
    c1 = math.exp(-friction_per_fs * dt_fs)
    for r in replicas:
        r.velocities += 0.5 * dt_fs * ACCEL * r.forces / r.masses[:, None]
        r.positions += 0.5 * dt_fs * r.velocities
        temp = max(r.schedule(r.t_fs + 0.5 * dt_fs), 0.0)
        sigma = torch.sqrt((1 - c1 * c1) * KB * temp / r.masses * ACCEL)
        noise = torch.randn(r.n_atoms, 3, generator=r.rng, dtype=r.velocities.dtype)
        r.velocities = c1 * r.velocities + sigma[:, None] * noise
        r.positions += 0.5 * dt_fs * r.velocities
        r.t_fs += dt_fs
        r.steps += 1
        if r.strain is not None:
            new_cell = r.cell0 @ torch.tensor(r.strain.deformation(r.t_fs), dtype=r.cell.dtype)
            # affine: atoms keep their fractional coordinates as the cell deforms
            r.positions = r.positions @ torch.linalg.solve(r.cell, new_cell)
            r.cell = new_cell


def final_kick(replicas: list[Replica], dt_fs: float) -> None:
    for r in replicas:
        r.velocities += 0.5 * dt_fs * ACCEL * r.forces / r.masses[:, None]
