"""Training settings (validated on load). Defaults follow the authors' NeuroChem inputs
(``inputtrain.ipt`` of ANI-Al: Adam, lr 1e-3 halved after 100 epochs without validation
improvement, stop below 1e-5, batch 128, force multiplier 0.01) and the ANI-Al architecture."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from potforge.devices import DEVICE_PATTERN


class TrainConfig(BaseModel):
    """How an ensemble is trained. Energies eV, lengths Å, times s."""

    model_config = ConfigDict(extra="forbid")

    n_members: int = Field(8, ge=1, description="ensemble size")
    hidden_layers: list[int] = Field([96, 96, 64], description="hidden layer widths of each atomic network")
    aev: Literal["ani-al"] = Field("ani-al", description="AEV definition (the published ANI-Al one)")
    l0_A2: float = Field(0.01, ge=0, description="ℓ0 of Eq. 1: weight of the force term, Å² (0: energies only)")
    stress_weight: float = Field(
        0.0,
        ge=0,
        description="weight w_σ of a virial term w_σ (1/M) Σ (V Δσ)² added to Eq. 1 where the oracle gave a stress "
        "(dimensionless; 0: the paper's Eq. 1)",
    )
    member_chunk: int | None = Field(
        None,
        ge=1,
        description="train this many members at a time through the loss (same gradients, peak memory about "
        "chunk/n_members of the all-at-once step; default: all at once, fastest where memory allows)",
    )
    batch_size: int = Field(32, ge=1, description="frames per optimisation step")
    lr: float = Field(1e-3, gt=0, description="initial Adam learning rate")
    lr_patience_epochs: int = Field(
        100, ge=1, description="halve a member's rate after this many epochs without improvement"
    )
    lr_factor: float = Field(0.5, gt=0, lt=1)
    lr_min: float = Field(1e-5, gt=0, description="a member stops when its rate falls below this")
    max_epochs: int = Field(1000, ge=1)
    max_walltime_s: float | None = Field(None, gt=0, description="stop after this much training time")
    dtype: Literal["float32", "float64"] = "float32"
    seed: int = 0
    independent_shuffles: bool = Field(
        False,
        description=(
            "each member draws its own batches (a step then evaluates the union of the members' batches, "
            "several times the work); default: shared batches, members differ by their random initialisation"
        ),
    )
    standardize_inputs: bool = Field(
        False,
        description=(
            "optimise the first layer as if it read standardised AEVs (per-feature mean and spread of the "
            "training atoms); an exact reparametrisation: the model and its file are unchanged"
        ),
    )
    val_fraction_if_missing: float = Field(0.1, gt=0, lt=1, description="carve a validation set out of train if none")
    threads: int | None = Field(None, ge=1, description="CPU threads (default: PyTorch's)")
    device: str = Field(
        "cpu", pattern=DEVICE_PATTERN, description="where training runs: cpu, cuda, cuda:N or auto (GPU if any)"
    )


#: What settings added after a run was recorded meant before they existed: a checkpoint or a
#: campaign written without them was trained that way, whatever today's default.
LEGACY_VALUES = {"standardize_inputs": False}


def with_legacy_values(settings: dict) -> dict:
    """Recorded training settings with the pre-existing behaviour filled in for missing keys."""
    return {**LEGACY_VALUES, **settings}
