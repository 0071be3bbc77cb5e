"""HIP-NN ensembles (Lubbers, Smith & Barros, J. Chem. Phys. 148, 241715 (2018)): the ANI-Al
paper's second architecture, implementing the same :class:`~potforge.model.interface.Potential`
protocol as :class:`~potforge.model.ensemble.ANIEnsemble`.

What comes from ``hippynn`` (the authors' library, ``pip install potforge[hipnn]``) and what
does not:

* The network is hippynn's own: its ``Hipnn`` (or, with ``tensor_order`` 1, ``HipnnVec``, HIP-NN-TS)
  module — the interaction layers with their learned inverse-distance sensitivities and cos²
  cutoff, the residual atom layers — and the linear read-out layers of its ``HEnergy`` target,
  one per hierarchy level, summed over levels and atoms (the hierarchical energy of the paper).
* The neighbour list is potforge's (:func:`potforge.model.neighbors.build_graph`), not hippynn's
  pair finders: hippynn's default periodic finder looks only at the 27 cells around the home
  cell, too few for the 6–8 Å boxes of the random cells at a 7 Å cutoff (an atom then needs
  images two or more cells away). potforge's list is periodic with any number of images, is
  the one MD reuses between steps with a skin, and carries the integer cell shifts, so the
  network gets pair indices ``(centre, neighbour)`` and distances of the *full* directed list
  (each pair twice, as hippynn's finders produce them), and forces and stress come from one
  gradient with respect to the edge vectors, exactly as for ANI.
* hippynn's message-passing kernels default to a ``torch.compile``-wrapped implementation on
  machines without numba/cupy/triton, which compiles on first use and cannot be differentiated
  twice (training with forces needs that); potforge selects hippynn's plain PyTorch kernels
  and switches off hippynn's low-distance warning (MD's stability checks own that) when this
  module is imported.

Ensemble layout: M members with independent initialisations, their parameters stacked on a
leading member axis (the layout of ANI's networks, so the per-member Adam, the per-member
best weights and the checkpoints of :mod:`potforge.train` apply unchanged); each member runs
hippynn's module with its slice of the parameters (``torch.func.functional_call``).

Energy of a system = Σ_atoms Σ_levels read-out(features) + Σ_atoms self energy (eV), in float64.
Uncertainty measures are the ensemble's, defined as for ANI (``energy_std``, ``force_std``).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from potforge.model.ensemble import (
    ANIEnsemble,
    EnergyPrediction,
    ForcePrediction,
    MemberPrediction,
    check_weights,
    edge_to_atom_forces,
    member_moments,
    species_indices,
    weighted_members,
    weighted_sum,
)
from potforge.model.neighbors import AtomsBatch, NeighborGraph, build_graph

ARCHITECTURE = "hipnn"


def _hippynn():
    """Import hippynn with its plain PyTorch kernels and without its low-distance warning."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import hippynn
            from hippynn import custom_kernels
    except ImportError as exc:  # pragma: no cover - depends on the environment
        from potforge.errors import ModelFileError

        raise ModelFileError(f"HIP-NN models need hippynn: pip install 'potforge[hipnn]' ({exc})") from None
    if custom_kernels.CUSTOM_KERNELS_ACTIVE != "_pytorch_raw":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "non-standard implementation": it is hippynn's own
            custom_kernels.set_custom_kernels("_pytorch_raw")
    hippynn.settings.WARN_LOW_DISTANCES = False
    return hippynn


@dataclass(frozen=True)
class HipnnParams:
    """Hyperparameters of one HIP-NN member (see docs/hipnn.md for the reasons of the defaults).

    Lengths Å. ``cutoff_A`` is hippynn's ``dist_hard_max`` (where the cos² cutoff reaches
    zero); the ``n_sensitivities`` sensitivity functions start evenly spaced in 1/r between
    ``soft_min_A`` and ``soft_max_A`` and are learned.
    """

    elements: tuple[str, ...]
    n_features: int = 10
    n_sensitivities: int = 20
    soft_min_A: float = 1.25
    soft_max_A: float = 6.5
    cutoff_A: float = 7.0
    n_interaction_layers: int = 2
    n_atom_layers: int = 3
    tensor_order: Literal[0, 1] = 0
    cusp_reg: float = 1e-6
    energy_decay: float = 1e-2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["elements"] = list(self.elements)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> HipnnParams:
        d = dict(d)
        d["elements"] = tuple(d["elements"])
        return cls(**d)


