"""The structure census: what a campaign's sampler explored and what its dataset holds, by
common-neighbour analysis (fcc, hcp, bcc, icosahedral, other; :mod:`potforge.analysis`).

Per generation (:func:`generation_census`): the frames it flagged, the periodic snapshots of its
running trajectories (every ``sampler.census_every_fs``) and the simulated time at which each
trajectory first became crystalline (more than :data:`~potforge.records.CRYSTALLINE_THRESHOLD` of
its atoms fcc, hcp or bcc). Per dataset (:func:`dataset_census`): how many labelled frames are
crystalline — the paper's claim that active learning *discovered* crystals, as a number.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from potforge import durable
from potforge.records import CRYSTALLINE_THRESHOLD, CensusPoint, FlaggedFrame, SampleSummary

KINDS = ("fcc", "hcp", "bcc", "ico", "other")


class Fractions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    fcc: float = 0.0
    hcp: float = 0.0
    bcc: float = 0.0
    ico: float = 0.0
    other: float = 0.0

    @classmethod
    def mean(cls, points: list[CensusPoint]) -> Fractions:
        if not points:
            return cls()
        return cls(**{k: float(np.mean([getattr(p, k) for p in points])) for k in KINDS})


class GenerationCensus(BaseModel):
    """The census of one generation's sampling."""

    model_config = ConfigDict(extra="ignore")
    flagged: int = 0
    flagged_crystalline: int = 0
    flagged_mean: Fractions = Field(default_factory=Fractions)
    snapshots: int = 0
    snapshots_crystalline: int = 0
    snapshot_mean: Fractions = Field(default_factory=Fractions)
    trajectories: int = 0
    crystallised: int = 0
    first_crystalline_fs: list[float] = Field(default_factory=list)


def generation_census(sampling_dir: Path) -> GenerationCensus:
    """The census of a finished sampling stage (its summary and the frames it hands on)."""
    summary = SampleSummary.read(sampling_dir / "summary.json")
    used = [o for o in summary.outcomes if o.outcome != "unused"]
    names = summary.flagged_trajectories
    if names is None:
        names = [o.traj for o in used if o.is_event]
    frames = []
    for traj in names:
        path = sampling_dir / "flagged" / f"{traj}.json"
        if path.exists():
            frames.append(FlaggedFrame.read(path))
    flagged_points = [f.census for f in frames if f.census is not None]
    snapshots = [c for o in used for c in o.census]
    first = [t for o in used if (t := o.first_crystalline_fs) is not None]
    return GenerationCensus(
        flagged=len(frames),
        flagged_crystalline=sum(c.crystalline > CRYSTALLINE_THRESHOLD for c in flagged_points),
        flagged_mean=Fractions.mean(flagged_points),
        snapshots=len(snapshots),
        snapshots_crystalline=sum(c.crystalline > CRYSTALLINE_THRESHOLD for c in snapshots),
        snapshot_mean=Fractions.mean(snapshots),
        trajectories=len(used),
        crystallised=len(first),
        first_crystalline_fs=sorted(first),
    )


def dataset_census(store, oracle_hash: str, cache_file: Path) -> dict[str, int]:
    """Labelled frames of ``oracle_hash`` in ``store`` and how many are crystalline. Each frame's
    fractions are cached in ``cache_file`` by frame hash, so a growing dataset costs only its
    new frames."""
    from potforge.analysis import structure_fractions

    cache: dict[str, dict[str, float]] = durable.read_json(cache_file) or {}
    total = crystalline = 0
    new = False
    for atoms in store.frames(oracle_hash=oracle_hash):
        key = str(atoms.info.get("frame_hash"))
        f = cache.get(key)
        if f is None:
            f = cache[key] = structure_fractions(atoms)
            new = True
        total += 1
        crystalline += (f["fcc"] + f["hcp"] + f["bcc"]) > CRYSTALLINE_THRESHOLD
    if new:
        durable.write_json(cache_file, cache)
    return {"labelled_frames": total, "crystalline_frames": crystalline}
