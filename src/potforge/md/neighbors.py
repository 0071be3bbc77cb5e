"""Neighbour lists that MD reuses between steps (Verlet lists with a skin).

A system's list is built with cutoff ``rc + skin`` at its reference geometry (``nl_positions``,
``nl_cells`` in the state) and stays complete while no pair can have crossed into ``rc``. With
the cell deformed from H₀ to H (A = H₀⁻¹H) and each atom displaced by u_i from where the affine
map takes its reference position, a pair vector changes by at most |d|·‖A − I‖₂ + |u_i| + |u_j|,
so the list is kept while

    (rc + skin) ‖A − I‖₂ + 2 max_i |u_i|  <  skin

(with a fixed cell: while no atom has moved half the skin). A rebuild wraps the system's atoms
into its cell and records the new reference geometry in the state; positions are not wrapped in
between, so the list's integer cell shifts stay valid. The graphs themselves are a cache
(:class:`NeighborCache`), used only for a system whose reference geometry is exactly the one it
was built at, and rebuilt from that geometry otherwise: a resumed state gets exactly the lists
it had, and no state can be given another's list.
"""

from __future__ import annotations

from itertools import pairwise

import torch

from potforge.errors import StructureError
from potforge.md.state import MDState
from potforge.model.neighbors import AtomsBatch, NeighborGraph, build_graph


class UnstableSystems(StructureError):
    """Some systems of a batched state cannot go on (non-finite coordinates, overlapping atoms,
    blown-up forces): ``reasons`` maps each one's index in the state to why."""

    def __init__(self, reasons: dict[int, str]) -> None:
        self.reasons = dict(sorted(reasons.items()))
        super().__init__("; ".join(f"system {b}: {r}" for b, r in self.reasons.items()))


def check_finite(state: MDState) -> None:
    """Raise :class:`UnstableSystems` for systems with non-finite positions, momenta or cells."""
    bad_atoms = ~(torch.isfinite(state.positions).all(1) & torch.isfinite(state.momenta).all(1))
    bad = set(state.system[bad_atoms].tolist())
    bad |= set(torch.nonzero(~torch.isfinite(state.cells).reshape(state.n_systems, 9).all(1)).flatten().tolist())
    if bad:
        raise UnstableSystems({b: "non-finite positions, momenta or cell" for b in bad})


def displacement_bound(state: MDState, list_cutoff_A: float) -> torch.Tensor:
    """(B,) the most any listed pair distance can have changed since each list was built, Å."""
    same_cell = (state.cells == state.nl_cells).reshape(state.n_systems, 9).all(1)
    # fixed cells (the common case) in one pass: exact elementwise work and a max, both
    # independent of the batch
    u = (state.positions.double() - state.nl_positions.double()).norm(dim=1)
    umax = torch.zeros(state.n_systems, dtype=torch.float64).scatter_reduce(0, state.system, u, "amax")
    if bool(same_cell.all()):
        return 2 * umax
    # deformed cells: A = H0⁻¹ H per system (LAPACK solves each 3 × 3 system on its own)
    a = torch.linalg.solve(state.nl_cells.double(), state.cells.double())
    strain = torch.linalg.matrix_norm(a - torch.eye(3, dtype=torch.float64), ord=2)
    affine = state.apply_per_system(state.nl_positions.double(), a)
    ua = (state.positions.double() - affine).norm(dim=1)
    uamax = torch.zeros(state.n_systems, dtype=torch.float64).scatter_reduce(0, state.system, ua, "amax")
    return torch.where(same_cell, 2 * umax, list_cutoff_A * strain + 2 * uamax)


def refresh(state: MDState, cutoff_A: float, skin_A: float) -> MDState:
    """The state with the lists of systems that need one rebuilt (atoms wrapped into the cell,
    reference geometry updated, version bumped); unchanged systems keep theirs."""
    check_finite(state)
    never = state.nl_version < 0
    stale = never | (displacement_bound(state, cutoff_A + skin_A) >= skin_A)
    if not bool(stale.any()):
        return state
    systems = torch.nonzero(stale).flatten().tolist()
    frac = state.apply_per_system(state.positions, torch.linalg.inv(state.cells), systems)
    positions = state.apply_per_system(frac - torch.floor(frac), state.cells, systems)
    atom_stale = stale[state.system]
    positions = torch.where(atom_stale[:, None], positions, state.positions)
    nl_positions = torch.where(atom_stale[:, None], positions, state.nl_positions)
    nl_cells = torch.where(stale[:, None, None], state.cells, state.nl_cells)
    return state.replace(
        positions=positions, nl_positions=nl_positions, nl_cells=nl_cells, nl_version=state.nl_version + stale.long()
    )


class _Local:
    """One system's list in local atom indices, with the reference geometry it was built at."""

    __slots__ = ("cell", "centers", "neighbors", "offsets", "positions", "serial", "shifts")

    def __init__(self, centers, neighbors, shifts, offsets, positions, cell, serial) -> None:
        self.centers, self.neighbors, self.shifts, self.offsets = centers, neighbors, shifts, offsets
        self.positions, self.cell, self.serial = positions, cell, serial

    def matches(self, positions: torch.Tensor, cell: torch.Tensor) -> bool:
        return torch.equal(self.positions, positions) and torch.equal(self.cell, cell)


