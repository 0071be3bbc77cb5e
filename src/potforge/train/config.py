"""Training settings (validated on load). Defaults follow the authors' NeuroChem inputs
(``inputtrain.ipt`` of ANI-Al: Adam, lr 1e-3 halved after 100 epochs without validation
improvement, stop below 1e-5, batch 128, force multiplier 0.01) and the ANI-Al architecture."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from potforge.devices import DEVICE_PATTERN


class HipnnSettings(BaseModel):
    """The HIP-NN network (``architecture: hipnn``), hippynn's hyperparameters; docs/hipnn.md
    gives the reasons for the defaults. Lengths Å."""

    model_config = ConfigDict(extra="forbid")

    n_features: int = Field(10, ge=1, description="width of every interaction and atom layer")
    n_sensitivities: int = Field(20, ge=1, description="learned distance sensitivity functions per interaction")
    soft_min_A: float = Field(1.25, gt=0, description="innermost initial sensitivity centre")
    soft_max_A: float = Field(6.5, gt=0, description="outermost initial sensitivity centre")
    cutoff_A: float = Field(7.0, gt=0, description="hard cutoff of each interaction layer (cos² to zero)")
    n_interaction_layers: int = Field(2, ge=1, description="message-passing (interaction) layers")
    n_atom_layers: int = Field(3, ge=0, description="on-site residual layers after each interaction")
    tensor_order: Literal[0, 1] = Field(0, description="0: HIP-NN; 1: HIP-NN-TS with vector sensitivities")
    energy_decay: float = Field(
        1e-2, gt=0, le=1, description="initial read-out weights of hierarchy level k damped by this^k"
    )

    @model_validator(mode="after")
    def _ordered(self) -> HipnnSettings:
        if not self.soft_min_A < self.soft_max_A <= self.cutoff_A:
            raise ValueError("need soft_min_A < soft_max_A <= cutoff_A")
        return self


class TrainConfig(BaseModel):
    """How an ensemble is trained. Energies eV, lengths Å, times s."""

    model_config = ConfigDict(extra="forbid")

    architecture: Literal["ani", "hipnn"] = Field(
        "ani", description="ani: the ANI-Al network (AEVs); hipnn: HIP-NN through hippynn (settings under hipnn)"
    )
    hipnn: HipnnSettings = Field(default_factory=HipnnSettings, description="the HIP-NN network (architecture hipnn)")
    n_members: int = Field(8, ge=1, description="ensemble size")
    hidden_layers: list[int] = Field([96, 96, 64], description="hidden layer widths of each atomic network (ANI)")
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

    @model_validator(mode="after")
    def _architecture_options(self) -> TrainConfig:
        if self.architecture == "hipnn" and self.standardize_inputs:
            raise ValueError("standardize_inputs reparametrises ANI's first layer; HIP-NN has no AEV input")
        return self


#: What settings added after a run was recorded meant before they existed: a checkpoint or a
#: campaign written without them was trained that way, whatever today's default.
LEGACY_VALUES = {"standardize_inputs": False, "architecture": "ani"}


def with_legacy_values(settings: dict) -> dict:
    """Recorded training settings with the pre-existing behaviour filled in for missing keys."""
    return {**LEGACY_VALUES, **settings}
