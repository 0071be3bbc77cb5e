"""The batched MD state: many periodic systems of different sizes as plain tensors.

A :class:`MDState` is immutable data (a frozen dataclass); the integrators are functions that
take one and return the next. Atoms of all systems are flattened into one list with a system
index, as the model's batches are. Each system carries its own clock, step counter, random
stream key (see :mod:`potforge.md.noise`), drive (T(t), P(t) or strain(t)) and the reference
geometry of its neighbour list, so a checkpoint of the state alone continues exactly.

Units: positions Å, momenta amu·Å/fs, masses amu, forces eV/Å, energies eV, stress eV/Å³
(virial only, ASE sign: positive is tensile), time fs, temperature K.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from ase import Atoms, units

from potforge.md.schedules import Drive

#: (eV/Å)/amu in Å/fs²: a force divided by a mass gives this many Å/fs² per eV/Å/amu.
ACCEL = float(units.fs**2)
#: amu (Å/fs)² in eV.
MV2_EV = 1.0 / ACCEL
#: Boltzmann's constant, eV/K.
KB = float(units.kB)
#: 1 GPa in eV/Å³.
GPA = float(units.GPa)
#: amu/Å³ in g/cm³.
AMU_A3_G_CM3 = 1.66053906660

_PER_ATOM = ("positions", "momenta", "masses", "numbers", "system", "fixed", "forces", "nl_positions")
_PER_SYSTEM = ("cells", "ref_cells", "time_fs", "steps", "keys", "uids", "energy", "stress", "nl_cells", "nl_version")


@dataclass(frozen=True)
class MDState:
    """B systems, N atoms in all.

    Per atom: positions, momenta (N, 3); masses (N,); numbers (N,) atomic numbers; system (N,)
    non-decreasing system index; fixed (N,) bool (held atoms never move); forces (N, 3) at the
    current positions; nl_positions (N, 3) positions when the system's neighbour list was built.
    Per system: cells, ref_cells (B, 3, 3) (rows are lattice vectors; strains act on ref_cells);
    time_fs (B,) float64; steps (B,) int64; keys (B,) int64 random-stream keys; uids (B,) int64
    identities (unique within a run); energy (B,) float64; stress (B, 3, 3); nl_cells (B, 3, 3)
    and nl_version (B,) int64 of the neighbour list; drives: one :class:`Drive` per system.
    """

    positions: torch.Tensor
    momenta: torch.Tensor
    masses: torch.Tensor
    numbers: torch.Tensor
    system: torch.Tensor
    fixed: torch.Tensor
    forces: torch.Tensor
    nl_positions: torch.Tensor
    cells: torch.Tensor
    ref_cells: torch.Tensor
    time_fs: torch.Tensor
    steps: torch.Tensor
    keys: torch.Tensor
    uids: torch.Tensor
    energy: torch.Tensor
    stress: torch.Tensor
    nl_cells: torch.Tensor
    nl_version: torch.Tensor
    drives: tuple[Drive, ...]

    # --- shape ---------------------------------------------------------------------------------
    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_systems(self) -> int:
        return int(self.cells.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        return self.positions.dtype

    def counts(self) -> torch.Tensor:
        """Atoms per system (B,)."""
        return torch.bincount(self.system, minlength=self.n_systems)

    def starts(self) -> list[int]:
        """Offsets (B + 1) of each system's atoms."""
        return [0, *torch.cumsum(self.counts(), 0).tolist()]

    # --- derived physics -----------------------------------------------------------------------
    @property
    def velocities(self) -> torch.Tensor:
        """(N, 3) Å/fs."""
        return self.momenta / self.masses[:, None]

    def volumes(self) -> torch.Tensor:
        """(B,) Å³."""
        return torch.linalg.det(self.cells).abs()

    def degrees_of_freedom(self) -> torch.Tensor:
        """(B,) 3 × the moving atoms (Langevin thermostats every degree of freedom)."""
        moving = (~self.fixed).to(self.positions.dtype)
        return 3 * torch.zeros(self.n_systems, dtype=moving.dtype).index_add(0, self.system, moving)

    def kinetic_tensor(self) -> torch.Tensor:
        """Σ p pᵀ / m per system, (B, 3, 3) eV."""
        per_atom = self.momenta[:, :, None] * self.momenta[:, None, :] / self.masses[:, None, None]
        out = torch.zeros(self.n_systems, 3, 3, dtype=per_atom.dtype)
        return out.index_add(0, self.system, per_atom) * MV2_EV

    def temperature_K(self) -> torch.Tensor:
        """Instantaneous kinetic temperature (B,) K over the moving atoms."""
        ke2 = torch.diagonal(self.kinetic_tensor(), dim1=1, dim2=2).sum(1)
        return ke2 / (self.degrees_of_freedom().clamp(min=1) * KB)

    def pressure_tensor(self) -> torch.Tensor:
        """Instantaneous pressure tensor (B, 3, 3) eV/Å³: kinetic + virial."""
        return self.kinetic_tensor() / self.volumes()[:, None, None] - self.stress

    def pressure_GPa(self) -> torch.Tensor:
        """(B,) GPa."""
        return torch.diagonal(self.pressure_tensor(), dim1=1, dim2=2).sum(1) / 3 / GPA

    def density_g_cm3(self) -> torch.Tensor:
        """(B,) g/cm³."""
        mass = torch.zeros(self.n_systems, dtype=self.masses.dtype).index_add(0, self.system, self.masses)
        return mass * AMU_A3_G_CM3 / self.volumes()

    def target_temperature_K(self, at_fs: torch.Tensor | None = None) -> torch.Tensor:
        """T(t) of every system at its own time (or ``at_fs`` (B,)), K."""
        t = self.time_fs if at_fs is None else at_fs
        return torch.tensor([d.temperature_K(float(x)) for d, x in zip(self.drives, t.tolist(), strict=True)],
                            dtype=torch.float64)  # fmt: skip

    # --- structure -----------------------------------------------------------------------------
    def replace(self, **changes: Any) -> MDState:
        return replace(self, **changes)

    def select(self, index: Sequence[int] | torch.Tensor) -> MDState:
        """The systems ``index`` (in that order) as a state of their own."""
        index = torch.as_tensor(index, dtype=torch.long)
        starts = self.starts()
        atom_parts = [torch.arange(starts[b], starts[b + 1]) for b in index.tolist()]
        atoms = torch.cat(atom_parts) if atom_parts else torch.zeros(0, dtype=torch.long)
        counts = torch.tensor([len(p) for p in atom_parts], dtype=torch.long)
        values: dict[str, Any] = {name: getattr(self, name)[atoms] for name in _PER_ATOM}
        values["system"] = torch.repeat_interleave(torch.arange(len(atom_parts)), counts)
        values.update({name: getattr(self, name)[index] for name in _PER_SYSTEM})
        values["drives"] = tuple(self.drives[b] for b in index.tolist())
        return MDState(**values)

    def apply_per_system(
        self, rows: torch.Tensor, mats: torch.Tensor, systems: Sequence[int] | None = None
    ) -> torch.Tensor:
        """``rows`` (N, 3) with each system's rows times its matrix ``mats[b]`` (3, 3) (row
        vectors: r @ M); systems not in ``systems`` are left as they are. Written as three
        elementwise multiply-adds, so a system's numbers never depend on which others share the
        batch (a batched matrix kernel may block its work differently for another batch size)."""
        product = row_times(rows, mats[self.system])
        if systems is None:
            return product
        return torch.where(self.system_mask(systems)[self.system][:, None], product, rows)

    def system_mask(self, systems: Sequence[int]) -> torch.Tensor:
        """(B,) bool: True for the systems named."""
        mask = torch.zeros(self.n_systems, dtype=torch.bool)
        mask[list(systems)] = True
        return mask

    def system_atoms(self, b: int) -> slice:
        starts = self.starts()
        return slice(starts[b], starts[b + 1])

    def to_atoms(self, b: int, *, wrap: bool = True, with_velocities: bool = False) -> Atoms:
        """System ``b`` as an ASE ``Atoms`` (float64, wrapped into its cell)."""
        sl = self.system_atoms(b)
        atoms = Atoms(
            numbers=self.numbers[sl].numpy(),
            positions=self.positions[sl].double().numpy(),
            cell=self.cells[b].double().numpy(),
            pbc=True,
        )
        if with_velocities:
            atoms.set_velocities(self.velocities[sl].double().numpy() / units.fs)  # ASE velocity unit
        if wrap:
            atoms.wrap()
        return atoms


