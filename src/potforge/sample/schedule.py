"""Per-trajectory driving schedules drawn from the sampler's ranges: the randomized temperature
of Eq. 2, and optionally a cell strain or a pressure. The schedules themselves
(:mod:`potforge.md.schedules`) are data, so a trajectory's whole driving history is reproducible
from its seed."""

from __future__ import annotations

import numpy as np

from potforge.md.schedules import Drive, PressureSchedule, StrainSchedule, TemperatureSchedule
from potforge.sample.config import Range, SamplerConfig, ScheduleConfig, StrainConfig


def _draw(r: Range, rng: np.random.Generator) -> float:
    return float(rng.uniform(r.low, r.high))


def draw_temperature(config: ScheduleConfig, rng: np.random.Generator) -> TemperatureSchedule:
    return TemperatureSchedule(
        t_start_K=_draw(config.t_start_K, rng),
        t_end_K=_draw(config.t_end_K, rng),
        t_mod_K=_draw(config.t_mod_K, rng),
        period_fs=_draw(config.period_fs, rng),
        t_max_fs=config.t_max_fs,
    )


def draw_strain(config: StrainConfig, rng: np.random.Generator) -> StrainSchedule | None:
    if not config.enabled:
        return None
    a, b = (int(x) for x in rng.choice(3, size=2, replace=False))
    return StrainSchedule(
        volume_strain=_draw(config.volume_strain, rng),
        shear_strain=_draw(config.shear_strain, rng),
        period_fs=_draw(config.period_fs, rng),
        shear_axes=(a, b),
    )


def draw_drive(config: SamplerConfig, rng: np.random.Generator) -> Drive:
    """One trajectory's targets: T(t) of Eq. 2 and, where enabled, a strain or a pressure."""
    temperature = draw_temperature(config.schedule, rng)
    strain = draw_strain(config.strain, rng)
    pressure = None
    p = config.pressure
    if p.enabled:
        pressure = PressureSchedule(
            p_start_GPa=_draw(p.p_start_GPa, rng),
            p_end_GPa=_draw(p.p_end_GPa, rng),
            p_mod_GPa=_draw(p.p_mod_GPa, rng),
            period_fs=_draw(p.period_fs, rng),
            t_max_fs=config.schedule.t_max_fs,
        )
    return Drive(temperature, pressure, p.barostat, strain)
