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
from typing import Literal, overload

import torch
from torch import nn

from potforge.errors import UnknownElementError
from potforge.model import kernels
from potforge.model.aev import AEVComputer, AEVOperator, AEVParams
from potforge.model.neighbors import AtomsBatch, NeighborGraph, build_graph
from potforge.model.networks import ElementNetworks


@dataclass(kw_only=True)
class EnergyPrediction:
    """Energies of a batch (every call mode). Units: eV. M members, B systems."""

    energy: torch.Tensor  # (B,) ensemble mean
    member_energies: torch.Tensor  # (M, B)
    energy_std: torch.Tensor  # (B,)


@dataclass(kw_only=True)
class ForcePrediction(EnergyPrediction):
    """Energies, ensemble-mean forces (N, 3) eV/Å and, on request, stress (B, 3, 3) eV/Å³ (ASE sign)."""

    forces: torch.Tensor
    stress: torch.Tensor | None = None


@dataclass(kw_only=True)
class MemberPrediction(ForcePrediction):
    """Also every member's forces (M, N, 3), their spread ``force_std`` (N,) eV/Å and, with
    stress, every member's stress (M, B, 3, 3)."""

    member_forces: torch.Tensor
    force_std: torch.Tensor
    member_stress: torch.Tensor | None = None