def row_times(rows: torch.Tensor, mats: torch.Tensor) -> torch.Tensor:
    """Row vectors times matrices, ``rows[..., i, :] @ mats[..., :, :]`` broadcast over the
    leading dimensions (rows (..., 3), mats (..., 3, 3)), written as three elementwise
    multiply-adds: a system's numbers then never depend on which others share the batch (a
    batched matrix kernel may block its work differently for another batch size)."""
    return rows[..., 0:1] * mats[..., 0, :] + rows[..., 1:2] * mats[..., 1, :] + rows[..., 2:3] * mats[..., 2, :]


def concat(states: Sequence[MDState]) -> MDState:
    """One state of all systems of ``states``, in order."""
    states = [s for s in states if s.n_systems]
    if not states:
        raise ValueError("nothing to concatenate")
    if len(states) == 1:
        return states[0]
    values: dict[str, Any] = {}
    for name in (*_PER_ATOM, *_PER_SYSTEM):
        if name != "system":
            values[name] = torch.cat([getattr(s, name) for s in states])
    offsets = np.cumsum([0, *[s.n_systems for s in states]])
    values["system"] = torch.cat([s.system + int(o) for s, o in zip(states, offsets, strict=False)])
    values["drives"] = tuple(d for s in states for d in s.drives)
    return MDState(**values)


