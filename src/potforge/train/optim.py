"""Adam for ensemble members whose weights are stacked on a leading axis.

Why not torch.optim.Adam: it has one learning rate per parameter tensor, but each member needs
its own (the paper's schedule halves a member's rate when *its* validation error stalls, and a
finished member stops while the others go on), and every tensor here holds all members.
The update is Adam's (Kingma & Ba), with a learning rate per member broadcast over its slice.
"""

from __future__ import annotations

import torch


class MemberAdam:
    """Adam over tensors of shape (members, ...), learning rate ``lr`` (members,) per member."""

    def __init__(
        self, params: list[torch.nn.Parameter], lr: torch.Tensor, betas=(0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.params = list(params)
        self.lr = lr.clone().to(torch.float64)
        self.betas = betas
        self.eps = eps
        self.step_count = 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.step_count += 1
        b1, b2 = self.betas
        c1 = 1 - b1**self.step_count
        c2 = 1 - b2**self.step_count
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            if p.grad is None:
                continue
            g = p.grad
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            lr = self.lr.to(device=p.device, dtype=p.dtype).view(-1, *([1] * (p.dim() - 1)))
            p.sub_(lr * (m / c1) / ((v / c2).sqrt() + self.eps))

    def state_dict(self) -> dict:
        return {
            "lr": self.lr.clone(),
            "step": self.step_count,
            "m": [t.clone() for t in self.m],
            "v": [t.clone() for t in self.v],
        }

    def load_state_dict(self, state: dict) -> None:
        self.lr = state["lr"].clone().to(torch.float64)
        self.step_count = int(state["step"])
        for dst, src in zip(self.m, state["m"], strict=True):
            dst.copy_(src)
        for dst, src in zip(self.v, state["v"], strict=True):
            dst.copy_(src)
