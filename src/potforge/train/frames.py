"""Labelled frames as flat tensors: the fast path from the dataset store to training.

A :class:`FrameSet` holds F frames of any sizes flattened like an :class:`AtomsBatch`, with
their reference energies (eV), forces (eV/Å) and, where the oracle gave one, stress (eV/Å³);
``batch(idx)`` cuts out any subset of frames as a ready-to-evaluate batch without going back to
the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from potforge.data.store import DatasetStore
from potforge.errors import DataError, UnknownElementError
from potforge.model.neighbors import AtomsBatch


@dataclass
class FrameSet:
    """F frames, N atoms in all. positions (N, 3) Å float64; species (N,) element index;
    cells (F, 3, 3) Å; pbc (F, 3); energies (F,) eV; forces (N, 3) eV/Å; starts (F + 1,);
    stresses (F, 3, 3) eV/Å³ (ASE's sign), NaN for a frame labelled without one."""

    elements: tuple[str, ...]
    positions: torch.Tensor
    species: torch.Tensor
    cells: torch.Tensor
    pbc: torch.Tensor
    energies: torch.Tensor
    forces: torch.Tensor
    starts: torch.Tensor
    frame_ids: list[str]
    stresses: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.cells.shape[0])

    @property
    def n_atoms(self) -> torch.Tensor:
        return self.starts[1:] - self.starts[:-1]

    @classmethod
    def from_atoms(
        cls, frames: Sequence[Atoms], elements: tuple[str, ...], ids: Sequence[str] | None = None
    ) -> FrameSet:
        if not frames:
            return cls.empty(elements)
        lookup = {el: k for k, el in enumerate(elements)}
        symbols = sorted({s for a in frames for s in a.get_chemical_symbols()})
        unknown = [s for s in symbols if s not in lookup]
        if unknown:
            raise UnknownElementError(f"frames contain {', '.join(unknown)}; the model knows {', '.join(elements)}")
        n = np.array([len(a) for a in frames])
        return cls(
            elements=tuple(elements),
            positions=torch.tensor(np.concatenate([a.positions for a in frames]), dtype=torch.float64),
            species=torch.tensor([lookup[s] for a in frames for s in a.get_chemical_symbols()], dtype=torch.long),
            cells=torch.tensor(np.stack([a.cell.array for a in frames]), dtype=torch.float64),
            pbc=torch.tensor(np.stack([a.pbc for a in frames])),
            energies=torch.tensor([a.get_potential_energy() for a in frames], dtype=torch.float64),
            forces=torch.tensor(np.concatenate([a.get_forces() for a in frames]), dtype=torch.float64),
            starts=torch.tensor(np.concatenate([[0], np.cumsum(n)]), dtype=torch.long),
            frame_ids=list(ids) if ids is not None else [str(k) for k in range(len(frames))],
            stresses=torch.tensor(np.stack([_stress(a) for a in frames]), dtype=torch.float64),
        )

    @classmethod
    def empty(cls, elements: tuple[str, ...]) -> FrameSet:
        z = torch.zeros(0)
        return cls(
            tuple(elements),
            z.reshape(0, 3).double(),
            z.long(),
            z.reshape(0, 3, 3).double(),
            torch.zeros(0, 3, dtype=torch.bool),
            z.double(),
            z.reshape(0, 3).double(),
            torch.zeros(1, dtype=torch.long),
            [],
            z.reshape(0, 3, 3).double(),
        )

    def atom_index(self, frames: torch.Tensor) -> torch.Tensor:
        """Flat atom indices of the given frames, in order."""
        lo, hi = self.starts[frames], self.starts[frames + 1]
        counts = hi - lo
        offsets = torch.repeat_interleave(lo - (torch.cumsum(counts, 0) - counts), counts)
        return torch.arange(int(counts.sum())) + offsets

    def batch(self, frames: torch.Tensor, dtype: torch.dtype, device: str | torch.device = "cpu"):
        """(AtomsBatch, energies (B,) eV float64, forces (n, 3) eV/Å, atoms per frame (B,))."""
        frames = torch.as_tensor(frames, dtype=torch.long)
        atoms = self.atom_index(frames)
        counts = self.n_atoms[frames]
        batch = AtomsBatch(
            positions=self.positions[atoms].to(dtype=dtype, device=device),
            species=self.species[atoms].to(device),
            system=torch.repeat_interleave(torch.arange(len(frames)), counts).to(device),
            cells=self.cells[frames].to(dtype=dtype, device=device),
            pbc=self.pbc[frames].to(device),
        )
        return (
            batch,
            self.energies[frames].to(device),
            self.forces[atoms].to(dtype=dtype, device=device),
            counts.to(device),
        )

    def stress(self, frames: torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
        """(B, 3, 3) reference stress of the given frames, eV/Å³ float64 (NaN where none)."""
        frames = torch.as_tensor(frames, dtype=torch.long)
        if self.stresses is None:
            return torch.full((len(frames), 3, 3), float("nan"), dtype=torch.float64, device=device)
        return self.stresses[frames].to(device)

    def element_counts(self) -> torch.Tensor:
        """(F, n_elements) number of atoms of each element per frame."""
        frame_of_atom = torch.repeat_interleave(torch.arange(len(self)), self.n_atoms)
        out = torch.zeros(len(self), len(self.elements), dtype=torch.float64)
        out.index_put_(
            (frame_of_atom, self.species), torch.ones(len(self.species), dtype=torch.float64), accumulate=True
        )
        return out


def _stress(atoms: Atoms) -> np.ndarray:
    """A frame's labelled stress as a 3×3 matrix (eV/Å³), NaN where it has none (a cluster)."""
    results = atoms.calc.results if atoms.calc is not None else {}
    if results.get("stress") is None:
        return np.full((3, 3), np.nan)
    return np.asarray(atoms.get_stress(voigt=False), dtype=np.float64)


def load_split(
    store: DatasetStore, split: str, elements: tuple[str, ...], oracle_hash: str | None = None, **query
) -> FrameSet:
    """All labelled frames of one split (train, val or test) as a :class:`FrameSet`; with
    ``oracle_hash``, only the labels of that oracle (a dataset may hold several)."""
    if oracle_hash is not None:
        query["oracle_hash"] = oracle_hash
    frames = list(store.frames(split=split, **query))
    return FrameSet.from_atoms(frames, elements, ids=[a.info.get("task_id", "") for a in frames])


def dataset_elements(store: DatasetStore, oracle_hash: str | None = None) -> tuple[str, ...]:
    """The elements present in a dataset's labelled frames (of one oracle's, with
    ``oracle_hash``), sorted by atomic number."""
    from ase.data import atomic_numbers

    symbols: set[str] = set()
    for atoms in store.frames(**({} if oracle_hash is None else {"oracle_hash": oracle_hash})):
        symbols.update(atoms.get_chemical_symbols())
    if not symbols:
        which = "" if oracle_hash is None else f" of oracle {oracle_hash}"
        raise DataError(f"{store.name} holds no labelled frames{which}")
    return tuple(sorted(symbols, key=lambda s: atomic_numbers[s]))
