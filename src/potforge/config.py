"""The campaign configuration: one typed model per stage, loaded from YAML and validated at load
time, so a mistake is reported before any work starts, naming the field and what it accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from potforge.data.plausibility import PlausibilityPolicy
from potforge.engine import EngineConfig
from potforge.errors import ConfigError
from potforge.sample.config import SamplerConfig
from potforge.structures import RandomCellSpec
from potforge.train.config import TrainConfig


class OracleConfig(BaseModel):
    """The reference method: a built-in name (emt, eam, gpaw, espresso) or python:pkg.mod:Class."""

    model_config = ConfigDict(extra="forbid")
    name: str = "emt"
    settings: dict[str, Any] = Field(default_factory=dict)


class LabelingConfig(BaseModel):
    """How labels are computed, and which are plausible enough to train on (``plausibility``)."""

    model_config = ConfigDict(extra="forbid")
    timeout_s: float = Field(3600.0, gt=0, description="wall-time limit per calculation")
    max_attempts: int = Field(3, ge=1, description="attempts before a frame is quarantined")
    chunk_size: int = Field(8, ge=1, description="frames per oracle process")
    plausibility: PlausibilityPolicy = Field(default_factory=PlausibilityPolicy)


class InitialConfig(BaseModel):
    """The initial dataset: random disordered cells (paper: ~400)."""

    model_config = ConfigDict(extra="forbid")
    n_cells: int = Field(400, ge=1)
    cells: RandomCellSpec = Field(default_factory=RandomCellSpec)


class LoopConfig(BaseModel):
    """When the active-learning loop stops, and how generations train."""

    model_config = ConfigDict(extra="forbid")
    max_generations: int = Field(50, ge=1, description="generation cap")
    max_walltime_s: float | None = Field(
        None,
        gt=0,
        description="no new generation once the campaign has run this long (all runs together); a "
        "generation's sampling also ends when it is spent (at least a tenth of it per generation)",
    )
    target_median_time_to_flag_fs: float = Field(
        250_000, gt=0, description="stop once the median trajectory runs this long without being flagged"
    )
    target_survival_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description="the share of trajectories that must run target_median_time_to_flag_fs unflagged "
        "(Kaplan-Meier) for the loop to stop; 0.5 is the median rule, higher demands longer-lived trajectories",
    )
    warm_start: bool = Field(True, description="start each generation's training from the previous weights")
    later_max_epochs: int | None = Field(None, ge=1, description="epoch cap after generation 0 (default: same)")
    final_training: bool = Field(
        True,
        description="once the loop stops, label the last generation's flagged frames and train the final model "
        "on them too (no more sampling)",
    )
    final_max_epochs: int | None = Field(
        None, ge=1, description="epoch cap of that final training (default: later_max_epochs, or the same)"
    )
    sampling_cells: RandomCellSpec | None = Field(None, description="MD starting cells (default: initial.cells)")
    streaming_labels: bool = Field(
        True,
        description="label a generation's flagged frames while it samples (those certain to be among its "
        "max_flagged, in trajectory-id order), not after; the same frames either way",
    )


class ValidationConfig(BaseModel):
    """The validation report written for the final model (``potforge validate``), the gates its
    summary judges the model by, and the property learning curve: a quick static validation of
    every generation's model against the campaign's oracle (``auto``: where the oracle is cheap,
    EMT or EAM; ``always`` for any oracle, e.g. a cheap DFT setting; ``never``)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    only: list[str] | None = Field(None, description="benchmark names (default: all static ones)")
    quick: bool = Field(False, description="fewer points per curve")
    gates: Literal["quick", "strict"] = Field("quick", description="gate set of the report (potforge.properties)")
    learning_curve: Literal["auto", "always", "never"] = "auto"


class CampaignConfig(BaseModel):
    """An active-learning campaign (paper Fig. 1): initial cells -> label -> train -> sample -> ..."""

    model_config = ConfigDict(extra="forbid")
    name: str = "campaign"
    seed: int = 0
    oracle: OracleConfig = Field(default_factory=OracleConfig)
    dataset: str | None = Field(None, description="SQLite path or postgresql:// URL (default: <dir>/campaign.db)")
    initial: InitialConfig = Field(default_factory=InitialConfig)
    labeling: LabelingConfig = Field(default_factory=LabelingConfig)
    training: TrainConfig = Field(default_factory=TrainConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    loop: LoopConfig = Field(default_factory=LoopConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)

    @model_validator(mode="after")
    def _budget_reaches_target(self) -> CampaignConfig:
        target, budget = self.loop.target_median_time_to_flag_fs, self.sampler.schedule.t_max_fs
        if budget < target:
            raise ValueError(
                f"sampler.schedule.t_max_fs ({budget:g} fs) is each trajectory's budget and is shorter than "
                f"loop.target_median_time_to_flag_fs ({target:g} fs): no trajectory could show the target is met"
            )
        return self


def _describe(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors()[:5]:
        field = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif "expected" in err.get("ctx", {}):
            msg = f"{msg}"
        value = err.get("input")
        shown = "" if isinstance(value, dict) or value is None else f" (got {value!r})"
        lines.append(f"{field}: {msg}{shown}" if field else f"{msg}{shown}")
    return f"{source}: " + "; ".join(lines)


def load_config(path: str | Path) -> CampaignConfig:
    """Read and validate a campaign YAML file; a :class:`ConfigError` names the bad field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    return parse_config(raw or {}, str(path))


def parse_config(raw: dict, source: str = "config") -> CampaignConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of settings")
    try:
        return CampaignConfig(**raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
