"""Training the first layer in standardised AEV coordinates (an exact reparametrisation).

ANI networks read raw AEVs, whose features differ in scale by orders of magnitude (a radial
shell at 1.9 Å varies by ~0.02, an angular feature by ~2). Adam's step is about ``lr`` per
weight whatever the feature's scale, so the weights of small features move far too little in
function space and those of large ones too much: the short-range radial features, which carry
the steep repulsion behind the largest forces, learn slowest.

Here the optimiser sees the first layer as it would act on standardised features
x' = (x − μ)/σ (μ, σ per element and feature, from the training atoms): with V = σ·W and
c = b + μ·W the layer computes x'·V + c = x·W + b exactly. Gradients are mapped to (V, c)
before the optimiser step and the updated (V, c) back to (W, b) after it, so the model and its
file format stay the raw-AEV networks of NeuroChem/TorchANI; only the optimiser's geometry
changes. Features that barely vary (σ below ``floor``) keep σ = ``floor``: their weights must
not take steps of lr/σ, which would blow up on the first atom where they do vary.
"""

from __future__ import annotations

import torch

from potforge.model.ensemble import ANIEnsemble


class FeatureScaling:
    """Per-element AEV mean and spread, and the maps between (W, b) and (V, c) of layer 0."""

    def __init__(self, mean: dict[str, torch.Tensor], std: dict[str, torch.Tensor]) -> None:
        self.mean = mean
        self.std = std

    @classmethod
    def fit(cls, model: ANIEnsemble, aevs: torch.Tensor, species: torch.Tensor, floor: float = 0.01) -> FeatureScaling:
        """From training-set AEVs (n_atoms, n_features) and their element indices."""
        mean, std = {}, {}
        for k, el in enumerate(model.elements):
            x = aevs[species == k].double()
            if x.shape[0] < 2:
                mean[el] = torch.zeros(aevs.shape[1], dtype=torch.float64)
                std[el] = torch.ones(aevs.shape[1], dtype=torch.float64)
                continue
            mean[el] = x.mean(0)
            std[el] = x.std(0).clamp(min=floor)
        return cls(mean, std)

    def state_dict(self) -> dict:
        return {"mean": dict(self.mean), "std": dict(self.std)}

    @classmethod
    def from_state_dict(cls, state: dict) -> FeatureScaling:
        return cls(dict(state["mean"]), dict(state["std"]))

    def _stats(self, el: str, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = self.mean[el].to(device=like.device, dtype=like.dtype)
        sd = self.std[el].to(device=like.device, dtype=like.dtype)
        return mu, sd

    @torch.no_grad()
    def to_standardised(self, model: ANIEnsemble) -> None:
        """(W, b) -> (V, c) in place: V = σ W, c = b + μ W. Gradients likewise (chain rule:
        dL/dV = dL/dW / σ − (μ/σ) dL/db, dL/dc = dL/db)."""
        for el in model.elements:
            w, b = model.networks.layer(el, 0)
            mu, sd = self._stats(el, w)
            if w.grad is not None and b.grad is not None:
                w.grad.div_(sd[:, None]).sub_((mu / sd)[:, None] * b.grad)  # b.grad (M, 1, out)
            b.add_(torch.einsum("i,mio->mo", mu, w)[:, None, :])
            w.mul_(sd[:, None])

    @torch.no_grad()
    def to_model(self, model: ANIEnsemble) -> None:
        """(V, c) -> (W, b) in place: W = V / σ, b = c − μ W."""
        for el in model.elements:
            w, b = model.networks.layer(el, 0)
            mu, sd = self._stats(el, w)
            w.div_(sd[:, None])
            b.sub_(torch.einsum("i,mio->mo", mu, w)[:, None, :])
