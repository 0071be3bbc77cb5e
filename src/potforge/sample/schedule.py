"""Per-replica driving schedules: the randomized temperature of Eq. 2 and optional cell strain.

Schedules are data (a few numbers per replica, drawn from a seeded generator) and functions of
time, so a replica's whole driving history is reproducible from its trajectory seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from potforge.sample.config import Range, ScheduleConfig, StrainConfig


def _draw(r: Range, rng: np.random.Generator) -> float:
    return float(rng.uniform(r.low, r.high))


@dataclass(frozen=True)
class TemperatureSchedule:
    """Eq. 2: T(t) = T_start + (t / t_max) (T_end - T_start) + T_mod sin²(π t / t0)."""

    t_start_K: float
    t_end_K: float
    t_mod_K: float
    period_fs: float
    t_max_fs: float

    @classmethod
    def draw(cls, config: ScheduleConfig, rng: np.random.Generator) -> TemperatureSchedule:
        return cls(
            t_start_K=_draw(config.t_start_K, rng),
            t_end_K=_draw(config.t_end_K, rng),
            t_mod_K=_draw(config.t_mod_K, rng),
            period_fs=_draw(config.period_fs, rng),
            t_max_fs=config.t_max_fs,
        )

    def __call__(self, t_fs: float) -> float:
        """Target temperature (K) at time ``t_fs``."""
        ramp = self.t_start_K + (t_fs / self.t_max_fs) * (self.t_end_K - self.t_start_K)
        return ramp + self.t_mod_K * math.sin(math.pi * t_fs / self.period_fs) ** 2

    def as_dict(self) -> dict[str, float]:
        return {
            "t_start_K": self.t_start_K,
            "t_end_K": self.t_end_K,
            "t_mod_K": self.t_mod_K,
            "period_fs": self.period_fs,
            "t_max_fs": self.t_max_fs,
        }


@dataclass(frozen=True)
class StrainSchedule:
    """Cell deformation F(t) = I + ε_v sin(2πt/P) I + ε_s sin(2πt/P) (e_a e_bᵀ + e_b e_aᵀ)/2,
    applied to the replica's initial cell (rows are lattice vectors: cell(t) = cell0 F(t))."""

    volume_strain: float
    shear_strain: float
    period_fs: float
    shear_axes: tuple[int, int]

    @classmethod
    def draw(cls, config: StrainConfig, rng: np.random.Generator) -> StrainSchedule | None:
        if not config.enabled:
            return None
        a, b = (int(x) for x in rng.choice(3, size=2, replace=False))
        return cls(
            volume_strain=_draw(config.volume_strain, rng),
            shear_strain=_draw(config.shear_strain, rng),
            period_fs=_draw(config.period_fs, rng),
            shear_axes=(a, b),
        )

    def deformation(self, t_fs: float) -> np.ndarray:
        """(3, 3) deformation gradient at ``t_fs``."""
        s = math.sin(2 * math.pi * t_fs / self.period_fs)
        f = np.eye(3) * (1.0 + self.volume_strain * s)
        a, b = self.shear_axes
        f[a, b] += 0.5 * self.shear_strain * s
        f[b, a] += 0.5 * self.shear_strain * s
        return f

    def as_dict(self) -> dict:
        return {
            "volume_strain": self.volume_strain,
            "shear_strain": self.shear_strain,
            "period_fs": self.period_fs,
            "shear_axes": list(self.shear_axes),
        }
