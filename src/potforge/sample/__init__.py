"""Uncertainty-driven sampling: Eq. 2 schedules, batched Langevin MD, stop rules (paper II.B)."""

from potforge.sample.config import SamplerConfig, ScheduleConfig, StabilityConfig, StrainConfig, UncertaintyConfig
from potforge.sample.sampler import Sampler, SamplingResult, median_time_to_flag
from potforge.sample.schedule import StrainSchedule, TemperatureSchedule

__all__ = [
    "Sampler",
    "SamplerConfig",
    "SamplingResult",
    "ScheduleConfig",
    "StabilityConfig",
    "StrainConfig",
    "StrainSchedule",
    "TemperatureSchedule",
    "UncertaintyConfig",
    "median_time_to_flag",
]
