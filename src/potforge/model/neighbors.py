"""Neighbour graphs of batches of atomic systems, built with vesin.

A batch is many systems (periodic cells of any size and shape, or clusters) flattened into one
list of atoms. Its neighbour graph is the *full* list of directed edges i -> j (each pair twice)
within the cutoff, sorted by centre atom (CSR ``offsets``) and, within a centre, by the
neighbour's element — the layout the AEV kernels walk. Only integer cell shifts are stored;
edge vectors are recomputed from positions and cells, so gradients flow to both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
import torch
from vesin import NeighborList

from potforge.errors import StructureError


@dataclass
class AtomsBatch:
    """Many systems flattened into one list of atoms.

    positions: (n_atoms, 3) Å; species: (n_atoms,) element index into the model's elements;
    system: (n_atoms,) system index, non-decreasing; cells: (n_systems, 3, 3) Å, rows are
    lattice vectors; pbc: (n_systems, 3) bool.
    """

    positions: torch.Tensor
    species: torch.Tensor
    system: torch.Tensor
    cells: torch.Tensor
    pbc: torch.Tensor

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_systems(self) -> int:
        return int(self.cells.shape[0])

    def atoms_per_system(self) -> torch.Tensor:
        return torch.bincount(self.system, minlength=self.n_systems)

    def volumes(self) -> torch.Tensor:
        """Cell volumes (n_systems,) in Å³ (zero for systems that are not fully periodic)."""
        return torch.linalg.det(self.cells).abs()

    def to(self, device: torch.device, dtype: torch.dtype) -> AtomsBatch:
        """This batch on ``device``, coordinates in ``dtype`` (tensors already there are shared)."""
        return AtomsBatch(
            self.positions.to(device=device, dtype=dtype),
            self.species.to(device),
            self.system.to(device),
            self.cells.to(device=device, dtype=dtype),
            self.pbc.to(device),
        )


@dataclass
class NeighborGraph:
    """Full, centre-sorted neighbour list of an :class:`AtomsBatch`.

    centers, neighbors: (n_edges,) atom indices; shifts: (n_edges, 3) integer cell shifts
    (as floats) so that ``vec = pos[neighbors] - pos[centers] + shifts @ cell``;
    offsets: (n_atoms + 1,) CSR offsets of each centre's edges; edge_offsets: (n_systems + 1,)
    the edges of system b are ``edge_offsets[b]:edge_offsets[b+1]``.
    """

    centers: torch.Tensor
    neighbors: torch.Tensor
    shifts: torch.Tensor
    offsets: torch.Tensor
    edge_offsets: list[int]
    cutoff: float
    #: (cells, shift vectors) of the last call: MD at constant volume reuses them step after step
    _shift_cache: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    @property
    def n_edges(self) -> int:
        return int(self.centers.shape[0])

    def edge_system(self) -> torch.Tensor:
        """(n_edges,) system index of every edge."""
        counts = torch.tensor(np.diff(self.edge_offsets), device=self.centers.device)
        return torch.repeat_interleave(torch.arange(len(counts), device=self.centers.device), counts)

    def edge_vectors(self, positions: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Edge vectors (n_edges, 3) Å, differentiable in positions and cells."""
        vec = positions[self.neighbors] - positions[self.centers]
        if not self.edge_offsets or len(self.edge_offsets) < 2:
            return vec
        cached = self._shift_cache
        if cached is not None and not cells.requires_grad and cached[0].dtype == cells.dtype \
                and cached[0].shape == cells.shape and torch.equal(cached[0], cells):  # fmt: skip
            return vec + cached[1]
        shift = self.shifts.to(positions.dtype)
        # edges are grouped by system, so one small matmul per system (cheaper than gathering
        # a 3x3 cell per edge)
        parts = [shift[lo:hi] @ cells[b] for b, (lo, hi) in enumerate(pairwise(self.edge_offsets))]
        shift_vec = torch.cat(parts)
        if not cells.requires_grad:
            self._shift_cache = (cells.detach().clone(), shift_vec)
        return vec + shift_vec