class HipnnMember(nn.Module):
    """One HIP-NN: hippynn's network and the read-out layers of its ``HEnergy`` target.

    forward(onehot (N, S), first (P,), second (P,), dist (P,) Å, vec (P, 3) Å, system (N,),
    n_systems) -> atomic energies (N,) eV, without self energies.
    """

    def __init__(self, p: HipnnParams) -> None:
        super().__init__()
        _hippynn()
        from hippynn.layers.targets import HEnergy
        from hippynn.networks.hipnn import Hipnn, HipnnVec

        cls = HipnnVec if p.tensor_order == 1 else Hipnn
        kwargs = {"cusp_reg": p.cusp_reg} if p.tensor_order == 1 else {}
        self.tensor_order = p.tensor_order
        self.net = cls(
            n_features=p.n_features,
            n_sensitivities=p.n_sensitivities,
            dist_soft_min=p.soft_min_A,
            dist_soft_max=p.soft_max_A,
            dist_hard_max=p.cutoff_A,
            n_atom_layers=p.n_atom_layers,
            n_interaction_layers=p.n_interaction_layers,
            n_input_features=len(p.elements),
            sensitivity_type="inverse",
            resnet=True,
            **kwargs,
        )
        self.energy = HEnergy(self.net.feature_sizes, first_is_interacting=False)

    def forward(self, onehot, first, second, dist, vec):
        if self.tensor_order == 1:
            features = self.net(onehot, first, second, dist, vec)
        else:
            features = self.net(onehot, first, second, dist)
        # HEnergy's read-out without its hierarchicality diagnostics: Σ over levels of the linear terms
        atomic = self.energy.layers[0](features[0])
        for x, layer in zip(features[1:], self.energy.layers[1:], strict=True):
            atomic = atomic + layer(x)
        return atomic.squeeze(-1)


class StackedMembers(nn.Module):
    """The parameters of M members of one architecture, stacked on a leading axis (M, ...).

    ``state_dict`` keys are the member module's parameter names with ``.`` written ``__``.
    """

    def __init__(self, members: list[HipnnMember]) -> None:
        super().__init__()
        template = members[0]
        self._names = [n for n, _ in template.named_parameters()]
        for name in self._names:
            stacked = torch.stack([dict(m.named_parameters())[name].detach() for m in members])
            self.register_parameter(name.replace(".", "__"), nn.Parameter(stacked.clone()))
        # kept outside the module tree: only its structure is used, never its own parameters
        object.__setattr__(self, "_template", template)

    @property
    def n_members(self) -> int:
        return int(getattr(self, self._names[0].replace(".", "__")).shape[0])

    def member_parameters(self, m: int) -> dict[str, torch.Tensor]:
        return {n: getattr(self, n.replace(".", "__"))[m] for n in self._names}

    def run(self, m: int, *args):
        return torch.func.functional_call(self._template, self.member_parameters(m), args)


