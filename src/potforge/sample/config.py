"""Sampler settings (validated on load). Times in fs, temperatures in K, uncertainties in eV and
eV/Å. Defaults are the paper's (II.B.3) except where noted."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from potforge.devices import DEVICE_PATTERN


class Range(BaseModel):
    """A closed interval [low, high] from which a value is drawn uniformly."""

    model_config = ConfigDict(extra="forbid")
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.high < self.low:
            raise ValueError(f"range high ({self.high}) is below low ({self.low})")
        return self


class ScheduleConfig(BaseModel):
    """Eq. 2: T(t) = T_start + (t/t_max)(T_end - T_start) + T_mod sin²(π t / t0).

    The paper's text gives t_max = 250 fs but its trajectories run to 250 ps with 10-50 ps
    periods; its authors' code treats t_max as the maximum trajectory length, as here.
    """

    model_config = ConfigDict(extra="forbid")
    t_start_K: Range = Field(default_factory=lambda: Range(low=10, high=1000))
    t_end_K: Range = Field(default_factory=lambda: Range(low=10, high=600))
    t_mod_K: Range = Field(default_factory=lambda: Range(low=0, high=2000))
    period_fs: Range = Field(default_factory=lambda: Range(low=10_000, high=50_000), description="t0 of Eq. 2")
    t_max_fs: float = Field(250_000, gt=0, description="trajectory length (and the ramp's end)")


class StrainConfig(BaseModel):
    """Optional time-varying deformation of the cell (off by default): isotropic volume strain
    ε_v sin(2π t / P_v) and a shear strain ε_s sin(2π t / P_s) in a random plane, amplitudes
    drawn per replica. The paper suggests strained-cell sampling to fix its C12 error."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    volume_strain: Range = Field(default_factory=lambda: Range(low=0.0, high=0.10))
    shear_strain: Range = Field(default_factory=lambda: Range(low=0.0, high=0.08))
    period_fs: Range = Field(default_factory=lambda: Range(low=5_000, high=30_000))


class UncertaintyConfig(BaseModel):
    """A replica stops when any measure exceeds its threshold (checked every ``check_every``
    steps with every member's forces):

    * ``energy``: ρ = σ_E / √N, σ_E the sample std (ddof 1) of member energies (eV/√atom);
    * ``force_mean``: mean over atoms of the per-atom force spread (eV/Å);
    * ``force_max``: max over atoms of the per-atom force spread (eV/Å);
    per-atom force spread = sqrt(Σ_m |F_m - F̄|² / (M - 1)). ``null`` disables a measure.
    """

    model_config = ConfigDict(extra="forbid")
    check_every: int = Field(10, ge=1, description="MD steps between uncertainty checks")
    energy_eV_per_sqrt_atom: float | None = Field(0.01, gt=0)
    force_mean_eV_per_A: float | None = Field(0.15, gt=0)
    force_max_eV_per_A: float | None = Field(0.6, gt=0)


class StabilityConfig(BaseModel):
    """A replica is stopped as unstable (its last sane frame recorded) on non-finite numbers,
    two atoms closer than ``min_distance_A``, or a kinetic temperature above
    max(``max_temperature_factor`` x target, ``max_temperature_K``). Random starting cells
    release up to ~1 eV/atom of potential energy in the first picosecond (a transient of
    several thousand K that the thermostat removes), so the absolute limit sits well above."""

    model_config = ConfigDict(extra="forbid")
    min_distance_A: float = Field(1.2, gt=0)
    max_temperature_factor: float = Field(10.0, gt=1)
    max_temperature_K: float = Field(20000.0, gt=0)


class SamplerConfig(BaseModel):
    """Batched Langevin MD of many replicas with uncertainty-driven stopping."""

    model_config = ConfigDict(extra="forbid")
    replicas: int = Field(32, ge=1, description="trajectories run at once")
    timestep_fs: float = Field(1.0, gt=0)
    friction_per_fs: float = Field(0.01, gt=0, description="Langevin friction γ, 1/fs")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    strain: StrainConfig = Field(default_factory=StrainConfig)
    uncertainty: UncertaintyConfig = Field(default_factory=UncertaintyConfig)
    stability: StabilityConfig = Field(default_factory=StabilityConfig)
    max_flagged: int = Field(100, ge=1, description="stop sampling after this many flagged frames")
    max_steps: int = Field(1_000_000, ge=1, description="budget: MD steps summed over replicas")
    max_walltime_s: float | None = Field(None, gt=0, description="budget: wall time of the sampling stage")
    checkpoint_every_s: float = Field(60.0, gt=0, description="write the sampler state this often")
    dtype: str = Field("float32", pattern="^(float32|float64)$")
    device: str = Field(
        "cpu", pattern=DEVICE_PATTERN, description="where the model runs: cpu, cuda, cuda:N or auto (GPU if any)"
    )