def from_atoms(
    frames: Sequence[Atoms],
    drives: Sequence[Drive],
    keys: Sequence[int],
    *,
    dtype: torch.dtype = torch.float64,
    uids: Sequence[int] | None = None,
    fixed: Sequence[np.ndarray | None] | None = None,
) -> MDState:
    """A state at rest (zero momenta, no forces yet) of periodic ``frames``; see
    :func:`potforge.md.integrators.init` for thermal velocities and forces."""
    if not (len(frames) == len(drives) == len(keys)):
        raise ValueError("one drive and one key per frame")
    if not frames:
        raise ValueError("an MD state needs at least one system")
    for a in frames:
        if not a.pbc.all():
            raise ValueError("potforge MD runs periodic cells only")
    counts = torch.tensor([len(a) for a in frames])
    positions = torch.tensor(np.concatenate([a.positions for a in frames]), dtype=dtype)
    cells = torch.tensor(np.stack([a.cell.array for a in frames]), dtype=dtype)
    masses = torch.tensor(np.concatenate([a.get_masses() for a in frames]), dtype=dtype)
    masks = fixed or [None] * len(frames)
    held = [np.zeros(len(a), bool) if f is None else np.asarray(f, bool) for a, f in zip(frames, masks, strict=True)]
    b = len(frames)
    return MDState(
        positions=positions,
        momenta=torch.zeros_like(positions),
        masses=masses,
        numbers=torch.tensor(np.concatenate([a.numbers for a in frames]), dtype=torch.long),
        system=torch.repeat_interleave(torch.arange(b), counts),
        fixed=torch.tensor(np.concatenate(held)),
        forces=torch.full_like(positions, float("nan")),
        nl_positions=positions.clone(),
        cells=cells,
        ref_cells=cells.clone(),
        time_fs=torch.zeros(b, dtype=torch.float64),
        steps=torch.zeros(b, dtype=torch.long),
        keys=torch.tensor([int(k) for k in keys], dtype=torch.long),
        uids=torch.tensor(list(uids) if uids is not None else list(range(b)), dtype=torch.long),
        energy=torch.full((b,), float("nan"), dtype=torch.float64),
        stress=torch.zeros(b, 3, 3, dtype=dtype),
        nl_cells=cells.clone(),
        nl_version=torch.full((b,), -1, dtype=torch.long),  # -1: no list built yet
        drives=tuple(drives),
    )


def stream_key(*seed: int) -> int:
    """A random-stream key (int64) from any tuple of integers, e.g. (campaign seed, generation, k)."""
    return int(np.random.SeedSequence(list(seed)).generate_state(1, np.uint64)[0].astype(np.int64))


# --- checkpoints -------------------------------------------------------------------------------
def state_to_dict(state: MDState) -> dict[str, Any]:
    """The state as tensors and one JSON string (drives): ``torch.save`` it, load it with
    ``weights_only=True``, and :func:`state_from_dict` gives back the same state bit for bit."""
    out: dict[str, Any] = {f.name: getattr(state, f.name) for f in fields(state) if f.name != "drives"}
    out["drives"] = json.dumps([d.to_dict() for d in state.drives])
    out["format"] = "potforge-md-state-1"
    return out


def state_from_dict(d: dict[str, Any]) -> MDState:
    if d.get("format") != "potforge-md-state-1":
        raise ValueError("not a potforge MD state")
    values = {f.name: d[f.name] for f in fields(MDState) if f.name != "drives"}
    return MDState(**values, drives=tuple(Drive.from_dict(x) for x in json.loads(d["drives"])))