class NeighborCache:
    """The neighbour graphs of an MD state's systems at cutoff ``rc + skin``, one per system
    (looked up by uid, used only if built at exactly the system's reference geometry), and
    assembled into batch graphs on demand."""

    def __init__(self, cutoff_A: float, skin_A: float, n_species: int) -> None:
        self.cutoff_A = cutoff_A
        self.skin_A = skin_A
        self.list_cutoff_A = cutoff_A + skin_A
        self.n_species = n_species
        self._local: dict[int, _Local] = {}
        self._assembled: dict[tuple, NeighborGraph] = {}
        self._serial = 0
        self.builds = 0  # systems whose list was built (for benchmarks)

    def graph(self, state: MDState, species: torch.Tensor, index: list[int] | None = None) -> NeighborGraph:
        """The graph of systems ``index`` (default all) of ``state``, in that order, as one batch.
        ``species`` (N,) are the model's element indices of all atoms of the state."""
        index = list(range(state.n_systems)) if index is None else list(index)
        uids = state.uids.tolist()
        starts = state.starts()

        def current(b: int) -> bool:
            local = self._local.get(uids[b])
            sl = slice(starts[b], starts[b + 1])
            return local is not None and local.matches(state.nl_positions[sl], state.nl_cells[b])

        missing = [b for b in index if not current(b)]
        if missing:
            self._build(state, species, missing)
        parts = [self._local[uids[b]] for b in index]
        key = tuple(p.serial for p in parts)
        cached = self._assembled.get(key)
        if cached is not None:
            return cached
        counts = state.counts().tolist()
        atom_offsets, edge_offsets = [0], [0]
        for b, part in zip(index, parts, strict=True):
            atom_offsets.append(atom_offsets[-1] + counts[b])
            edge_offsets.append(edge_offsets[-1] + int(part.centers.shape[0]))
        graph = NeighborGraph(
            centers=torch.cat([p.centers + o for p, o in zip(parts, atom_offsets, strict=False)]),
            neighbors=torch.cat([p.neighbors + o for p, o in zip(parts, atom_offsets, strict=False)]),
            shifts=torch.cat([p.shifts for p in parts]),
            offsets=torch.cat([parts[0].offsets[:1]]
                              + [p.offsets[1:] + e for p, e in zip(parts, edge_offsets, strict=False)]),
            edge_offsets=edge_offsets,
            cutoff=self.list_cutoff_A,
        )  # fmt: skip
        if len(self._assembled) > 8:
            self._assembled.clear()
        self._assembled[key] = graph
        live = set(uids)
        for uid in [u for u in self._local if u not in live]:
            del self._local[uid]
        return graph

    def _build(self, state: MDState, species: torch.Tensor, systems: list[int]) -> None:
        """Build the lists of ``systems`` at their reference geometry, in one call."""
        try:
            graphs = self._build_batch(state, species, systems)
        except StructureError:
            reasons = {}
            for b in systems:  # find which systems are at fault
                try:
                    self._build_batch(state, species, [b])
                except StructureError as exc:
                    reasons[b] = str(exc)
            raise UnstableSystems(reasons or {b: "neighbour list failed" for b in systems}) from None
        uids = state.uids.tolist()
        for b, local in zip(systems, graphs, strict=True):
            self._local[uids[b]] = local
        self.builds += len(systems)

    def _build_batch(self, state: MDState, species: torch.Tensor, systems: list[int]) -> list[_Local]:
        starts = state.starts()
        atoms = torch.cat([torch.arange(starts[b], starts[b + 1]) for b in systems])
        counts = torch.tensor([starts[b + 1] - starts[b] for b in systems])
        batch = AtomsBatch(
            positions=state.nl_positions[atoms].double(),
            species=species[atoms].cpu(),
            system=torch.repeat_interleave(torch.arange(len(systems)), counts),
            cells=state.nl_cells[systems].double(),
            pbc=torch.ones(len(systems), 3, dtype=torch.bool),
        )
        g = build_graph(batch, self.list_cutoff_A, self.n_species)
        out = []
        atom_starts = [0, *torch.cumsum(counts, 0).tolist()]
        starts = state.starts()
        for k, (lo, hi) in enumerate(pairwise(g.edge_offsets)):
            a0, a1 = atom_starts[k], atom_starts[k + 1]
            b = systems[k]
            self._serial += 1
            out.append(
                _Local(
                    g.centers[lo:hi] - a0,
                    g.neighbors[lo:hi] - a0,
                    g.shifts[lo:hi],
                    g.offsets[a0 : a1 + 1] - lo,
                    state.nl_positions[starts[b] : starts[b + 1]].clone(),
                    state.nl_cells[b].clone(),
                    self._serial,
                )
            )
        return out