class HipnnEnsemble(nn.Module):
    """An ensemble of M HIP-NN members on potforge's neighbour graph.

    ``self_energies`` (n_elements,) eV are added per atom; ``metadata`` is free-form provenance
    saved with the model.
    """

    architecture = ARCHITECTURE

    def __init__(
        self,
        params: HipnnParams,
        n_members: int,
        self_energies: list[float] | None = None,
        metadata: dict | None = None,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        if n_members < 1:
            raise ValueError("an ensemble needs at least one member")
        self.params = params
        members = []
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            for _ in range(n_members):
                member = HipnnMember(params).to(torch.float64)
                with torch.no_grad():
                    # hippynn's hierarchical initialisation with the non-interacting energy
                    # (potforge's self energies, outside the network) at zero: the first read-out
                    # starts at 0 and each further one is damped by energy_decay per level
                    member.energy.layers[0].weight.zero_()
                    for k, layer in enumerate(member.energy.layers[1:], start=1):
                        layer.weight.mul_(params.energy_decay**k)
                members.append(member)
        self.networks = StackedMembers(members)
        sae = [0.0] * len(params.elements) if self_energies is None else list(self_energies)
        if len(sae) != len(params.elements):
            raise ValueError(f"{len(sae)} self energies for {len(params.elements)} elements")
        self.self_energies_eV: list[float] = [float(x) for x in sae]
        self.metadata: dict = dict(metadata or {})

    # --- the Potential protocol ----------------------------------------------------------

    @property
    def elements(self) -> tuple[str, ...]:
        return tuple(self.params.elements)

    @property
    def n_members(self) -> int:
        return self.networks.n_members

    @property
    def cutoff_A(self) -> float:
        """Interaction range of one interaction layer (Å); the receptive field is
        ``n_interaction_layers`` times this, reached through the graph."""
        return float(self.params.cutoff_A)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.networks.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.networks.parameters()).device

    def species_index(self, symbols: list[str]) -> torch.Tensor:
        return species_indices(self.elements, symbols, self.device)

    def graph(self, batch: AtomsBatch) -> NeighborGraph:
        return build_graph(batch, self.cutoff_A, len(self.elements))

    @property
    def self_energies(self) -> torch.Tensor:
        return torch.tensor(self.self_energies_eV, dtype=torch.float64, device=self.device)

    # --- the computation -----------------------------------------------------------------

    def edges(self, batch: AtomsBatch, graph: NeighborGraph | None = None) -> tuple[NeighborGraph, torch.Tensor]:
        """The graph and the indices of its edges within the cutoff (a graph built with a
        longer cutoff, as MD's with its skin, is cut down here); no gradient."""
        graph = graph if graph is not None else self.graph(batch)
        with torch.no_grad():
            vec = graph.edge_vectors(batch.positions, batch.cells)
            keep = torch.nonzero((vec * vec).sum(-1) < self.cutoff_A**2).squeeze(1)
        return graph, keep

    def member_energies(
        self,
        batch: AtomsBatch,
        graph: NeighborGraph,
        keep: torch.Tensor,
        vec: torch.Tensor,
        members: slice | None = None,
    ) -> torch.Tensor:
        """System energies (M, B) eV float64 of the members in ``members`` (all by default).

        ``vec``: edge vectors of the kept edges, (P, 3) shared by all members or (M, P, 3) one
        copy per member (then a single gradient gives every member's own dE/dvec)."""
        idx = range(self.n_members)[members or slice(None)]
        first, second = graph.centers[keep], graph.neighbors[keep]
        onehot = nn.functional.one_hot(batch.species, len(self.elements)).to(self.dtype)
        sae = self.self_energies[batch.species]
        out = []
        for j, m in enumerate(idx):
            v = vec if vec.dim() == 2 else vec[j]
            dist = torch.linalg.vector_norm(v, dim=-1)
            atomic = self.networks.run(m, onehot, first, second, dist, v)
            per_atom = atomic.to(torch.float64) + sae
            out.append(per_atom.new_zeros(batch.n_systems).index_add(0, batch.system, per_atom))
        return torch.stack(out)

    def predict_with_grad(
        self,
        batch: AtomsBatch,
        want_forces: bool = True,
        want_stress: bool = False,
        members: slice | None = None,
        create_graph: bool = True,
        geometry: tuple | None = None,
    ):
        """Every member's energies (M, B) eV float64, forces (M, N, 3) eV/Å and, with
        ``want_stress``, virial dE/d(strain) (M, B, 3, 3) eV — differentiable in the weights
        (``create_graph``), forces by autograd through the edge vectors."""
        graph, keep = geometry if geometry is not None else self.edges(batch)
        m = len(range(self.n_members)[members or slice(None)])
        with torch.no_grad():
            base = graph.edge_vectors(batch.positions, batch.cells)[keep]
        if not want_forces:
            energies = self.member_energies(batch, graph, keep, base, members)
            return (energies, None, None) if want_stress else (energies, None)
        with torch.enable_grad():  # forces are a gradient, whatever the caller's mode
            vec = base.unsqueeze(0).repeat(m, 1, 1).requires_grad_(True)
            energies = self.member_energies(batch, graph, keep, vec, members)
            (gvec,) = torch.autograd.grad(energies.sum(), vec, create_graph=create_graph)  # (M, P, 3)
        sub = _SubGraph(graph, keep)
        gvec = gvec.to(batch.positions.dtype).permute(1, 0, 2)  # (P, M, 3)
        forces = edge_to_atom_forces(gvec, sub, batch.n_atoms)
        if want_stress:
            return energies, forces, ANIEnsemble.virial(base, gvec, sub)
        return energies, forces

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
        """Energies (always), forces and stress (on request), ``weights`` as there: see
        :meth:`potforge.model.ensemble.ANIEnsemble.evaluate`; nothing is attached to autograd."""
        if stress and not (forces or member_forces):
            raise ValueError("stress needs forces=True or member_forces=True")
        check_weights(weights, self.n_members, batch.n_systems)
        batch = batch.to(self.device, self.dtype)
        graph, keep = self.edges(batch, graph)
        need_grad = forces or member_forces
        if not need_grad:
            with torch.no_grad():
                base = graph.edge_vectors(batch.positions, batch.cells)[keep]
                member_e = self.member_energies(batch, graph, keep, base)
            energy, var = member_moments(member_e)
            if weights is not None:
                energy = weighted_sum(weights, member_e)
            return EnergyPrediction(energy=energy, member_energies=member_e, energy_std=var.sqrt())
        out = self.predict_with_grad(batch, True, stress, create_graph=False, geometry=(graph, keep))
        member_e, f = out[0].detach(), out[1].detach()
        w = out[2].detach() if stress else None
        energy, var = member_moments(member_e)
        energy_std = var.sqrt()
        s = None
        if w is not None:
            s = w / batch.volumes().to(w.dtype)[None, :, None, None]
        if weights is None:
            drive_f, var_f = member_moments(f, variance=member_forces)
            drive_s = None if s is None else s.mean(0)
        else:
            energy = weighted_sum(weights, member_e)
            drive_f, drive_s = weighted_members(weights, f, s, batch.system)
            var_f = member_moments(f)[1] if member_forces else None
        if not member_forces:
            return ForcePrediction(
                energy=energy, member_energies=member_e, energy_std=energy_std, forces=drive_f, stress=drive_s
            )
        force_std = (var_f[:, 0] + var_f[:, 1] + var_f[:, 2]).sqrt()
        return MemberPrediction(
            energy=energy, member_energies=member_e, energy_std=energy_std, forces=drive_f,
            stress=drive_s, member_forces=f, force_std=force_std, member_stress=s,
        )  # fmt: skip


class _SubGraph:
    """The kept edges of a graph, as :func:`edge_to_atom_forces` and the virial read them."""

    def __init__(self, graph: NeighborGraph, keep: torch.Tensor) -> None:
        self.centers = graph.centers[keep]
        self.neighbors = graph.neighbors[keep]
        # edges stay grouped by system: count the kept ones of each system
        counts = torch.bincount(
            torch.searchsorted(torch.tensor(graph.edge_offsets[1:], device=keep.device), keep, right=True),
            minlength=len(graph.edge_offsets) - 1,
        )
        self.edge_offsets = [0, *torch.cumsum(counts, 0).tolist()]


def build_hipnn(
    elements: tuple[str, ...], n_members: int, self_energies: list[float], seed: int, **settings
) -> HipnnEnsemble:
    """A freshly initialised HIP-NN ensemble (members drawn independently from ``seed``)."""
    return HipnnEnsemble(
        HipnnParams(elements=tuple(elements), **settings),
        n_members,
        self_energies=self_energies,
        metadata={"trained_by": "potforge", "architecture": ARCHITECTURE},
        seed=seed,
    )
