"""The C AEV kernels against the independent pure-PyTorch AEV (autograd for the derivatives) and
against TorchANI's AEVComputer, including a two-element AEV (species blocks and pair blocks)."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch

from potforge.model import kernels
from potforge.model.aev import AEVOperator, AEVParams, aev_torch
from potforge.model.neighbors import AtomsBatch, build_graph

TWO_ELEMENTS = AEVParams(
    elements=("Al", "Cu"),
    radial_cutoff=5.2,
    radial_eta=16.0,
    radial_shifts=tuple(0.9 + 0.27 * k for k in range(16)),
    angular_cutoff=3.5,
    angular_eta=8.0,
    angular_zeta=32.0,
    angular_shifts=tuple(0.9 + 0.65 * k for k in range(4)),
    angular_sections=tuple((2 * k + 1) * math.pi / 16 for k in range(8)),
)


def two_element_system(seed: int = 0):
    rng = np.random.default_rng(seed)
    from potforge.structures import place_atoms

    lengths = np.array([7.5, 8.0, 6.5])
    pos = place_atoms(lengths, 30, 1.8, rng)
    species = torch.tensor(rng.integers(0, 2, size=30))
    batch = AtomsBatch(
        torch.tensor(pos, dtype=torch.float64),
        species,
        torch.zeros(30, dtype=torch.long),
        torch.tensor(np.diag(lengths))[None],
        torch.tensor([[True, True, True]]),
    )
    return batch


def operator_inputs(params, batch):
    graph = build_graph(batch, params.radial_cutoff, params.n_species)
    vec = graph.edge_vectors(batch.positions, batch.cells)
    return graph, vec, batch.species[graph.neighbors]


requires_c = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")


@requires_c
def test_c_kernels_build_on_this_machine():
    assert kernels.available(torch.float64, TWO_ELEMENTS.shape)
    assert kernels.available(torch.float32, AEVParams.ani_al().shape)


@requires_c
@pytest.mark.parametrize("params", [TWO_ELEMENTS, AEVParams.ani_al()], ids=["two_elements", "ani_al"])
def test_forward_vjp_jvp_match_autograd_reference(params):
    batch = two_element_system()
    if params.n_species == 1:
        batch.species = torch.zeros_like(batch.species)
    graph, vec, nspec = operator_inputs(params, batch)
    op = AEVOperator(params, vec, graph.centers, graph.offsets, nspec, backend="c")
    vec_leaf = vec.clone().requires_grad_(True)
    ref = aev_torch(params, vec_leaf, graph.centers, graph.offsets, nspec)
    torch.testing.assert_close(op.forward(), ref.detach(), rtol=1e-11, atol=1e-11)

    gen = torch.Generator().manual_seed(1)
    cot = torch.randn((3, *ref.shape), generator=gen, dtype=torch.float64)
    vjp_c = op.vjp(cot)
    for m in range(3):
        (vjp_ref,) = torch.autograd.grad(ref, vec_leaf, cot[m], retain_graph=True)
        torch.testing.assert_close(vjp_c[:, m], vjp_ref, rtol=1e-10, atol=1e-10)

    # JVP = derivative of the VJP with respect to the cotangent, checked through autograd
    tangent = torch.randn((vec.shape[0], 2, 3), generator=gen, dtype=torch.float64)
    cot_leaf = cot[:2].clone().requires_grad_(True)
    out = op.vjp_differentiable(cot_leaf)
    (jvp_c,) = torch.autograd.grad((out * tangent).sum(), cot_leaf)
    for m in range(2):
        c = cot[m].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(ref, vec_leaf, c, create_graph=True)
        (jvp_ref,) = torch.autograd.grad((g * tangent[:, m]).sum(), c, retain_graph=True)
        torch.testing.assert_close(jvp_c[m], jvp_ref, rtol=1e-10, atol=1e-10)


def test_two_element_aev_matches_torchani():
    pytest.importorskip("torchani")
    from torchani.aev import AEVComputer

    p = TWO_ELEMENTS
    ta = AEVComputer.from_constants(
        radial_cutoff=p.radial_cutoff,
        angular_cutoff=p.angular_cutoff,
        radial_eta=p.radial_eta,
        radial_shifts=p.radial_shifts,
        angular_eta=p.angular_eta,
        angular_zeta=p.angular_zeta,
        angular_shifts=p.angular_shifts,
        sections=p.angular_sections,
        num_species=2,
    ).double()
    batch = two_element_system(seed=5)
    ref = ta(batch.species[None], batch.positions[None], batch.cells[0], batch.pbc[0])[0]
    graph, vec, nspec = operator_inputs(p, batch)
    for backend in ["auto", "torch"]:
        ours = AEVOperator(p, vec, graph.centers, graph.offsets, nspec, backend=backend).forward()
        # TorchANI rounds AEV constants to float32; the tolerance covers that, not more
        torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)


@requires_c
def test_float32_kernels_agree_with_float64():
    params = AEVParams.ani_al()
    batch = two_element_system()
    batch.species = torch.zeros_like(batch.species)
    graph, vec, nspec = operator_inputs(params, batch)
    a64 = AEVOperator(params, vec, graph.centers, graph.offsets, nspec).forward()
    a32 = AEVOperator(params, vec.float(), graph.centers, graph.offsets, nspec).forward()
    assert (a32.double() - a64).abs().max() <= 1e-5 * a64.abs().max()


def test_member_batched_vjp_equals_one_pass_per_member():
    """The PyTorch path's vmapped backward (used on GPUs) gives each member's VJP and its
    derivative exactly as one backward pass per member does."""
    params = AEVParams.ani_al()
    batch = two_element_system()
    batch.species = torch.zeros_like(batch.species)
    graph, vec, nspec = operator_inputs(params, batch)
    gen = torch.Generator().manual_seed(2)
    results = []
    for batched in (False, True):
        op = AEVOperator(params, vec, graph.centers, graph.offsets, nspec, backend="torch")
        op.batch_members = batched
        cot = torch.randn((3, batch.n_atoms, params.n_features), generator=gen.manual_seed(2), dtype=torch.float64)
        cot.requires_grad_(True)
        out = op.vjp_differentiable(cot)
        tangent = torch.randn(out.shape, generator=gen.manual_seed(3), dtype=torch.float64)
        (jvp,) = torch.autograd.grad((out * tangent).sum(), cot)
        results.append((op.vjp(cot.detach()), out.detach(), jvp))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
