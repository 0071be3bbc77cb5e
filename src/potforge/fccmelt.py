"""The FCC/Melt dataset of the paper's section IV: near-equilibrium fcc and liquid snapshots only.

Two parts, both driven by a model (the paper drove them with ANI-Al; potforge uses the campaign's
final model), then labelled by the campaign's oracle:

* ``heatcool_snapshots`` (300) frames equally spaced in time along the heat–cool trajectory of
  Fig. 6 (108-atom fcc, 300 → 1500 → 300 K, :func:`potforge.validate.heatcool.heatcool_trajectory`);
* ``liquid_snapshots`` (250) liquid frames over a range of temperatures and pressures:
  ``liquid_runs`` independent NPT runs (batched in one model call per step), each at a
  (T, P) drawn uniformly from the ranges, melted first, then sampled ``liquid_snapshots /
  liquid_runs`` times.

Every random choice derives from ``seed``. Frames go to a :class:`~potforge.data.DatasetStore` as
pending rows of source ``fcc_melt`` in one transaction (a store holds one generation: other
settings are refused), and are labelled by
:func:`potforge.labeling.label_pending` (crash-safe: no label is lost or computed twice).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from ase import Atoms
from pydantic import BaseModel, ConfigDict, Field

SOURCE = "fcc_melt"


class FccMeltSettings(BaseModel):
    """How the FCC/Melt frames are made. Units: K, GPa, fs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    element: str = "Al"
    seed: int = 0
    timestep_fs: float = Field(2.0, gt=0)
    friction_per_fs: float = Field(0.01, gt=0, description="Langevin friction γ, 1/fs")
    barostat_tau_fs: float = Field(1000.0, gt=0)
    heatcool_supercell: int = Field(3, ge=2, description="n×n×n conventional fcc cells (108 atoms for 3)")
    heatcool_T_low_K: float = 300.0
    heatcool_T_high_K: float = 1500.0
    heatcool_duration_fs: float = Field(100_000.0, gt=0, description="paper ≈ 1 ns; default 100 ps")
    heatcool_pressure_GPa: float = 0.0001
    heatcool_snapshots: int = Field(300, ge=1)
    liquid_supercell: int = Field(3, ge=2, description="n×n×n fcc cells melted for each liquid run")
    liquid_runs: int = Field(25, ge=1)
    liquid_snapshots: int = Field(250, ge=0)
    liquid_T_range_K: tuple[float, float] = (1000.0, 2500.0)
    liquid_P_range_GPa: tuple[float, float] = (0.0, 10.0)
    liquid_premelt_K: float = 2500.0
    liquid_premelt_fs: float = Field(2000.0, ge=0)
    liquid_equilibrate_fs: float = Field(2000.0, ge=0)
    liquid_interval_fs: float = Field(250.0, gt=0, description="time between liquid snapshots of one run")

    @classmethod
    def quick(cls, **overrides) -> FccMeltSettings:
        """A smaller set for smoke runs: 60 heat–cool + 40 liquid frames, 20 ps heat–cool."""
        values = dict(heatcool_duration_fs=20_000.0, heatcool_snapshots=60, liquid_runs=8, liquid_snapshots=40)
        values.update(overrides)
        return cls(**values)

    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


def _integrator(s: FccMeltSettings):
    from potforge import md

    return md.Langevin(s.timestep_fs, s.friction_per_fs, s.barostat_tau_fs)


def heatcool_frames(model, settings: FccMeltSettings, progress: Callable[[int], None] | None = None) -> list[Atoms]:
    """``heatcool_snapshots`` frames equally spaced along the heat–cool trajectory driven by
    ``model`` (an ANIEnsemble), starting from fcc at the model's 0 K lattice constant."""
    from potforge import md
    from potforge.validate.core import model_evaluator
    from potforge.validate.crystals import fcc_equilibrium
    from potforge.validate.heatcool import heatcool_trajectory
    from potforge.validate.settings import ValidationSettings
    from potforge.validate.trajectories import fcc_supercell

    s = settings
    a0 = fcc_equilibrium(model_evaluator(model), ValidationSettings(element=s.element)).a0_A
    start = fcc_supercell(s.element, a0, (s.heatcool_supercell,) * 3)
    frames = heatcool_trajectory(
        start, md.EnsembleForces(model), t_low_K=s.heatcool_T_low_K, t_high_K=s.heatcool_T_high_K,
        duration_fs=s.heatcool_duration_fs, snapshot_every_fs=s.heatcool_duration_fs / s.heatcool_snapshots,
        integ=_integrator(s), pressure_GPa=s.heatcool_pressure_GPa, seed=(s.seed, 31),
        n_snapshots=s.heatcool_snapshots, progress=progress,
    )  # fmt: skip
    for a in frames:
        a.info["fccmelt_kind"] = "heatcool"
    return frames


def liquid_conditions(settings: FccMeltSettings) -> list[tuple[float, float]]:
    """(T K, P GPa) of every liquid run, uniform over the ranges, from the seed."""
    rng = np.random.default_rng((settings.seed, 32))
    t = rng.uniform(*settings.liquid_T_range_K, settings.liquid_runs)
    p = rng.uniform(*settings.liquid_P_range_GPa, settings.liquid_runs)
    return [(float(a), float(b)) for a, b in zip(t, p, strict=True)]


