"""Per-element atomic networks for all ensemble members at once.

Each element has one multilayer perceptron per ensemble member; the members' weights are
stacked on a leading axis so that a layer of all M members is one batched matmul. Besides
atomic energies, :meth:`ElementNetworks.energies_and_input_grads` returns every member's
derivative of its atomic energy with respect to the AEV, written out as an explicit backward
pass: that is what forces need, it costs one extra matmul per layer, and because it is made of
ordinary differentiable torch ops, training can backpropagate through it (the force term of
the loss) without a second autograd pass over the whole graph.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import nn


def _celu_and_grad(z: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """CELU(z) = max(0, z) + min(0, alpha (exp(z/alpha) - 1)) and its derivative.

    The derivative is exp(z/alpha) = h/alpha + 1 for z <= 0 and 1 above, i.e.
    min(h/alpha + 1, 1): two cheap elementwise ops on h instead of another exp, and still
    correctly differentiable (training differentiates through it).
    """
    h = torch.nn.functional.celu(z, alpha)
    return h, torch.clamp(h * (1.0 / alpha) + 1.0, max=1.0)


class ElementNetworks(nn.Module):
    """MLPs ``layer_sizes[0] -> ... -> 1`` for each element and each of ``n_members`` members.

    Hidden layers use CELU(alpha) (ANI: alpha = 0.1), the output layer is linear, outputs are
    atomic energies in eV. Parameters are named ``w_<element>_<layer>`` with shape
    (members, in, out) and ``b_<element>_<layer>`` with shape (members, 1, out).
    """

    def __init__(
        self,
        elements: tuple[str, ...],
        layer_sizes: tuple[int, ...],
        n_members: int,
        celu_alpha: float = 0.1,
    ) -> None:
        super().__init__()
        if layer_sizes[-1] != 1:
            raise ValueError("the last layer of an atomic network must have one output")
        self.elements = tuple(elements)
        self.layer_sizes = tuple(int(n) for n in layer_sizes)
        self.n_members = int(n_members)
        self.celu_alpha = float(celu_alpha)
        for el in self.elements:
            for k, (n_in, n_out) in enumerate(pairwise(self.layer_sizes)):
                self.register_parameter(f"w_{el}_{k}", nn.Parameter(torch.empty(self.n_members, n_in, n_out)))
                self.register_parameter(f"b_{el}_{k}", nn.Parameter(torch.empty(self.n_members, 1, n_out)))

    @property
    def n_layers(self) -> int:
        return len(self.layer_sizes) - 1

    def layer(self, element: str, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"w_{element}_{k}"), getattr(self, f"b_{element}_{k}")

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Independent random initialisation of every member, drawn from ``generator``:
        uniform weights with variance 1/fan_in (TorchANI's Kaiming init with a = 1, i.e. for a
        linear-like activation) and zero biases."""
        with torch.no_grad():
            for el in self.elements:
                for k in range(self.n_layers):
                    w, b = self.layer(el, k)
                    bound = math.sqrt(3.0 / w.shape[1])
                    w.copy_(torch.rand(w.shape, generator=generator, dtype=w.dtype) * 2 * bound - bound)
                    b.zero_()

    def energies_and_input_grads(
        self, element: str, x: torch.Tensor, want_grad: bool = True, members: slice | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Atomic energies (M, n) eV and d energy / d x (M, n, F) for n atoms of one element.

        x: (n, F) AEVs shared by all members, or (M, n, F) one input per member. ``members``:
        only those members (M is then their number).
        """
        n_members = self.n_members if members is None else len(range(self.n_members)[members])

        def layer(k: int) -> tuple[torch.Tensor, torch.Tensor]:
            w, b = self.layer(element, k)
            return (w, b) if members is None else (w[members], b[members])  # no slicing node when unchunked

        h = x
        pre: list[torch.Tensor] = []
        dacts: list[torch.Tensor] = []
        for k in range(self.n_layers):
            w, b = layer(k)
            z = torch.matmul(h, w) + b
            if k < self.n_layers - 1:
                h, dh = _celu_and_grad(z, self.celu_alpha)
                dacts.append(dh)
            else:
                h = z
            pre.append(z)
        energies = h.squeeze(-1)
        if not want_grad:
            return energies, None
        w_last = layer(self.n_layers - 1)[0]
        g = w_last.transpose(1, 2).expand(n_members, x.shape[-2], -1)
        for k in range(self.n_layers - 2, -1, -1):
            g = g * dacts[k]
            w = layer(k)[0]
            g = torch.matmul(g, w.transpose(1, 2))
        return energies, g
