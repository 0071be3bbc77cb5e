"""Force providers: what computes energies, forces and stress of an MD state.

One protocol, :class:`ForceProvider`, three implementations:

* :class:`EnsembleForces` — a potforge potential (:class:`~potforge.model.Potential`), every
  system in one batched call, neighbour lists reused between steps (skin, see
  :mod:`potforge.md.neighbors`), every member's forces for the systems asked for (the
  ensemble's disagreement, which active learning thresholds);
* :class:`OracleForces` — a reference oracle through an isolated oracle process with a
  wall-time limit (:class:`~potforge.oracle.session.OracleSession`), one system at a time;
* :class:`CalculatorForces` — ASE calculators from a factory, in this process (for calculators
  that are Python objects, not oracles that can be rebuilt in another process).

Units: eV, eV/Å, eV/Å³ (virial stress, ASE sign).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from ase import Atoms

from potforge.errors import UnknownElementError
from potforge.md.neighbors import NeighborCache, UnstableSystems
from potforge.md.state import MDState
from potforge.model.ensemble import MemberPrediction
from potforge.model.interface import Potential
from potforge.model.neighbors import AtomsBatch

#: A force beyond this (eV/Å) on any atom means a trajectory blew up.
MAX_FORCE_EV_A = 100.0


@dataclass(frozen=True)
class Spread:
    """The ensemble's disagreement on the systems it was asked for.

    systems: their indices in the state (K); member_energies (M, K) eV; energy_std (K,) eV
    (sample std, ddof 1); force_std (n,) eV/Å per atom of those systems, in order, with
    atom_system (n,) the position (0..K-1) of each atom's system in ``systems``. The per-atom
    spread is sqrt(Σ_m |F_m − F̄|² / (M − 1)).
    """

    systems: list[int]
    member_energies: torch.Tensor
    energy_std: torch.Tensor
    force_std: torch.Tensor
    atom_system: torch.Tensor

    def measures(self, n_atoms: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per system (K,): ρ = σ_E/√N (eV/√atom), mean and max per-atom force spread (eV/Å)."""
        k = len(self.systems)
        fs = self.force_std.double()
        total = torch.zeros(k, dtype=torch.float64).index_add(0, self.atom_system, fs)
        peak = torch.zeros(k, dtype=torch.float64).scatter_reduce(0, self.atom_system, fs, "amax")
        n = n_atoms.double()
        return {
            "energy_eV_per_sqrt_atom": self.energy_std.double() / n.sqrt(),
            "force_mean_eV_per_A": total / n,
            "force_max_eV_per_A": peak,
        }


@dataclass(frozen=True)
class Forces:
    """One evaluation of a state: energy (B,) eV float64, forces (N, 3) eV/Å, stress (B, 3, 3)
    eV/Å³ when asked for, spread of the systems whose member forces were asked for."""

    energy: torch.Tensor
    forces: torch.Tensor
    stress: torch.Tensor | None = None
    spread: Spread | None = None


class ForceProvider(Protocol):
    """Computes :class:`Forces` of a state. ``cutoff_A`` is the interaction range for which the
    integrator keeps neighbour lists (None: the provider needs none); ``skin_A`` their skin."""

    cutoff_A: float | None
    skin_A: float

    def __call__(self, state: MDState, *, stress: bool = False, members: Sequence[int] = ()) -> Forces: ...


def check_forces(state: MDState, forces: Forces) -> None:
    """Raise :class:`UnstableSystems` for systems with non-finite energy or forces beyond
    :data:`MAX_FORCE_EV_A`."""
    fmax = forces.forces.abs().amax(1).double()
    fmax = torch.where(torch.isfinite(fmax), fmax, torch.full_like(fmax, math.inf))
    peak = torch.zeros(state.n_systems, dtype=torch.float64).scatter_reduce(0, state.system, fmax, "amax")
    bad = {}
    for b in range(state.n_systems):
        if not math.isfinite(float(forces.energy[b])):
            bad[b] = "non-finite energy"
        elif float(peak[b]) > MAX_FORCE_EV_A:
            bad[b] = f"max |F| = {float(peak[b]):.3g} eV/Å"
    if bad:
        raise UnstableSystems(bad)


