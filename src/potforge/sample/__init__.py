"""Uncertainty-driven sampling: Eq. 2 schedules, stop rules and the trajectory manager (paper
II.B), on the batched MD engine of :mod:`potforge.md`."""

from potforge.sample.config import (
    PressureConfig,
    SamplerConfig,
    ScheduleConfig,
    StabilityConfig,
    StrainConfig,
    UncertaintyConfig,
)
from potforge.sample.sampler import Sampler
from potforge.sample.survival import kaplan_meier, median_time_to_flag, survival_at

__all__ = [
    "PressureConfig",
    "Sampler",
    "SamplerConfig",
    "ScheduleConfig",
    "StabilityConfig",
    "StrainConfig",
    "UncertaintyConfig",
    "kaplan_meier",
    "median_time_to_flag",
    "survival_at",
]
