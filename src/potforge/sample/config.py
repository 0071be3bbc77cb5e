"""Sampler settings (validated on load). Times in fs, temperatures in K, uncertainties in eV and
eV/Å. Defaults are the paper's (II.B.3) except where noted."""

from __future__ import annotations

from typing import Literal

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


class PressureConfig(BaseModel):
    """Optional time-varying pressure (NPT, off by default): each replica draws a schedule of the
    form of Eq. 2, P(t) = P_start + (t/t_max)(P_end - P_start) + P_mod sin²(π t / t0_P), and its
    cell follows it by stochastic cell rescaling (``barostat``: ``iso``; ``aniso``: each box
    axis on its own, so an orthorhombic cell can change shape as well as volume; ``full``: every
    component of the cell, shear included, so a box can take whatever shape a crystal of its
    atoms needs). Random cells
    then find their own density; the paper varied pressure to reach compressed and expanded
    configurations. Exclusive with ``strain``."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    p_start_GPa: Range = Field(default_factory=lambda: Range(low=0.0, high=5.0))
    p_end_GPa: Range = Field(default_factory=lambda: Range(low=0.0, high=5.0))
    p_mod_GPa: Range = Field(default_factory=lambda: Range(low=0.0, high=10.0))
    period_fs: Range = Field(default_factory=lambda: Range(low=10_000, high=50_000))
    barostat: Literal["iso", "aniso", "full"] = "aniso"
    barostat_tau_fs: float = Field(1000.0, gt=0, description="relaxation time of the cell, fs")
    compressibility_per_GPa: float = Field(0.02, gt=0, description="sets the barostat's response only")
    barostat_every: int = Field(10, ge=1, description="steps between cell rescalings")


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
    relative_quantile: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="calibrated thresholds: each measure's threshold is raised to relative_factor x this "
        "quantile of the measure over the model's held-out frames (off: None)",
    )
    relative_factor: float = Field(1.0, gt=0)

    def calibrated(self, held_out: dict[str, list[float]]) -> UncertaintyConfig:
        """The thresholds for a model whose held-out frames have these measures: each enabled
        threshold is at least ``relative_factor`` x the ``relative_quantile`` of its measure, so a
        trajectory stops where the model is less sure than on most data it was checked on, and
        the absolute thresholds still decide once the model is better than them."""
        import numpy as np

        if self.relative_quantile is None:
            return self
        update = {}
        for key in ("energy_eV_per_sqrt_atom", "force_mean_eV_per_A", "force_max_eV_per_A"):
            values = held_out.get(key) or []
            limit = getattr(self, key)
            if limit is not None and values:
                update[key] = max(limit, self.relative_factor * float(np.quantile(values, self.relative_quantile)))
        return self.model_copy(update=update)


class QuenchConfig(BaseModel):
    """Inherent structures (off by default): a trajectory that ran its whole budget unflagged is
    minimised under the model (FIRE; positions and cell to zero stress, or positions alone) and
    the ensemble's disagreement is checked at that minimum (the sampler's thresholds, or
    ``uncertainty``); where it exceeds them the minimum is the trajectory's flagged frame. MD
    frames are all hot (a crystal at 400 K sits some 50 meV/atom above its lattice), so without
    this the 0 K structures that static properties and cold MD visit are extrapolated from
    thermal ones."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    fmax_eV_per_A: float = Field(0.05, gt=0, description="force (and cell-force) convergence of the minimisation")
    max_steps: int = Field(200, ge=1, description="FIRE steps at most")
    cell: Literal["relaxed", "fixed", "both"] = Field(
        "relaxed",
        description="relaxed: positions and cell to zero stress (the model's zero-pressure minimum); fixed: "
        "positions alone in the trajectory's cell (Stillinger-Weber inherent structures: cold crystals at the "
        "volumes the trajectories visited, on both sides of the equilibrium volume); both: relaxed for "
        "even trajectory ids, fixed for odd ones",
    )
    on_crystal: bool = Field(
        False,
        description="also quench a trajectory at its first census snapshot that is more than 30 % fcc, hcp or "
        "bcc (any structure it ordered into), so a crystal that a trajectory reaches and later leaves is labelled "
        "cold; an unsure minimum ends the trajectory as its flagged frame",
    )
    uncertainty: UncertaintyConfig | None = Field(
        None,
        description="thresholds at the minimum, never calibrated (null: the sampler's, calibrated where "
        "relative_quantile is set). Calibration lets hot trajectories live long enough to reach crystals; a "
        "minimum is one check with no trajectory to extend, so the paper's absolute thresholds can judge it",
    )

    def relaxes_cell(self, traj: int) -> bool:
        """Whether trajectory ``traj``'s minimum is found with the cell relaxed (``cell``)."""
        return self.cell == "relaxed" or (self.cell == "both" and traj % 2 == 0)

    @model_validator(mode="after")
    def _absolute(self) -> QuenchConfig:
        if self.uncertainty is not None and self.uncertainty.relative_quantile is not None:
            raise ValueError("quench.uncertainty is never calibrated: leave out its relative_quantile")
        return self


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
    """Batched Langevin MD of many trajectories with uncertainty-driven stopping.

    A generation runs trajectories 0, 1, 2, ... (at most ``max_trajectories``), ``replicas`` at
    a time. Each runs until the ensemble disagrees (flagged), it becomes unstable, or it has
    run its own budget ``schedule.t_max_fs`` (survived). ``max_flagged`` counts in trajectory-id
    order: the generation ends once trajectories 0..j are all finished and hold
    ``max_flagged`` flagged frames; later trajectories are not used, so the result does not
    depend on which trajectory finished first, nor on how many ``workers`` share the
    trajectories (:mod:`potforge.sample.fanout`). ``max_walltime_s`` caps each worker's
    sampling; trajectories it cuts are censored."""

    model_config = ConfigDict(extra="forbid")
    replicas: int = Field(32, ge=1, description="trajectories run at once (per worker)")
    workers: int | None = Field(
        None,
        ge=1,
        description="sampling tasks a generation's trajectories are dealt over (round-robin by id), each a "
        "batched sampler of `replicas`; the result does not depend on it (default: 1 with the local engine, the "
        "gpu executor's workers with engine.kind parsl)",
    )
    max_trajectories: int = Field(128, ge=1, description="trajectories per generation at most")
    timestep_fs: float = Field(1.0, gt=0)
    friction_per_fs: float = Field(0.01, gt=0, description="Langevin friction γ, 1/fs")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    strain: StrainConfig = Field(default_factory=StrainConfig)
    pressure: PressureConfig = Field(default_factory=PressureConfig)
    uncertainty: UncertaintyConfig = Field(default_factory=UncertaintyConfig)
    stability: StabilityConfig = Field(default_factory=StabilityConfig)
    quench: QuenchConfig = Field(default_factory=QuenchConfig)
    max_flagged: int = Field(100, ge=1, description="flagged frames per generation, in trajectory-id order")
    max_steps: int | None = Field(None, description="removed: budgets are per trajectory (schedule.t_max_fs)")
    max_walltime_s: float | None = Field(None, gt=0, description="budget: wall time of the sampling stage")
    census_every_fs: float = Field(1000.0, gt=0, description="structure census of running trajectories, this often")
    continue_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of a generation's trajectories that continue from the previous generation's flagged "
        "frames (in id order) instead of starting from a new random cell",
    )
    member_driven_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of trajectories (drawn from each one's seed) that move on the forces of one ensemble "
        "member, itself drawn at random, instead of the ensemble mean: members disagree most where data is "
        "missing, so each such trajectory goes where its member alone puts low energy (Thompson sampling of "
        "the ensemble); the stop rule still uses the whole ensemble's disagreement",
    )
    neighbor_skin_A: float = Field(
        1.0, gt=0, description="neighbour-list skin: lists are reused until atoms move half of it"
    )
    checkpoint_every_s: float = Field(60.0, gt=0, description="write the sampler state this often")
    threads: int | None = Field(None, ge=1, description="CPU threads of the sampling stage (default: PyTorch's)")
    dtype: str = Field(
        "float32", pattern="^(float32|float64)$", description="the model's precision (MD itself is float64)"
    )
    device: str = Field(
        "cpu", pattern=DEVICE_PATTERN, description="where the model runs: cpu, cuda, cuda:N or auto (GPU if any)"
    )

    @model_validator(mode="after")
    def _check(self) -> SamplerConfig:
        if self.max_steps is not None:
            raise ValueError(
                "max_steps was removed: each trajectory now runs its own budget schedule.t_max_fs, and "
                "max_trajectories caps a generation; delete max_steps"
            )
        if self.strain.enabled and self.pressure.enabled:
            raise ValueError("strain and pressure both prescribe the cell: enable one of them")
        return self
