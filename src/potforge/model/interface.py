"""The model interface: what MD, the calculator and validation need of a machine-learned
potential. :class:`~potforge.model.ensemble.ANIEnsemble` is its first implementation; another
architecture (HIP-NN) implements the same protocol.

A potential is an ensemble of M members evaluated together on an :class:`AtomsBatch`. Its
outputs are typed by call mode (:class:`EnergyPrediction`, :class:`ForcePrediction`,
:class:`MemberPrediction`); forces and stress are exact derivatives of the energy. It accepts a
precomputed neighbour graph built with a cutoff of at least ``cutoff_A`` (MD reuses one built
with a skin), so neighbour lists are owned by whoever integrates, not rebuilt per call.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from potforge.model.ensemble import EnergyPrediction
from potforge.model.neighbors import AtomsBatch, NeighborGraph


@runtime_checkable
class Potential(Protocol):
    """An ensemble potential. Units: Å, eV, eV/Å, eV/Å³."""

    @property
    def elements(self) -> tuple[str, ...]: ...

    @property
    def n_members(self) -> int: ...

    @property
    def cutoff_A(self) -> float: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    def species_index(self, symbols: list[str]) -> torch.Tensor:
        """Element indices of chemical symbols; unknown elements raise UnknownElementError."""
        ...

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
        """Energies; forces (ForcePrediction); every member's forces (MemberPrediction).
        ``weights`` (M, B): energy, forces and stress of Σ_m w_mb E_mb instead of the mean."""
        ...
