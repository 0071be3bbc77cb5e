"""ANI atomic environment vectors (Smith, Isayev & Roitberg, Chem. Sci. 2017), as NeuroChem and
TorchANI define them: Behler-Parrinello radial terms and the modified angular terms with
ShfA/ShfZ sections, cosine cutoff. See ``_kernels/aev.c`` for the formulas.

Two interchangeable implementations of the map *edge vectors -> AEVs*:

* the C kernels (CPU, float32/float64), with an explicit VJP and JVP, used by default on CPU;
* :func:`aev_torch`, plain PyTorch with autograd, used on GPUs, when no C compiler exists, and
  in the tests as the independent reference the kernels are checked against.

:class:`AEVOperator` hides the choice: ``forward`` gives AEVs, ``vjp`` turns per-member AEV
gradients into edge-vector gradients (forces, virials), and ``vjp_differentiable`` does the
same inside an autograd graph (training through forces).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from potforge.model import kernels


@dataclass(frozen=True)
class AEVParams:
    """Hyperparameters of the ANI AEV. Distances in Å, eta in Å⁻², sections in radians."""

    elements: tuple[str, ...]
    radial_cutoff: float
    radial_eta: float
    radial_shifts: tuple[float, ...]
    angular_cutoff: float
    angular_eta: float
    angular_zeta: float
    angular_shifts: tuple[float, ...]
    angular_sections: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.angular_cutoff > self.radial_cutoff:
            raise ValueError("angular_cutoff must not exceed radial_cutoff")
        if not self.elements:
            raise ValueError("an AEV needs at least one element")

    @property
    def n_species(self) -> int:
        return len(self.elements)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(radial shifts, angular shifts, angular sections): what the C kernels are built for."""
        return (len(self.radial_shifts), len(self.angular_shifts), len(self.angular_sections))

    @property
    def radial_length(self) -> int:
        return self.n_species * len(self.radial_shifts)

    @property
    def n_features(self) -> int:
        s = self.n_species
        return self.radial_length + s * (s + 1) // 2 * len(self.angular_shifts) * len(self.angular_sections)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> AEVParams:
        keys = {
            "elements",
            "radial_cutoff",
            "radial_eta",
            "radial_shifts",
            "angular_cutoff",
            "angular_eta",
            "angular_zeta",
            "angular_shifts",
            "angular_sections",
        }
        missing = keys - set(d)
        if missing:
            raise ValueError(f"AEV parameters lack {sorted(missing)}")
        return cls(**{k: tuple(d[k]) if isinstance(d[k], list) else d[k] for k in keys})

    @classmethod
    def ani_al(cls) -> AEVParams:
        """The AEV of the published ANI-Al model (96 features for aluminium)."""
        return cls(
            elements=("Al",),
            radial_cutoff=7.0,
            radial_eta=43.9,
            radial_shifts=tuple(1.25 + 0.1796875 * k for k in range(32)),
            angular_cutoff=5.0,
            angular_eta=6.5,
            angular_zeta=69.4,
            angular_shifts=tuple(1.25 + 0.46875 * k for k in range(8)),
            angular_sections=tuple((2 * k + 1) * math.pi / 16 for k in range(8)),
        )

    def triu_index(self) -> torch.Tensor:
        """(n_species, n_species) index of each unordered species pair's angular block."""
        s = self.n_species
        out = torch.zeros(s, s, dtype=torch.long)
        k = 0
        for a in range(s):
            for b in range(a, s):
                out[a, b] = out[b, a] = k
                k += 1
        return out

    def kernel_params(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Integer parameters, real parameters (in ``dtype``) and pair-block table in the C
        kernels' layout."""
        ints = torch.tensor(
            [self.n_species, len(self.radial_shifts), len(self.angular_shifts), len(self.angular_sections)],
            dtype=torch.int32,
        )
        sections = torch.tensor(self.angular_sections, dtype=torch.float64)
        head = [self.radial_cutoff, self.radial_eta, self.angular_cutoff, self.angular_eta, self.angular_zeta]
        reals = torch.cat(
            [
                torch.tensor(head, dtype=torch.float64),
                torch.tensor(self.radial_shifts, dtype=torch.float64),
                torch.tensor(self.angular_shifts, dtype=torch.float64),
                torch.cos(sections),
                torch.sin(sections),
            ]
        ).to(dtype)
        return ints, reals, self.triu_index().to(torch.int32)


def _cosine_cutoff(d: torch.Tensor, rc: float) -> torch.Tensor:
    return 0.5 * torch.cos(d * (math.pi / rc)) + 0.5


def aev_torch(
    params: AEVParams,
    vec: torch.Tensor,
    centers: torch.Tensor,
    offsets: torch.Tensor,
    neighbor_species: torch.Tensor,
) -> torch.Tensor:
    """AEVs (n_centers, n_features) from a centre-sorted full edge list, in plain PyTorch.

    vec: (n_edges, 3) Å, differentiable; centers: (n_edges,) centre of each edge;
    offsets: (n_centers + 1,) CSR offsets; neighbor_species: (n_edges,) element index.
    Materialises every angular triple, so it is memory-hungry on CPUs; exact and autograd-able.
    """
    n_centers = offsets.shape[0] - 1
    dev, dt = vec.device, vec.dtype
    nR, nA, nZ = len(params.radial_shifts), len(params.angular_shifts), len(params.angular_sections)
    s = params.n_species
    d = vec.norm(dim=1)
    # radial
    in_r = d < params.radial_cutoff
    shfR = torch.tensor(params.radial_shifts, dtype=dt, device=dev)
    rad = 0.25 * torch.exp(-params.radial_eta * (d[in_r, None] - shfR) ** 2)
    rad = rad * _cosine_cutoff(d[in_r], params.radial_cutoff)[:, None]
    radial = torch.zeros(n_centers * s, nR, dtype=dt, device=dev)
    radial.index_add_(0, centers[in_r] * s + neighbor_species[in_r], rad)
    radial = radial.reshape(n_centers, s * nR)
    # angular: pairs (p < q) of each centre's neighbours within the angular cutoff
    in_a = torch.nonzero(d < params.angular_cutoff).squeeze(1)
    ca = centers[in_a]
    counts = torch.bincount(ca, minlength=n_centers)
    starts = torch.cumsum(counts, 0) - counts
    npairs = counts * (counts - 1) // 2
    kmax = int(counts.max()) if counts.numel() else 0
    # strict upper triangle ordered by the larger index, so a centre with n neighbours owns
    # exactly the first n(n-1)/2 entries
    hi = torch.arange(kmax, device=dev).repeat_interleave(torch.arange(kmax, device=dev))
    lo = torch.arange(hi.numel(), device=dev) - hi * (hi - 1) // 2  # row hi starts at hi(hi-1)/2
    pair_center = torch.repeat_interleave(torch.arange(n_centers, device=dev), npairs)
    local = torch.arange(int(npairs.sum()), device=dev) - (torch.cumsum(npairs, 0) - npairs)[pair_center]
    e1 = in_a[starts[pair_center] + lo[local]]
    e2 = in_a[starts[pair_center] + hi[local]]
    r1, r2 = d[e1], d[e2]
    cos = (vec[e1] * vec[e2]).sum(1) / (r1 * r2)
    # TorchANI/NeuroChem: theta = acos(0.95 cos); the 0.95 keeps acos differentiable
    theta = torch.acos(0.95 * cos)
    sections = torch.tensor(params.angular_sections, dtype=dt, device=dev)
    fz = 2 * ((1 + torch.cos(theta[:, None] - sections)) / 2) ** params.angular_zeta
    shfA = torch.tensor(params.angular_shifts, dtype=dt, device=dev)
    ga = torch.exp(-params.angular_eta * ((r1 + r2)[:, None] / 2 - shfA) ** 2)
    fc = _cosine_cutoff(r1, params.angular_cutoff) * _cosine_cutoff(r2, params.angular_cutoff)
    terms = (ga[:, :, None] * fz[:, None, :]).reshape(-1, nA * nZ) * fc[:, None]
    triu = params.triu_index().to(dev)
    block = triu[neighbor_species[e1], neighbor_species[e2]]
    npb = s * (s + 1) // 2
    angular = torch.zeros(n_centers * npb, nA * nZ, dtype=dt, device=dev)
    angular.index_add_(0, pair_center * npb + block, terms)
    return torch.cat([radial, angular.reshape(n_centers, npb * nA * nZ)], dim=1)


class _VJP(torch.autograd.Function):
    """grad_aev -> edge-vector gradient through the C kernels; differentiable in grad_aev
    (its derivative is the kernels' JVP), which is what training through forces needs."""

    @staticmethod
    def forward(ctx, grad_aev: torch.Tensor, args: kernels.KernelArgs) -> torch.Tensor:  # type: ignore[override]
        ctx.args = args
        return args.vjp(grad_aev)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        return ctx.args.jvp(grad_out), None


class AEVOperator:
    """The AEV map of one neighbour graph, with its derivatives.

    Build it once per geometry; ``forward`` is cached. vec: (n_edges, 3) edge vectors in Å.
    """

    def __init__(
        self,
        params: AEVParams,
        vec: torch.Tensor,
        centers: torch.Tensor,
        offsets: torch.Tensor,
        neighbor_species: torch.Tensor,
        backend: str = "auto",
        kernel_params: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        self.params = params
        self.vec = vec.detach()
        self.centers = centers
        self.offsets = offsets
        self.neighbor_species = neighbor_species
        use_c = backend == "c" or (
            backend == "auto" and vec.device.type == "cpu" and kernels.available(vec.dtype, params.shape)
        )
        if backend == "c" and not kernels.available(vec.dtype, params.shape):
            raise RuntimeError("the C AEV kernels are not available on this machine")
        self.backend = "c" if use_c else "torch"
        self._args: kernels.KernelArgs | None = None
        if use_c:
            ints, reals, triu = kernel_params if kernel_params is not None else params.kernel_params(vec.dtype)
            self._args = kernels.KernelArgs(offsets, self.vec, neighbor_species, ints, reals, triu, params.n_features)
        self._aev: torch.Tensor | None = None
        self._vec_leaf: torch.Tensor | None = None
        # PyTorch path: one vmapped backward pass for all members on a GPU, where M passes over
        # small tensors leave it idle between kernel launches (it takes M times the memory of
        # one pass); one pass per member on a CPU, where that buys nothing
        self.batch_members = vec.device.type != "cpu"

    def forward(self) -> torch.Tensor:
        """AEVs (n_atoms, n_features), not attached to any autograd graph."""
        if self._aev is None:
            if self._args is not None:
                self._aev = self._args.forward()
            else:
                with torch.enable_grad():
                    self._vec_leaf = self.vec.clone().requires_grad_(True)
                    self._aev_graph = aev_torch(
                        self.params, self._vec_leaf, self.centers, self.offsets, self.neighbor_species
                    )
                self._aev = self._aev_graph.detach()
        return self._aev

    def vjp(self, grad_aev: torch.Tensor) -> torch.Tensor:
        """grad_aev (M, n_atoms, n_features) -> d(sum grad_aev[m] * aev)/d vec, (n_edges, M, 3)."""
        if self._args is not None:
            return self._args.vjp(grad_aev)
        return self._torch_vjp(grad_aev, create_graph=False)

    def vjp_differentiable(self, grad_aev: torch.Tensor) -> torch.Tensor:
        """Like :meth:`vjp`, but differentiable with respect to ``grad_aev`` (for force training)."""
        if self._args is not None:
            return _VJP.apply(grad_aev, self._args)
        return self._torch_vjp(grad_aev, create_graph=True)

    def _torch_vjp(self, grad_aev: torch.Tensor, create_graph: bool) -> torch.Tensor:
        self.forward()
        if grad_aev.shape[0] > 1 and self.batch_members:
            (out,) = torch.autograd.grad(
                self._aev_graph, self._vec_leaf, grad_aev, retain_graph=True, create_graph=create_graph,
                is_grads_batched=True,
            )  # fmt: skip
            return out.transpose(0, 1)
        out = [
            torch.autograd.grad(self._aev_graph, self._vec_leaf, g, retain_graph=True, create_graph=create_graph)[0]
            for g in grad_aev.unbind(0)
        ]
        return torch.stack(out, dim=1)


class AEVComputer(nn.Module):
    """The AEV of a model, as a module: its hyperparameters, the kernels' parameter tensors and
    the backend choice (``"auto"``: C kernels on CPUs where they compile, PyTorch elsewhere;
    ``"c"``; ``"torch"``).

    Calling it on one geometry gives the :class:`AEVOperator` of that geometry (AEVs and their
    derivatives); the operator is per geometry because it caches what the kernels computed.
    The kernel parameters are kept per dtype, derived from the float64 hyperparameters (not
    buffers: a model taken to float32 and back must not have rounded its AEV constants).
    """

    def __init__(self, params: AEVParams, backend: str = "auto") -> None:
        super().__init__()
        self.params = params
        self.backend = backend
        self._kernel_params: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in ("auto", "c", "torch"):
            raise ValueError(f"unknown AEV backend {value!r} (auto, c or torch)")
        self._backend = value

    @property
    def cutoff_A(self) -> float:
        return self.params.radial_cutoff

    def forward(
        self, vec: torch.Tensor, centers: torch.Tensor, offsets: torch.Tensor, neighbor_species: torch.Tensor
    ) -> AEVOperator:
        """The AEV operator of the edge vectors ``vec`` (n_edges, 3) Å of a centre-sorted graph."""
        kp = self._kernel_params.get(vec.dtype)
        if kp is None:
            kp = self._kernel_params[vec.dtype] = self.params.kernel_params(vec.dtype)
        return AEVOperator(self.params, vec, centers, offsets, neighbor_species, self.backend, kp)
