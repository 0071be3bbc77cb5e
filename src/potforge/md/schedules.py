"""Per-system driving targets of MD as data: a temperature T(t), optionally a pressure P(t) or a
cell strain F(t), each a small frozen dataclass that is a pure function of time.

A system's targets together form a :class:`Drive`. Schedules serialise to plain dicts (with a
``kind`` tag), so a checkpointed MD state carries its drives with it.

Pressure and strain are exclusive for one system: a barostat sets the cell from the pressure,
a strain schedule prescribes it, and both at once would fight over the same degrees of freedom.
Units: fs, K, GPa.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import numpy as np

BarostatMode = Literal["iso", "aniso", "z", "full"]


class Schedule(Protocol):
    """A scalar target as a function of a system's simulated time (fs)."""

    def __call__(self, t_fs: float) -> float: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Constant:
    value: float

    def __call__(self, t_fs: float) -> float:
        return self.value

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "constant", **asdict(self)}


@dataclass(frozen=True)
class PiecewiseLinear:
    """Linear between knots ``(times_fs[k], values[k])``, constant outside them. A repeated time
    is a jump: the later value holds from that time on."""

    times_fs: tuple[float, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.times_fs) != len(self.values) or not self.times_fs:
            raise ValueError("a piecewise-linear schedule needs as many values as times, at least one")
        if any(b < a for a, b in zip(self.times_fs, self.times_fs[1:], strict=False)):
            raise ValueError("schedule times must not decrease")

    def __call__(self, t_fs: float) -> float:
        times, values = self.times_fs, self.values
        if t_fs < times[0]:
            return values[0]
        for k in range(len(times) - 1, -1, -1):  # the last knot at or before t
            if times[k] <= t_fs:
                if k == len(times) - 1:
                    return values[k]
                t0, t1 = times[k], times[k + 1]
                return values[k] + (values[k + 1] - values[k]) * (t_fs - t0) / (t1 - t0)
        return values[-1]  # pragma: no cover

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "piecewise_linear", "times_fs": list(self.times_fs), "values": list(self.values)}


@dataclass(frozen=True)
class TemperatureSchedule:
    """Eq. 2 of the paper: T(t) = T_start + (t / t_max) (T_end - T_start) + T_mod sin²(π t / t0)."""

    t_start_K: float
    t_end_K: float
    t_mod_K: float
    period_fs: float
    t_max_fs: float

    def __call__(self, t_fs: float) -> float:
        ramp = self.t_start_K + (t_fs / self.t_max_fs) * (self.t_end_K - self.t_start_K)
        return ramp + self.t_mod_K * math.sin(math.pi * t_fs / self.period_fs) ** 2

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "eq2_temperature", **asdict(self)}

    def as_dict(self) -> dict[str, float]:
        """The parameters alone (what a flagged frame records)."""
        return asdict(self)


@dataclass(frozen=True)
class PressureSchedule:
    """The pressure analogue of Eq. 2: P(t) = P_start + (t / t_max)(P_end - P_start) + P_mod sin²(π t / t0)."""

    p_start_GPa: float
    p_end_GPa: float
    p_mod_GPa: float
    period_fs: float
    t_max_fs: float

    def __call__(self, t_fs: float) -> float:
        ramp = self.p_start_GPa + (t_fs / self.t_max_fs) * (self.p_end_GPa - self.p_start_GPa)
        return ramp + self.p_mod_GPa * math.sin(math.pi * t_fs / self.period_fs) ** 2

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "eq2_pressure", **asdict(self)}

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class StrainSchedule:
    """Cell deformation F(t) = I + ε_v sin(2πt/P) I + ε_s sin(2πt/P) (e_a e_bᵀ + e_b e_aᵀ)/2,
    applied to the system's reference cell (rows are lattice vectors: cell(t) = cell_ref F(t))."""

    volume_strain: float
    shear_strain: float
    period_fs: float
    shear_axes: tuple[int, int]

    def deformation(self, t_fs: float) -> np.ndarray:
        """(3, 3) deformation gradient at ``t_fs``."""
        s = math.sin(2 * math.pi * t_fs / self.period_fs)
        f = np.eye(3) * (1.0 + self.volume_strain * s)
        a, b = self.shear_axes
        f[a, b] += 0.5 * self.shear_strain * s
        f[b, a] += 0.5 * self.shear_strain * s
        return f

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "strain", **self.as_dict()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "volume_strain": self.volume_strain,
            "shear_strain": self.shear_strain,
            "period_fs": self.period_fs,
            "shear_axes": list(self.shear_axes),
        }


_KINDS = {
    "constant": Constant,
    "piecewise_linear": PiecewiseLinear,
    "eq2_temperature": TemperatureSchedule,
    "eq2_pressure": PressureSchedule,
    "strain": StrainSchedule,
}


def schedule_from_dict(d: dict[str, Any] | None) -> Any:
    """The schedule a :meth:`to_dict` wrote (None stays None)."""
    if d is None:
        return None
    d = dict(d)
    kind = _KINDS[d.pop("kind")]
    if kind is PiecewiseLinear:
        return PiecewiseLinear(tuple(d["times_fs"]), tuple(d["values"]))
    if kind is StrainSchedule:
        d["shear_axes"] = tuple(d["shear_axes"])
    return kind(**d)


def as_schedule(value: float | Schedule) -> Schedule:
    """A number becomes a :class:`Constant`; a schedule stays as it is."""
    return Constant(float(value)) if isinstance(value, (int, float)) else value


@dataclass(frozen=True)
class Drive:
    """What one system is driven to: temperature T(t) (K), and either a pressure P(t) (GPa,
    barostat ``iso``, ``aniso`` (each Cartesian axis on its own, orthogonal cells), ``z``, or
    ``full``: every component of the cell, so a box can shear into whatever shape a crystal of
    its atoms needs) or
    a cell strain F(t), or neither (constant volume). ``member``: the index of the one ensemble
    member whose forces drive the system (None: the ensemble mean; force providers without
    members ignore it)."""

    temperature_K: Schedule
    pressure_GPa: Schedule | None = None
    barostat: BarostatMode = "iso"
    strain: StrainSchedule | None = None
    member: int | None = None

    def __post_init__(self) -> None:
        if self.pressure_GPa is not None and self.strain is not None:
            raise ValueError("a system is driven by a pressure or by a strain schedule, not both")
        if self.barostat not in ("iso", "aniso", "z", "full"):
            raise ValueError(f"unknown barostat mode {self.barostat!r} (iso, aniso, z or full)")
        if self.member is not None and self.member < 0:
            raise ValueError(f"ensemble member {self.member} is negative")

    @classmethod
    def of(
        cls,
        temperature_K: float | Schedule,
        pressure_GPa: float | Schedule | None = None,
        barostat: BarostatMode = "iso",
        strain: StrainSchedule | None = None,
    ) -> Drive:
        """A drive from numbers or schedules."""
        p = None if pressure_GPa is None else as_schedule(pressure_GPa)
        return cls(as_schedule(temperature_K), p, barostat, strain)

    def to_dict(self) -> dict[str, Any]:
        return {
            "temperature_K": self.temperature_K.to_dict(),
            "pressure_GPa": None if self.pressure_GPa is None else self.pressure_GPa.to_dict(),
            "barostat": self.barostat,
            "strain": None if self.strain is None else self.strain.to_dict(),
            "member": self.member,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Drive:
        return cls(
            schedule_from_dict(d["temperature_K"]),
            schedule_from_dict(d["pressure_GPa"]),
            d.get("barostat", "iso"),
            schedule_from_dict(d["strain"]),
            d.get("member"),
        )