def _cell_for_vesin(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    if pbc.any() and abs(np.linalg.det(np.where(pbc[:, None], cell, np.eye(3)))) < 1e-9:
        raise StructureError("a periodic direction has a zero or degenerate cell vector")
    return cell


def build_graph(batch: AtomsBatch, cutoff: float, n_species: int, min_distance: float = 1e-3) -> NeighborGraph:
    """Neighbour graph of all systems in ``batch`` within ``cutoff`` Å.

    Batches of fully periodic cells go through potforge's C cell list in one call; anything
    else (clusters, slabs, or no C compiler) through vesin, one system at a time. Raises
    :class:`StructureError` if two atoms (or an atom and its own image) are closer than
    ``min_distance`` Å, where the AEV derivatives are undefined.
    """
    pos_np = batch.positions.detach().to(torch.float64).cpu().numpy()
    cells_np = batch.cells.detach().to(torch.float64).cpu().numpy()
    pbc_np = batch.pbc.detach().cpu().numpy().astype(bool)
    # the C cell list bins atoms by integer cell index: a NaN there is undefined behaviour
    if not np.isfinite(pos_np).all():
        bad = np.nonzero(~np.isfinite(pos_np).all(1))[0]
        raise StructureError(f"{len(bad)} atom(s) have non-finite positions (first: atom {int(bad[0])})")
    if not np.isfinite(cells_np[pbc_np.any(1)]).all():
        raise StructureError("a periodic cell has non-finite vectors")
    species = batch.species.cpu().numpy().astype(np.int64)
    counts = batch.atoms_per_system().cpu().numpy()
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    device = batch.positions.device
    result = None
    if pbc_np.all():
        from potforge.model import kernels

        try:
            result = kernels.periodic_neighbor_list(starts, pos_np, cells_np, cutoff, species, n_species)
        except ValueError:
            raise StructureError("a cell is degenerate (zero volume)") from None
    if result is not None:
        offsets, neighbors, shifts, min_d = result
        if min_d < min_distance:
            raise StructureError(
                f"two atoms are {min_d:.2e} Å apart (below {min_distance} Å); a structure needs distinct positions"
            )
        centers = np.repeat(np.arange(batch.n_atoms), np.diff(offsets))
        edge_offsets = [int(offsets[s]) for s in starts]
        return NeighborGraph(
            centers=torch.from_numpy(centers).to(device),
            neighbors=torch.from_numpy(neighbors).to(device),
            shifts=torch.from_numpy(shifts.astype(np.float64)).to(device),
            offsets=torch.from_numpy(offsets).to(device),
            edge_offsets=edge_offsets,
            cutoff=float(cutoff),
        )
    nl = NeighborList(cutoff=float(cutoff), full_list=True, sorted=True)
    ii, jj, ss = [], [], []
    edge_offsets = [0]
    for b in range(batch.n_systems):
        lo, hi = starts[b], starts[b + 1]
        if hi > lo:
            cell = _cell_for_vesin(cells_np[b], pbc_np[b])
            i, j, s, d = nl.compute(pos_np[lo:hi], cell, pbc_np[b], quantities="ijSd", copy=False)
            if len(d) and d.min() < min_distance:
                k = int(np.argmin(d))
                raise StructureError(
                    f"system {b}: atoms {int(i[k])} and {int(j[k])} are {d[k]:.2e} Å apart "
                    f"(below {min_distance} Å); a structure needs distinct atom positions"
                )
            ii.append(i.astype(np.int64) + lo)
            jj.append(j.astype(np.int64) + lo)
            ss.append(s.astype(np.float64))
        edge_offsets.append(edge_offsets[-1] + (len(ii[-1]) if hi > lo else 0))
    if ii:
        centers, neighbors, shifts = np.concatenate(ii), np.concatenate(jj), np.concatenate(ss)
    else:
        centers = neighbors = np.zeros(0, np.int64)
        shifts = np.zeros((0, 3))
    if n_species > 1:
        # vesin sorts by centre; the kernels also want each centre's neighbours grouped by element
        order = np.argsort(centers * n_species + species[neighbors], kind="stable")
        centers, neighbors, shifts = centers[order], neighbors[order], shifts[order]
    offsets = np.zeros(batch.n_atoms + 1, np.int64)
    np.cumsum(np.bincount(centers, minlength=batch.n_atoms), out=offsets[1:])
    return NeighborGraph(
        centers=torch.from_numpy(centers).to(device),
        neighbors=torch.from_numpy(neighbors).to(device),
        shifts=torch.from_numpy(shifts).to(device),
        offsets=torch.from_numpy(offsets).to(device),
        edge_offsets=edge_offsets,
        cutoff=float(cutoff),
    )
