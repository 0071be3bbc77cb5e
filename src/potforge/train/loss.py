"""The paper's loss (Eq. 1) for all ensemble members at once.

For one frame with M atoms, reference energy E and forces f_j, a member predicting Ê and
f̂_j = -dÊ/dr_j has

    L = (Ê - E)² + (ℓ0 / M) Σ_j |f̂_j - f_j|²        (eV², ℓ0 in Å², default 0.01 Å²)

Members have disjoint parameters, so summing their losses trains each on its own loss. The
force term needs d f̂ / d weights, i.e. second derivatives of the energy; here the networks'
input gradient is an explicit differentiable expression and the AEV's vector-Jacobian product
is linear with a known derivative (its JVP), so no second autograd pass over the AEV is needed.
"""

from __future__ import annotations

import torch

from potforge.model.ensemble import ANIEnsemble, edge_to_atom_forces
from potforge.model.neighbors import AtomsBatch


def predict_with_grad(model: ANIEnsemble, batch: AtomsBatch, want_forces: bool = True):
    """Every member's energies (M, B) eV (float64) and forces (M, N, 3) eV/Å, differentiable in
    the network weights. The geometry (neighbour graph, AEVs) carries no gradient."""
    graph, _, op = model.aev_operator(batch)
    aev = op.forward()
    atomic, grad_aev = model.atomic_terms(aev, batch.species, want_grad=want_forces)
    energies = model.system_energies(atomic, batch)
    if not want_forces:
        return energies, None
    gvec = op.vjp_differentiable(grad_aev)
    forces = edge_to_atom_forces(gvec, graph, batch.n_atoms)
    return energies, forces


def frame_losses(
    energies: torch.Tensor,
    forces: torch.Tensor | None,
    ref_energies: torch.Tensor,
    ref_forces: torch.Tensor,
    system: torch.Tensor,
    n_atoms: torch.Tensor,
    l0_A2: float = 0.01,
) -> torch.Tensor:
    """Eq. 1 per member and frame, (M, B) eV².

    energies (M, B) eV; forces (M, N, 3) eV/Å or None (energy only); ref_energies (B,);
    ref_forces (N, 3); system (N,) frame of each atom; n_atoms (B,).
    """
    loss = (energies - ref_energies.to(energies.dtype)) ** 2
    if forces is not None and l0_A2 > 0:
        sq = ((forces - ref_forces.to(forces.dtype)) ** 2).sum(-1)  # (M, N)
        per_frame = sq.new_zeros(sq.shape[0], n_atoms.shape[0]).index_add(1, system, sq)
        loss = loss + (l0_A2 / n_atoms.to(loss.dtype)) * per_frame.to(loss.dtype)
    return loss