def liquid_frames(model, settings: FccMeltSettings, progress: Callable[[int], None] | None = None) -> list[Atoms]:
    """``liquid_snapshots`` liquid frames from ``liquid_runs`` NPT runs at drawn (T, P)."""
    from potforge import md
    from potforge.validate.core import model_evaluator
    from potforge.validate.crystals import fcc_equilibrium
    from potforge.validate.settings import ValidationSettings
    from potforge.validate.trajectories import fcc_supercell, run, start

    s = settings
    if s.liquid_snapshots == 0:
        return []
    a0 = fcc_equilibrium(model_evaluator(model), ValidationSettings(element=s.element)).a0_A
    crystal = fcc_supercell(s.element, a0 * 1.04, (s.liquid_supercell,) * 3)
    integ = _integrator(s)
    forces = md.EnsembleForces(model)
    conditions = liquid_conditions(s)
    per_run = [len(c) for c in np.array_split(np.arange(s.liquid_snapshots), s.liquid_runs)]
    states = md.concat([
        # melted at liquid_premelt_K first, then at the run's temperature
        start(crystal, forces, md.PiecewiseLinear((0.0, s.liquid_premelt_fs, s.liquid_premelt_fs),
                                                  (s.liquid_premelt_K, s.liquid_premelt_K, temp)),
              (s.seed, 33, k), pressure_GPa=p)
        for k, (temp, p) in enumerate(conditions)
    ])  # fmt: skip
    dt = s.timestep_fs
    n_eq = round((s.liquid_premelt_fs + s.liquid_equilibrate_fs) / dt)
    states = run(states, forces, integ, n_eq, progress=progress, label="liquid")
    every = max(round(s.liquid_interval_fs / dt), 1)
    frames: list[Atoms] = []

    def keep(step, sts):
        k_snap = step // every
        for k in range(sts.n_systems):
            if k_snap <= per_run[k]:
                a = sts.to_atoms(k)
                a.info.update(fccmelt_kind="liquid", time_fs=float(sts.time_fs[k]), target_T_K=conditions[k][0],
                              pressure_GPa=conditions[k][1], run=k)  # fmt: skip
                frames.append(a)

    run(states, forces, integ, every * max(per_run), every=every, callback=keep, progress=progress, label="liquid")
    return frames


def md_steps(settings: FccMeltSettings) -> int:
    """MD steps of the generator (heat–cool + batched liquid), for progress bars."""
    s = settings
    every = max(round(s.liquid_interval_fs / s.timestep_fs), 1)
    liquid = 0
    if s.liquid_snapshots:
        liquid = round((s.liquid_premelt_fs + s.liquid_equilibrate_fs) / s.timestep_fs)
        liquid += every * int(np.ceil(s.liquid_snapshots / s.liquid_runs))
    heatcool = max(int(s.heatcool_duration_fs / (s.heatcool_snapshots * s.timestep_fs)), 1) * s.heatcool_snapshots
    return heatcool + liquid


def queue_fccmelt(
    store,
    model,
    oracle,
    settings: FccMeltSettings,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Generate the FCC/Melt frames with ``model`` and add them to ``store`` as pending rows for
    ``oracle`` (source ``fcc_melt``), all in one transaction; a store that already holds this
    generation (same settings digest in its metadata) is left alone. Returns frames added."""
    from potforge.data import Provenance

    key = f"fccmelt_{settings.digest()}"
    metadata = store.metadata()
    if metadata.get(key):
        return 0
    other = [k for k in metadata if k.startswith("fccmelt_")]
    if other:
        from potforge.errors import DataError

        raise DataError(
            f"{store.name} already holds FCC/Melt frames made with other settings "
            f"({metadata[other[0]].get('settings')}); use the same settings or another dataset"
        )
    frames = heatcool_frames(model, settings, progress) + liquid_frames(model, settings, progress)
    added = 0
    with store.db:
        for k, a in enumerate(frames):
            kind = a.info["fccmelt_kind"]
            trajectory = (
                f"heatcool:{settings.seed}" if kind == "heatcool" else f"liquid:{settings.seed}:{a.info['run']}"
            )
            prov = Provenance(source=SOURCE, trajectory=trajectory, sim_time_fs=float(a.info["time_fs"]),
                              extra={"kind": kind, "index": k, "target_T_K": a.info.get("target_T_K"),
                                     "pressure_GPa": a.info.get("pressure_GPa")})  # fmt: skip
            added += store.add_pending(a, prov, oracle.name, oracle.settings_hash()) is not None
        store.set_metadata(**{key: {"frames": len(frames), "settings": settings.model_dump(mode="json")}})
    return added


def label_fccmelt(store, oracle, engine, workdir: Path, progress=None, timeout_s: float | None = 3600.0):
    """Label every pending frame of ``store`` (crash-safe; see :func:`potforge.labeling.label_pending`)."""
    from potforge.labeling import label_pending

    return label_pending(store, oracle, engine, workdir, timeout_s=timeout_s, progress=progress)
