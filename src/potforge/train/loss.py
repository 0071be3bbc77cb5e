"""The paper's loss (Eq. 1) for all ensemble members at once.

For one frame with M atoms, reference energy E and forces f_j, a member predicting Ê and
f̂_j = -dÊ/dr_j has

    L = (Ê - E)² + (ℓ0 / M) Σ_j |f̂_j - f_j|²        (eV², ℓ0 in Å², default 0.01 Å²)

and, beyond the paper and off by default, a virial term w_σ (1/M) Σ_ab (V (σ̂_ab - σ_ab))²
(w_σ dimensionless, V the cell volume): where the oracle returns a stress (DFT codes and
classical potentials do), it tells the model how the energy changes with volume and shape,
which energies of disordered cells pin down only loosely — the equilibrium density, bulk
modulus and elastic constants of crystals the dataset holds few of.

Members have disjoint parameters, so summing their losses trains each on its own loss. The
force term needs d f̂ / d weights, i.e. second derivatives of the energy; here the networks'
input gradient is an explicit differentiable expression and the AEV's vector-Jacobian product
is linear with a known derivative (its JVP), so no second autograd pass over the AEV is needed.
"""

from __future__ import annotations

import torch

from potforge.model.ensemble import ANIEnsemble, edge_to_atom_forces
from potforge.model.neighbors import AtomsBatch


def member_slices(n_members: int, chunk: int | None) -> list[slice]:
    """The members trained together in one pass: all (``chunk`` None), or ``chunk`` at a time."""
    step = n_members if chunk is None else max(1, chunk)
    return [slice(lo, min(lo + step, n_members)) for lo in range(0, n_members, step)]


def geometry_of(model: ANIEnsemble, batch: AtomsBatch) -> tuple:
    """Neighbour graph, edge vectors, AEV operator and AEVs of ``batch``: what every member
    shares, computed once per batch however the members are chunked (for another architecture,
    what its own ``edges`` gives)."""
    if not isinstance(model, ANIEnsemble):
        return model.edges(batch)
    graph, vec, op = model.aev_operator(batch)
    return graph, vec, op, op.forward()


def predict_with_grad(
    model: ANIEnsemble,
    batch: AtomsBatch,
    want_forces: bool = True,
    want_stress: bool = False,
    members: slice | None = None,
    geometry: tuple | None = None,
):
    """Every member's energies (M, B) eV (float64) and forces (M, N, 3) eV/Å, differentiable in
    the network weights, and with ``want_stress`` (it needs ``want_forces``) also every member's
    virial dE/d(strain) (M, B, 3, 3) eV, i.e. volume × stress. ``members``: only those (M is
    their number); ``geometry``: :func:`geometry_of` the batch, to share it between calls. The
    geometry (neighbour graph, AEVs) carries no gradient. Another architecture (HIP-NN) gives its
    own ``predict_with_grad``, forces by autograd with ``create_graph``."""
    if not isinstance(model, ANIEnsemble):
        return model.predict_with_grad(batch, want_forces, want_stress, members, geometry=geometry)
    graph, vec, op, aev = geometry if geometry is not None else geometry_of(model, batch)
    atomic, grad_aev = model.atomic_terms(aev, batch.species, want_grad=want_forces, members=members)
    energies = model.system_energies(atomic, batch)
    if not want_forces:
        return (energies, None, None) if want_stress else (energies, None)
    gvec = op.vjp_differentiable(grad_aev)
    forces = edge_to_atom_forces(gvec, graph, batch.n_atoms)
    if want_stress:
        return energies, forces, model.virial(vec, gvec, graph)
    return energies, forces


def frame_losses(
    energies: torch.Tensor,
    forces: torch.Tensor | None,
    ref_energies: torch.Tensor,
    ref_forces: torch.Tensor,
    system: torch.Tensor,
    n_atoms: torch.Tensor,
    l0_A2: float = 0.01,
    virial: torch.Tensor | None = None,
    ref_virial: torch.Tensor | None = None,
    stress_weight: float = 0.0,
) -> torch.Tensor:
    """Eq. 1 per member and frame, (M, B) eV², plus the virial term where ``stress_weight`` > 0.

    energies (M, B) eV; forces (M, N, 3) eV/Å or None (energy only); ref_energies (B,);
    ref_forces (N, 3); system (N,) frame of each atom; n_atoms (B,); virial (M, B, 3, 3) and
    ref_virial (B, 3, 3) eV, volume × stress (NaN: no reference, no term).
    """
    loss = (energies - ref_energies.to(energies.dtype)) ** 2
    if forces is not None and l0_A2 > 0:
        sq = ((forces - ref_forces.to(forces.dtype)) ** 2).sum(-1)  # (M, N)
        per_frame = sq.new_zeros(sq.shape[0], n_atoms.shape[0]).index_add(1, system, sq)
        loss = loss + (l0_A2 / n_atoms.to(loss.dtype)) * per_frame.to(loss.dtype)
    if virial is not None and stress_weight > 0:
        known = torch.isfinite(ref_virial).all(-1).all(-1)  # (B,)
        ref = torch.where(known[:, None, None], ref_virial, torch.zeros_like(ref_virial)).to(virial.dtype)
        sq = ((virial - ref) ** 2).sum((-1, -2))  # (M, B)
        sq = torch.where(known[None, :], sq, torch.zeros_like(sq))
        loss = loss + (stress_weight / n_atoms.to(loss.dtype)) * sq.to(loss.dtype)
    return loss