class EnsembleForces:
    """A potential evaluated on all systems of a state at once.

    The potential keeps its own dtype (float32 is the usual MD choice; the state may be float64);
    ``skin_A`` is the neighbour-list skin (Å). ``members`` systems get every member's forces.
    A system whose drive names a ``member`` moves on that member's energy, forces and stress
    (the spread is still the whole ensemble's).
    """

    def __init__(self, model: Potential, skin_A: float = 1.0) -> None:
        self.model = model
        self.cutoff_A: float | None = float(model.cutoff_A)
        self.skin_A = float(skin_A)
        self.neighbors = NeighborCache(self.cutoff_A, self.skin_A, len(model.elements))
        self._table: torch.Tensor | None = None

    def species(self, numbers: torch.Tensor) -> torch.Tensor:
        """Model element indices (N,) of atomic numbers (N,)."""
        if self._table is None:
            from ase.data import atomic_numbers

            table = torch.full((119,), -1, dtype=torch.long)
            for k, el in enumerate(self.model.elements):
                table[atomic_numbers[el]] = k
            self._table = table
        species = self._table[numbers]
        if bool((species < 0).any()):
            from ase.data import chemical_symbols

            unknown = sorted({chemical_symbols[int(z)] for z in numbers[species < 0].unique()})
            raise UnknownElementError(
                f"element(s) {', '.join(unknown)} not in this model, which knows only {', '.join(self.model.elements)}"
            )
        return species

    def __call__(self, state: MDState, *, stress: bool = False, members: Sequence[int] = ()) -> Forces:
        members = sorted(set(int(b) for b in members))
        species = self.species(state.numbers)
        rest = [b for b in range(state.n_systems) if b not in set(members)]
        if not members or not rest:
            parts = [(list(range(state.n_systems)), bool(members))]
        else:
            parts = [(rest, False), (members, True)]
        energy = torch.empty(state.n_systems, dtype=torch.float64)
        forces = torch.empty_like(state.positions)
        stress_out = torch.empty(state.n_systems, 3, 3, dtype=state.dtype) if stress else None
        spread = None
        starts = state.starts()
        for index, with_members in parts:
            atoms = torch.cat([torch.arange(starts[b], starts[b + 1]) for b in index])
            pred = self._evaluate(state, species, index, atoms, with_members, stress)
            energy[index] = pred.energy.double().cpu()
            forces[atoms] = pred.forces.to(state.dtype).cpu()
            if stress_out is not None:
                stress_out[index] = pred.stress.to(state.dtype).cpu()
            if with_members:
                assert isinstance(pred, MemberPrediction)
                counts = torch.tensor([starts[b + 1] - starts[b] for b in index])
                spread = Spread(
                    systems=index,
                    member_energies=pred.member_energies.cpu(),
                    energy_std=pred.energy_std.cpu(),
                    force_std=pred.force_std.cpu(),
                    atom_system=torch.repeat_interleave(torch.arange(len(index)), counts),
                )
        return Forces(energy, forces, stress_out, spread)

    def _evaluate(self, state, species, index, atoms, with_members, stress):
        m = self.model
        graph = self.neighbors.graph(state, species, index)
        counts = torch.tensor([int(c) for c in state.counts()[index].tolist()])
        batch = AtomsBatch(
            positions=state.positions[atoms],
            species=species[atoms],
            system=torch.repeat_interleave(torch.arange(len(index)), counts),
            cells=state.cells[index],
            pbc=torch.ones(len(index), 3, dtype=torch.bool),
        )
        if m.device.type != "cpu":
            graph = _graph_to(graph, m.device)
        weights = self._weights([state.drives[b].member for b in index])
        return m.evaluate(batch, forces=True, member_forces=with_members, stress=stress, graph=graph, weights=weights)

    def _weights(self, drivers: list[int | None]) -> torch.Tensor | None:
        """(M, B) member weights: one-hot for systems driven by one member, 1/M for the rest;
        None when every system follows the mean (the usual path, unchanged)."""
        if all(d is None for d in drivers):
            return None
        m = self.model.n_members
        w = torch.full((m, len(drivers)), 1.0 / m, dtype=torch.float64)
        for b, d in enumerate(drivers):
            if d is not None:
                if d >= m:
                    raise ValueError(f"a system is driven by member {d}, but the model has {m} members")
                w[:, b] = 0.0
                w[d, b] = 1.0
        return w


