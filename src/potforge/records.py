"""Typed records that cross stage boundaries: written and read through the same type.

* :class:`FlaggedFrame` — a frame the sampler stopped a trajectory on (uncertain, or the last
  sane frame of an unstable one), queued for the oracle by the campaign;
* :class:`TrajectoryOutcome` — how one trajectory of a generation ended, with its structure census;
* :class:`SampleSummary` and :class:`TrainSummary` — what a sampling or training stage produced.

Every record is a pydantic model: fields are checked when a file is read, and files written
by older versions (which lack newer fields) still load with the defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from ase import Atoms
from pydantic import BaseModel, ConfigDict, Field

from potforge import durable


class Record(BaseModel):
    """A JSON record on disk, written atomically."""

    model_config = ConfigDict(extra="ignore")

    def write(self, path: str | Path) -> None:
        durable.write_json(path, self.model_dump(mode="json"))

    @classmethod
    def read(cls, path: str | Path) -> Self:
        return cls.model_validate_json(Path(path).read_text())


class CensusPoint(BaseModel):
    """Common-neighbour fractions of one frame at simulated time ``time_fs``."""

    model_config = ConfigDict(extra="ignore")
    time_fs: float
    fcc: float
    hcp: float
    bcc: float
    ico: float
    other: float

    @property
    def crystalline(self) -> float:
        """fcc + hcp + bcc."""
        return self.fcc + self.hcp + self.bcc

    @property
    def close_packed(self) -> float:
        return self.fcc + self.hcp


#: a frame is "crystalline" when more than this fraction of its atoms is fcc, hcp or bcc
CRYSTALLINE_THRESHOLD = 0.3

Outcome = Literal["flagged", "unstable", "survived", "running", "unused"]


class FlaggedFrame(Record):
    """The frame of a stopped trajectory. Positions (N, 3) Å and cell (3, 3) Å, wrapped."""

    traj: str
    generation: int
    outcome: Literal["flagged", "unstable"]
    reason: str
    sim_time_fs: float
    numbers: list[int]
    positions: list[list[float]]
    cell: list[list[float]]
    uncertainty: dict[str, float] = Field(default_factory=dict)
    schedule: dict[str, Any] | None = None
    strain: dict[str, Any] | None = None
    pressure: dict[str, Any] | None = None
    target_temperature_K: float | None = None
    target_pressure_GPa: float | None = None
    census: CensusPoint | None = None
    parent: str | None = None  # the previous generation's trajectory this one continued, if any
    member: int | None = None  # the ensemble member whose forces drove it (None: the mean)

    def atoms(self) -> Atoms:
        return Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=True)


class TrajectoryOutcome(Record):
    """How trajectory ``traj`` ended: ``flagged``/``unstable`` (an event at ``time_fs``),
    ``survived`` (ran its whole budget), ``running`` (cut by the wall-time cap: censored), or
    ``unused`` (started beyond the generation's ``max_flagged`` cut; not counted)."""

    traj: str
    outcome: Outcome
    reason: str = ""
    time_fs: float
    steps: int = 0
    n_atoms: int = 0
    uncertainty: dict[str, float] = Field(default_factory=dict)
    census: list[CensusPoint] = Field(default_factory=list)
    parent: str | None = None  # the previous generation's trajectory this one continued, if any

    @property
    def is_event(self) -> bool:
        return self.outcome in ("flagged", "unstable")

    @property
    def first_crystalline_fs(self) -> float | None:
        """Simulated time of the first census point above :data:`CRYSTALLINE_THRESHOLD`."""
        for c in self.census:
            if c.crystalline > CRYSTALLINE_THRESHOLD:
                return c.time_fs
        return None


class SampleSummary(Record):
    """A finished sampling stage. ``median_time_to_flag_fs`` is the Kaplan–Meier median (None
    when survival never fell to one half: then it exceeds ``max_observed_fs``);
    ``survival_at_target`` is S(target); ``flagged_trajectories`` lists, in id order, the
    trajectories whose frames the campaign labels."""

    flagged: int
    trajectories: int = 0
    total_steps: int
    walltime_s: float
    stop_reason: str
    median_time_to_flag_fs: float | None = None
    survival_at_target: float | None = None
    max_observed_fs: float | None = None
    censored: int = 0
    flagged_trajectories: list[str] | None = None
    outcomes: list[TrajectoryOutcome] = Field(default_factory=list)


class TrainSummary(Record):
    """A finished training stage."""

    model: str
    epochs: int
    walltime_s: float
    n_train: int
    metrics: dict[str, Any] = Field(default_factory=dict)