def member_moments(x: torch.Tensor, variance: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean over members (axis 0) and sample variance (ddof 1; zeros for one member) of ``x``.

    Accumulated member by member in elementwise operations, so each entry's result depends on
    its own values alone: a system's prediction is bit for bit the same whatever else is in the
    batch (a library reduction may vectorise differently for another shape, and round
    differently).
    """
    m = x.shape[0]
    total = x[0].clone()
    for k in range(1, m):
        total = total + x[k]
    mean = total / m
    if not variance:
        return mean, None
    if m == 1:
        return mean, torch.zeros_like(mean)
    sq = (x[0] - mean) ** 2
    for k in range(1, m):
        sq = sq + (x[k] - mean) ** 2
    return mean, sq / (m - 1)


def check_weights(weights: torch.Tensor | None, n_members: int, n_systems: int) -> None:
    """Member weights (M, B) for :meth:`evaluate`: the right shape, each column summing to 1."""
    if weights is None:
        return
    if tuple(weights.shape) != (n_members, n_systems):
        raise ValueError(f"member weights of shape {tuple(weights.shape)}, expected ({n_members}, {n_systems})")
    if not torch.allclose(weights.double().sum(0), torch.ones(n_systems, dtype=torch.float64), atol=1e-6):
        raise ValueError("member weights must sum to 1 for each system")


def weighted_sum(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Σ_m w[m] x[m] over axis 0 (``w`` broadcasts against ``x[m]``), accumulated member by
    member as :func:`member_moments` is, so a system's result does not depend on its batch."""
    w = w.to(x.device, x.dtype)
    total = w[0] * x[0]
    for k in range(1, x.shape[0]):
        total = total + w[k] * x[k]
    return total


def weighted_members(
    weights: torch.Tensor, member_forces: torch.Tensor, member_stress: torch.Tensor | None, system: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Forces (N, 3) and stress (B, 3, 3) of Σ_m w_mb E_mb from every member's (M, N, 3) and
    (M, B, 3, 3); ``system`` (N,) each atom's system."""
    forces = weighted_sum(weights[:, system, None], member_forces)
    stress = None if member_stress is None else weighted_sum(weights[:, :, None, None], member_stress)
    return forces, stress


def species_indices(elements: tuple[str, ...], symbols: list[str], device: torch.device) -> torch.Tensor:
    """Indices into ``elements`` of chemical ``symbols`` (long, on ``device``); an element a model
    does not know raises :class:`UnknownElementError`. Shared by every architecture."""
    lookup = {el: k for k, el in enumerate(elements)}
    unknown = sorted({s for s in symbols if s not in lookup})
    if unknown:
        raise UnknownElementError(
            f"element(s) {', '.join(unknown)} not in this model, which knows only {', '.join(elements)}"
        )
    return torch.tensor([lookup[s] for s in symbols], dtype=torch.long, device=device)


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
        self.aev = AEVComputer(aev)
        self.networks = ElementNetworks(aev.elements, layer_sizes, n_members, celu_alpha)
        sae = [0.0] * aev.n_species if self_energies is None else list(self_energies)
        if len(sae) != aev.n_species:
            raise ValueError(f"{len(sae)} self energies for {aev.n_species} elements")
        # a plain attribute, not a buffer: Module.to(float32) must not round self energies of
        # ~70 eV to float32 (1e-5 eV), and system energies are summed in float64
        self.self_energies_eV: list[float] = [float(x) for x in sae]
        self.metadata: dict = dict(metadata or {})

    @property
    def aev_params(self) -> AEVParams:
        return self.aev.params

    @property
    def cutoff_A(self) -> float:
        """Interaction range (Å): the radial AEV cutoff."""
        return self.aev.cutoff_A

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
        return species_indices(self.elements, symbols, self.device)

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
        return graph, vec, self.aev(vec, graph.centers, graph.offsets, batch.species[graph.neighbors])

    def atomic_terms(
        self,
        aev: torch.Tensor,
        species: torch.Tensor,
        want_grad: bool = True,
        chunk: int = 1024,
        segments: list[int] | None = None,
        members: slice | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Atomic network energies (M, N) eV and their AEV gradients (M, N, F); with ``members``,
        of those members only (training a few at a time bounds its memory).

        Outside autograd on a CPU, the fused C kernel (``_kernels/mlp.c``) computes each atom
        alone: its numbers are bit for bit the same whatever else is in the batch. Otherwise
        (training, GPUs, no compiler) atoms go through PyTorch ``chunk`` at a time, so that the
        members' activations of a chunk stay in cache; with ``segments`` (atom offsets of the
        systems, B + 1) no chunk spans two systems, which keeps a system's numbers independent
        of the batch there too (a matrix product's rounding can depend on where a row sits in it).
        """
        m, n = len(range(self.n_members)[members or slice(None)]), aev.shape[0]
        inference = not torch.is_grad_enabled() and aev.device.type == "cpu" and members is None
        energies = aev.new_zeros(m, n)
        grads = aev.new_zeros(m, n, aev.shape[1]) if want_grad else None
        single = len(self.elements) == 1
        for k, el in enumerate(self.elements):
            if inference:
                idx = None if single else torch.nonzero(species == k).squeeze(1)
                x = aev if single else aev[idx]
                if x.shape[0] == 0:
                    continue
                layers = [self.networks.layer(el, j) for j in range(self.networks.n_layers)]
                fused = kernels.mlp_energies_grads([w for w, _ in layers], [b for _, b in layers],
                                                   self.networks.celu_alpha, x, want_grad)  # fmt: skip
                if fused is not None:
                    if single:
                        energies, grads = fused
                    else:
                        energies.index_copy_(1, idx, fused[0])
                        if want_grad:
                            grads.index_copy_(1, idx, fused[1])
                    continue
            for lo, hi in pairwise([0, n] if segments is None else segments):
                if single:  # one element: contiguous slices, no gather
                    for start in range(lo, hi, chunk):
                        stop = min(start + chunk, hi)
                        e, g = self.networks.energies_and_input_grads(el, aev[start:stop], want_grad, members)
                        energies[:, start:stop] = e
                        if want_grad:
                            grads[:, start:stop] = g
                    continue
                idx_all = torch.nonzero(species[lo:hi] == k).squeeze(1) + lo
                for start in range(0, idx_all.numel(), chunk):
                    idx = idx_all[start : start + chunk]
                    e, g = self.networks.energies_and_input_grads(el, aev[idx], want_grad, members)
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

    @overload
    def evaluate(
        self,
        batch: AtomsBatch,
        *,
        forces: Literal[False],
        member_forces: Literal[False] = ...,
        stress: Literal[False] = ...,
        graph: NeighborGraph | None = ...,
        weights: torch.Tensor | None = ...,
    ) -> EnergyPrediction: ...
    @overload
    def evaluate(
        self,
        batch: AtomsBatch,
        *,
        forces: Literal[True] = ...,
        member_forces: Literal[False] = ...,
        stress: bool = ...,
        graph: NeighborGraph | None = ...,
        weights: torch.Tensor | None = ...,
    ) -> ForcePrediction: ...
    @overload
    def evaluate(
        self,
        batch: AtomsBatch,
        *,
        forces: bool = ...,
        member_forces: Literal[True],
        stress: bool = ...,
        graph: NeighborGraph | None = ...,
        weights: torch.Tensor | None = ...,
    ) -> MemberPrediction: ...
    def evaluate(
        self,
        batch: AtomsBatch,
        *,
        forces: bool = True,
        member_forces: bool = False,
        stress: bool = False,
        graph: NeighborGraph | None = None,
        weights: torch.Tensor | None = None,
    ) -> EnergyPrediction:
        """Energies (always), forces and stress (on request) of every system in ``batch``; the
        type of the result says what it holds.

        ``member_forces``: also every member's forces (``force_std``) and, with ``stress``,
        every member's stress; it implies ``forces``. ``stress`` needs ``forces`` or
        ``member_forces``. ``graph``: a neighbour graph of ``batch`` built with at least the
        model's cutoff (a longer one, as MD reuses between steps, is fine). Nothing is attached
        to autograd.

        ``weights`` (M, B), each column summing to 1: ``energy``, ``forces`` and ``stress`` are
        those of Σ_m w_mb E_mb instead of the mean (one member's, for a trajectory driven by a
        single member); member energies, forces and spreads are unaffected.
        """
        if stress and not (forces or member_forces):
            raise ValueError("stress needs forces=True or member_forces=True")
        check_weights(weights, self.n_members, batch.n_systems)
        with torch.no_grad():
            batch = batch.to(self.device, self.dtype)
            graph, vec, op = self.aev_operator(batch, graph)
            aev = op.forward()
            need_grad = forces or member_forces
            segments = [0, *torch.cumsum(batch.atoms_per_system(), 0).tolist()]
            atomic, grad_aev = self.atomic_terms(aev, batch.species, want_grad=need_grad, segments=segments)
            member_e = self.system_energies(atomic, batch)
            energy, energy_var = member_moments(member_e)
            energy_std = energy_var.sqrt()
            if weights is not None:
                energy = weighted_sum(weights, member_e)
            if not need_grad:
                return EnergyPrediction(energy=energy, member_energies=member_e, energy_std=energy_std)
            if member_forces:
                cot = grad_aev
            elif weights is not None:  # one cotangent: the weighted sum of the members' gradients
                cot = weighted_sum(weights.to(grad_aev.device)[:, batch.system, None], grad_aev)[None]
            else:
                cot = member_moments(grad_aev, variance=False)[0][None]
            gvec = op.vjp(cot)  # (E, K, 3): dE/d(edge vector)
            f = edge_to_atom_forces(gvec, graph, batch.n_atoms)
            s = self._stress(vec, gvec, graph, batch) if stress else None
            if not member_forces:
                return ForcePrediction(
                    energy=energy, member_energies=member_e, energy_std=energy_std, forces=f[0],
                    stress=None if s is None else s[0],
                )  # fmt: skip
            mean_f, var_f = member_moments(f)
            force_std = (var_f[:, 0] + var_f[:, 1] + var_f[:, 2]).sqrt()
            drive_f, drive_s = mean_f, None if s is None else s.mean(0)
            if weights is not None:
                drive_f, drive_s = weighted_members(weights, f, s, batch.system)
            return MemberPrediction(
                energy=energy, member_energies=member_e, energy_std=energy_std, forces=drive_f,
                stress=drive_s, member_forces=f, force_std=force_std, member_stress=s,
            )  # fmt: skip

    @staticmethod
    def virial(vec: torch.Tensor, gvec: torch.Tensor, graph: NeighborGraph) -> torch.Tensor:
        """(K, B, 3, 3) dE/d(strain)_ab = Σ_e vec_ea dE/dvec_eb of each cotangent, eV (symmetric)."""
        per_edge = torch.einsum("ea,ekb->keab", vec, gvec)
        w = torch.stack([per_edge[:, lo:hi].sum(1) for lo, hi in pairwise(graph.edge_offsets)], 1)
        return 0.5 * (w + w.transpose(-1, -2))

    @classmethod
    def _stress(cls, vec: torch.Tensor, gvec: torch.Tensor, graph: NeighborGraph, batch: AtomsBatch) -> torch.Tensor:
        """(K, B, 3, 3) stress of each cotangent: the virial over the volume, eV/Å³."""
        w = cls.virial(vec, gvec, graph)
        vol = batch.volumes().to(w.dtype)
        return w / vol[None, :, None, None]
