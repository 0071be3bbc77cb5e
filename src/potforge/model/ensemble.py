"""The ANI ensemble: AEVs -> per-element networks of M members -> energies, forces, stress.

Energy of a system = sum of atomic network outputs + sum of per-element self energies (eV).
Forces are -dE/dr and the stress is (1/V) dE/d(strain), both from one vector-Jacobian product
of the AEV with the networks' input gradients (see :mod:`potforge.model.aev`). All members run
in one batched pass; many systems of different sizes go through in one call.

Uncertainty (the quantities active learning thresholds, see ``docs``):
* ``energy_std``  — sample standard deviation (ddof = 1) over members of the system energy, eV;
  ANI's ρ is ``energy_std / sqrt(n_atoms)``.
* ``force_std``   — per atom, sqrt( sum_m |F_m - F_mean|² / (M - 1) ), eV/Å: the spread of the
  members' force vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn

from potforge.errors import UnknownElementError
from potforge.model.aev import AEVOperator, AEVParams
from potforge.model.neighbors import AtomsBatch, NeighborGraph, build_graph
from potforge.model.networks import ElementNetworks


@dataclass
class Prediction:
    """Model output for a batch. Units: eV, eV/Å, eV/Å³. M members, B systems, N atoms."""

    energy: torch.Tensor  # (B,) ensemble mean
    member_energies: torch.Tensor  # (M, B)
    energy_std: torch.Tensor  # (B,)
    forces: torch.Tensor | None = None  # (N, 3) ensemble mean
    member_forces: torch.Tensor | None = None  # (M, N, 3)
    force_std: torch.Tensor | None = None  # (N,)
    stress: torch.Tensor | None = None  # (B, 3, 3) ensemble mean, ASE sign convention
    member_stress: torch.Tensor | None = None  # (M, B, 3, 3)


def edge_to_atom_forces(gvec: torch.Tensor, graph: NeighborGraph, n_atoms: int) -> torch.Tensor:
    """Forces (K, n_atoms, 3) from energy gradients wrt edge vectors gvec (n_edges, K, 3).

    vec_e = r_neighbor - r_center (+ shift), so dE/dr gets +g at the neighbour and -g at the
    centre; forces are -dE/dr.
    """
    e, k = gvec.shape[0], gvec.shape[1]
    g = gvec.reshape(e, k * 3)  # index_add along the leading dim is the fast path
    f = g.new_zeros(n_atoms, k * 3).index_add_(0, graph.centers, g)
    f = f - g.new_zeros(n_atoms, k * 3).index_add_(0, graph.neighbors, g)  # (alpha=-1 is 5x slower)
    return f.reshape(n_atoms, k, 3).permute(1, 0, 2)


class ANIEnsemble(nn.Module):
    """An ensemble of ANI networks sharing one AEV definition.

    ``self_energies`` (n_elements,) eV are added per atom; ``metadata`` is free-form provenance
    (where the weights came from, training settings) saved with the model.
    """

    def __init__(
        self,
        aev: AEVParams,
        layer_sizes: tuple[int, ...],
        n_members: int,
        self_energies: list[float] | None = None,
        celu_alpha: float = 0.1,
        metadata: dict | None = None,
    ) -> None:
        super().__init__()
        if layer_sizes[0] != aev.n_features:
            raise ValueError(f"first layer size {layer_sizes[0]} != AEV length {aev.n_features}")
        self.aev_params = aev
        self.networks = ElementNetworks(aev.elements, layer_sizes, n_members, celu_alpha)
        sae = [0.0] * aev.n_species if self_energies is None else list(self_energies)
        if len(sae) != aev.n_species:
            raise ValueError(f"{len(sae)} self energies for {aev.n_species} elements")
        # a plain attribute, not a buffer: Module.to(float32) must not round self energies of
        # ~70 eV to float32 (1e-5 eV), and system energies are summed in float64
        self.self_energies_eV: list[float] = [float(x) for x in sae]
        self.metadata: dict = dict(metadata or {})
        self.aev_backend = "auto"

    @property
    def elements(self) -> tuple[str, ...]:
        return self.aev_params.elements

    @property
    def n_members(self) -> int:
        return self.networks.n_members

    @property
    def dtype(self) -> torch.dtype:
        return next(self.networks.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.networks.parameters()).device

    def species_index(self, symbols: list[str]) -> torch.Tensor:
        """Element indices for chemical symbols; an unknown element raises :class:`UnknownElementError`."""
        lookup = {el: k for k, el in enumerate(self.elements)}
        unknown = sorted({s for s in symbols if s not in lookup})
        if unknown:
            raise UnknownElementError(
                f"element(s) {', '.join(unknown)} not in this model, which knows only {', '.join(self.elements)}"
            )
        return torch.tensor([lookup[s] for s in symbols], dtype=torch.long, device=self.device)

    def graph(self, batch: AtomsBatch) -> NeighborGraph:
        return build_graph(batch, self.aev_params.radial_cutoff, self.aev_params.n_species)

    def aev_operator(
        self, batch: AtomsBatch, graph: NeighborGraph | None = None
    ) -> tuple[NeighborGraph, torch.Tensor, AEVOperator]:
        """Neighbour graph, edge vectors (Å) and AEV operator of ``batch``; the geometry carries
        no gradient."""
        graph = graph if graph is not None else self.graph(batch)
        with torch.no_grad():
            vec = graph.edge_vectors(batch.positions, batch.cells)
        op = AEVOperator(
            self.aev_params, vec, graph.centers, graph.offsets, batch.species[graph.neighbors], self.aev_backend
        )
        return graph, vec, op

    def atomic_terms(
        self, aev: torch.Tensor, species: torch.Tensor, want_grad: bool = True, chunk: int = 1024
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Atomic network energies (M, N) eV and their AEV gradients (M, N, F).

        Atoms go through the networks ``chunk`` at a time: the members' activations of a chunk
        stay in cache, which is faster on CPUs than one pass over all atoms.
        """
        m, n = self.n_members, aev.shape[0]
        energies = aev.new_zeros(m, n)
        grads = aev.new_zeros(m, n, aev.shape[1]) if want_grad else None
        for k, el in enumerate(self.elements):
            idx_all = torch.nonzero(species == k).squeeze(1)
            for start in range(0, idx_all.numel(), chunk):
                idx = idx_all[start : start + chunk]
                e, g = self.networks.energies_and_input_grads(el, aev[idx], want_grad)
                energies.index_copy_(1, idx, e)
                if want_grad:
                    grads.index_copy_(1, idx, g)
        return energies, grads

    @property
    def self_energies(self) -> torch.Tensor:
        """Per-element self energies (n_elements,) eV, float64."""
        return torch.tensor(self.self_energies_eV, dtype=torch.float64, device=self.device)

    def system_energies(self, atomic: torch.Tensor, batch: AtomsBatch) -> torch.Tensor:
        """(M, N) atomic energies -> (M, B) system energies in float64, self energies included."""
        per_atom = atomic.to(torch.float64) + self.self_energies[batch.species]
        out = per_atom.new_zeros(atomic.shape[0], batch.n_systems)
        return out.index_add(1, batch.system, per_atom)

    def evaluate(
        self,
        batch: AtomsBatch,
        *,
        forces: bool = True,
        member_forces: bool = False,
        stress: bool = False,
        graph: NeighborGraph | None = None,
    ) -> Prediction:
        """Energies (always), forces and stress (on request) of every system in ``batch``.

        member_forces: also every member's forces (needed for ``force_std``); stress with
        member_forces gives every member's stress too. Nothing is attached to autograd.
        """
        with torch.no_grad():
            batch = batch.to(self.device, self.dtype)
            graph, vec, op = self.aev_operator(batch, graph)
            aev = op.forward()
            need_grad = forces or stress
            atomic, grad_aev = self.atomic_terms(aev, batch.species, want_grad=need_grad)
            member_e = self.system_energies(atomic, batch)
            out = Prediction(
                energy=member_e.mean(0),
                member_energies=member_e,
                energy_std=member_e.std(0) if self.n_members > 1 else torch.zeros_like(member_e[0]),
            )
            if not need_grad:
                return out
            per_member = member_forces
            cot = grad_aev if per_member else grad_aev.mean(0, keepdim=True)
            gvec = op.vjp(cot)  # (E, K, 3): dE/d(edge vector)
            if forces:
                f = edge_to_atom_forces(gvec, graph, batch.n_atoms)
                if per_member:
                    out.member_forces = f
                    out.forces = f.mean(0)
                    if self.n_members > 1:
                        dev = f - out.forces
                        out.force_std = torch.sqrt((dev**2).sum(-1).sum(0) / (self.n_members - 1))
                    else:
                        out.force_std = torch.zeros(batch.n_atoms, dtype=f.dtype, device=f.device)
                else:
                    out.forces = f[0]
            if stress:
                # dE/d(strain)_{ab} = sum_e vec_{e,a} dE/dvec_{e,b}; stress = that / volume
                virial = torch.einsum("ea,ekb->keab", vec, gvec)
                w = torch.stack([virial[:, lo:hi].sum(1) for lo, hi in pairwise(graph.edge_offsets)], 1)
                w = 0.5 * (w + w.transpose(-1, -2))
                vol = batch.volumes().to(w.dtype)
                s = w / vol[None, :, None, None]
                if per_member:
                    out.member_stress = s
                    out.stress = s.mean(0)
                else:
                    out.stress = s[0]
            return out