def _graph_to(graph, device):
    from potforge.model.neighbors import NeighborGraph

    return NeighborGraph(
        graph.centers.to(device), graph.neighbors.to(device), graph.shifts.to(device),
        graph.offsets.to(device), graph.edge_offsets, graph.cutoff,
    )  # fmt: skip


def _system_atoms(state: MDState, b: int) -> Atoms:
    sl = state.system_atoms(b)
    return Atoms(
        numbers=state.numbers[sl].numpy(),
        positions=state.positions[sl].double().numpy(),
        cell=state.cells[b].double().numpy(),
        pbc=True,
    )


def _voigt_to_matrix(stress: np.ndarray) -> np.ndarray:
    stress = np.asarray(stress, dtype=float)
    if stress.shape == (3, 3):
        return stress
    xx, yy, zz, yz, xz, xy = stress
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


class _PerSystem:
    """Shared loop of the providers that evaluate one system at a time."""

    cutoff_A: float | None = None
    skin_A: float = 0.0

    def _one(self, state: MDState, b: int) -> tuple[float, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __call__(self, state: MDState, *, stress: bool = False, members: Sequence[int] = ()) -> Forces:
        energy = torch.empty(state.n_systems, dtype=torch.float64)
        forces = torch.empty_like(state.positions)
        stress_out = torch.empty(state.n_systems, 3, 3, dtype=state.dtype)
        for b in range(state.n_systems):
            e, f, s = self._one(state, b)
            energy[b] = e
            forces[state.system_atoms(b)] = torch.as_tensor(f, dtype=state.dtype)
            stress_out[b] = torch.as_tensor(_voigt_to_matrix(s), dtype=state.dtype)
        return Forces(energy, forces, stress_out if stress else None)


class OracleForces(_PerSystem):
    """A reference oracle, one system at a time in an isolated oracle process; each system keeps
    its own calculator there (keyed by its uid). Close it (or use it as a context manager) to
    stop the process."""

    def __init__(self, oracle, workdir: str | Path, timeout_s: float | None = 3600.0) -> None:
        from potforge.oracle.session import OracleSession

        self.session = OracleSession(oracle, workdir, timeout_s)

    def _one(self, state: MDState, b: int) -> tuple[float, np.ndarray, np.ndarray]:
        label = self.session.compute(_system_atoms(state, b), key=f"u{int(state.uids[b])}")
        return label.energy, label.forces, label.stress

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> OracleForces:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CalculatorForces(_PerSystem):
    """ASE calculators from ``factory(atoms, directory)``, one per system (kept for the run, so
    calculators that reuse neighbour lists stay fast), in this process."""

    def __init__(self, factory: Callable[[Atoms, Path], object], workdir: str | Path | None = None) -> None:
        import tempfile

        self.factory = factory
        # calculators may create their folder: never the current directory
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="potforge-md-")
        self.workdir = Path(workdir) if workdir is not None else Path(self._tmp.name)
        self._calcs: dict[int, tuple[Atoms, object]] = {}

    def _one(self, state: MDState, b: int) -> tuple[float, np.ndarray, np.ndarray]:
        from ase.calculators.calculator import all_changes

        atoms_now = _system_atoms(state, b)
        uid = int(state.uids[b])
        entry = self._calcs.get(uid)
        if entry is None or len(entry[0]) != len(atoms_now):
            work = atoms_now.copy()
            entry = self._calcs[uid] = (work, self.factory(work, self.workdir / f"md-{uid}"))
        work, calc = entry
        work.set_cell(atoms_now.cell, scale_atoms=False)
        work.positions = atoms_now.positions
        # only what changed, so EMT-like calculators keep their neighbour list between steps
        changes = all_changes if getattr(calc, "atoms", None) is None else calc.check_state(work)
        calc.calculate(work, ["energy", "forces", "stress"], changes)
        r = calc.results
        return float(r["energy"]), np.asarray(r["forces"], dtype=float), np.asarray(r["stress"], dtype=float)
