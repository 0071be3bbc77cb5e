"""Heat–cool trajectory (paper III.F, Fig. 6): a 108-atom fcc crystal driven by the model from
300 K to 1500 K and back (it melts and, on cooling, freezes or vitrifies); every
``heatcool_reference_every_fs`` a snapshot is recomputed by the reference. Reported along the
trajectory: energy per atom, mean force magnitude and pressure by both, their MAE (the paper:
0.84 meV/atom, 4.1 meV/Å, 0.36 GPa against DFT), and the CNA structure fractions (fcc/hcp/other).

The trajectory itself (:func:`heatcool_trajectory`) also provides the 300 heat–cool snapshots of
the FCC/Melt dataset (:mod:`potforge.fccmelt`, paper IV).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from potforge import md
from potforge.analysis import structure_fractions
from potforge.md.state import GPA
from potforge.validate.core import Evaluator
from potforge.validate.crystals import fcc_equilibrium
from potforge.validate.plots import COLORS, figure_path, new_figure, save
from potforge.validate.registry import register
from potforge.validate.results import BenchmarkResult, Curve, SummaryRow, Table
from potforge.validate.settings import ValidationSettings
from potforge.validate.trajectories import Labels, fcc_supercell, integrator, label_frames, md_forces, run, start


def triangle_schedule(t_low_K: float, t_high_K: float, duration_fs: float) -> md.PiecewiseLinear:
    """T(t): linear from t_low to t_high over the first half of ``duration_fs``, back in the second."""
    return md.PiecewiseLinear((0.0, 0.5 * duration_fs, duration_fs), (t_low_K, t_high_K, t_low_K))


def heatcool_trajectory(
    start_atoms: Atoms,
    forces: md.ForceProvider,
    *,
    t_low_K: float,
    t_high_K: float,
    duration_fs: float,
    snapshot_every_fs: float,
    integ: md.Langevin,
    pressure_GPa: float | None,
    seed: int | tuple,
    n_snapshots: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Atoms]:
    """Run the heat–cool MD from ``start_atoms``; return snapshots every ``snapshot_every_fs``
    (positions, cell, velocities; ``info``: time_fs, target_T_K, kinetic_T_K,
    kinetic_pressure_GPa), as many as fit in ``duration_fs`` or exactly ``n_snapshots``."""
    schedule = triangle_schedule(t_low_K, t_high_K, duration_fs)
    state = start(start_atoms, forces, schedule, seed, pressure_GPa=pressure_GPa)
    dt = integ.timestep_fs
    if n_snapshots is None:
        every = max(round(snapshot_every_fs / dt), 1)
        n_steps = every * max(round(duration_fs / (every * dt)), 1)
    else:  # exactly n snapshots, equally spaced, the last at (or just before) the end
        every = max(int(duration_fs / (n_snapshots * dt)), 1)
        n_steps = every * n_snapshots
    snaps: list[Atoms] = []

    def keep(step, st):
        atoms = st.to_atoms(0, with_velocities=True)
        kinetic = float(torch.diagonal(st.kinetic_tensor()[0]).sum()) / (3 * float(st.volumes()[0])) / GPA
        atoms.info.update(
            time_fs=float(st.time_fs[0]),
            target_T_K=float(st.target_temperature_K()[0]),
            kinetic_T_K=float(st.temperature_K()[0]),
            kinetic_pressure_GPa=kinetic,
        )
        snaps.append(atoms)

    run(state, forces, integ, n_steps, every=every, callback=keep, progress=progress, label="heat–cool")
    return snaps


@dataclass
class _Series:
    energy_meV_atom: np.ndarray
    mean_force_eV_A: np.ndarray
    pressure_GPa: np.ndarray


def _series(labels: list[Labels], frames: list[Atoms]) -> _Series:
    n = np.array([len(a) for a in frames])
    e = np.array([lab.energy_eV for lab in labels]) / n * 1e3
    f = np.array([np.linalg.norm(lab.forces_eV_A, axis=1).mean() for lab in labels])
    kin = np.array([a.info["kinetic_pressure_GPa"] for a in frames])
    p = np.array([-np.mean(lab.stress_eV_A3[:3]) / GPA for lab in labels]) + kin
    return _Series(e, f, p)


def _transition(t_fs, temps, crystalline, heating: bool) -> float | None:
    """Target temperature where the crystalline fraction first falls below (heating) or rises
    above (cooling) one half; None if it never does."""
    half = len(t_fs) // 2
    idx = range(half) if heating else range(half, len(t_fs))
    for k in idx:
        if (crystalline[k] < 0.5) if heating else (crystalline[k] > 0.5):
            return float(temps[k])
    return None


@register("heatcool", "Heat–cool trajectory: melting and freezing", section="III.F", group="dynamic")
def heatcool_benchmark(
    model: Evaluator, reference: Evaluator, settings: ValidationSettings, out_dir: Path
) -> BenchmarkResult:
    s = settings
    res = BenchmarkResult("heatcool", "Heat–cool trajectory: melting and freezing", "III.F")
    a0 = fcc_equilibrium(model, s).a0_A
    crystal = fcc_supercell(s.element, a0, (s.heatcool_supercell,) * 3)
    integ = integrator(s)
    frames = heatcool_trajectory(
        crystal, md_forces(model), t_low_K=s.heatcool_T_low_K, t_high_K=s.heatcool_T_high_K,
        duration_fs=s.heatcool_duration_fs, snapshot_every_fs=s.heatcool_reference_every_fs, integ=integ,
        pressure_GPa=s.heatcool_pressure_GPa, seed=(s.md_seed, 11),
    )  # fmt: skip
    sm = _series(label_frames(model, frames), frames)
    sr = _series(label_frames(reference, frames), frames)
    t_ps = np.array([a.info["time_fs"] for a in frames]) / 1000
    temps = np.array([a.info["target_T_K"] for a in frames])
    fractions = [structure_fractions(a) for a in frames]
    fcc = np.array([f["fcc"] for f in fractions])
    hcp = np.array([f["hcp"] for f in fractions])
    other = 1.0 - fcc - hcp
    res.curves += [
        Curve("energy along the trajectory", "time (ps)", "meV/atom", t_ps, sm.energy_meV_atom, sr.energy_meV_atom),
        Curve("mean force magnitude", "time (ps)", "eV/Å", t_ps, sm.mean_force_eV_A, sr.mean_force_eV_A),
        Curve("pressure", "time (ps)", "GPa", t_ps, sm.pressure_GPa, sr.pressure_GPa),
    ]
    e_err = sm.energy_meV_atom - sr.energy_meV_atom
    melt_T = _transition(t_ps, temps, fcc + hcp, heating=True)
    freeze_T = _transition(t_ps, temps, fcc + hcp, heating=False)
    res.summary += [
        SummaryRow("energy MAE, mean offset removed", float(np.mean(np.abs(e_err - e_err.mean()))), None,
                   "meV/atom", 2, f"mean offset {e_err.mean():+.2f}; the curve row is the plain MAE"),
        SummaryRow("melting on heating at", melt_T, None, "K", 0, "crystalline fraction < 0.5"),
        SummaryRow("freezing on cooling at", freeze_T, None, "K", 0, "crystalline fraction > 0.5; — : none"),
    ]  # fmt: skip
    res.tables.append(Table(
        "Errors along the trajectory (model − reference)",
        ["quantity", "MAE", "RMSE", "mean error", "unit", "paper (ANI-Al vs DFT) MAE"],
        [["energy", *_stats(e_err), "meV/atom", 0.84],
         ["mean force magnitude", *_stats(sm.mean_force_eV_A - sr.mean_force_eV_A), "eV/Å", 0.0041],
         ["pressure", *_stats(sm.pressure_GPa - sr.pressure_GPa), "GPa", 0.36]],
        decimals=4,
    ))  # fmt: skip
    res.figures.append(_plot(model.label, reference.label, t_ps, temps, sm, sr, fcc, hcp, other, out_dir))
    res.notes.append(
        f"{len(crystal)} atoms, {s.heatcool_T_low_K:.0f} → {s.heatcool_T_high_K:.0f} → {s.heatcool_T_low_K:.0f} K "
        f"in {s.heatcool_duration_fs / 1000:g} ps (paper ≈ 1 ns), driven by {model.label} "
        f"({f'NPT at {s.heatcool_pressure_GPa:g} GPa' if s.heatcool_pressure_GPa is not None else 'NVT'}); "
        f"{len(frames)} snapshots, one every {s.heatcool_reference_every_fs / 1000:g} ps, recomputed by "
        f"{reference.label}. Pressure = virial + kinetic (same kinetic part for both)."
    )
    res.data = {"time_ps": t_ps, "target_T_K": temps, "fcc": fcc, "hcp": hcp, "other": other,
                "kinetic_T_K": [a.info["kinetic_T_K"] for a in frames]}  # fmt: skip
    return res


def _stats(d: np.ndarray) -> list[float]:
    return [float(np.mean(np.abs(d))), float(np.sqrt(np.mean(d**2))), float(np.mean(d))]


def _plot(ml, rl, t, temps, sm, sr, fcc, hcp, other, out_dir: Path) -> Path:
    fig, axes = new_figure(4, 4.2, 4.0)
    for ax, ym, yr, label in zip(
        axes[:3],
        (sm.energy_meV_atom, sm.mean_force_eV_A, sm.pressure_GPa),
        (sr.energy_meV_atom, sr.mean_force_eV_A, sr.pressure_GPa),
        ("energy (meV/atom)", "mean |F| (eV/Å)", "pressure (GPa)"),
        strict=True,
    ):
        ax.plot(t, ym, "-", color=COLORS[1], lw=1.2, label=ml)
        ax.plot(t, yr, "o", mfc="none", mec="k", ms=2.5, label=rl)
        ax.set(xlabel="time (ps)", ylabel=label)
    axes[0].legend(fontsize=8)
    twin = axes[2].twinx()
    twin.plot(t, temps, color="0.6", lw=1)
    twin.set_ylabel("target T (K)", color="0.4")
    axes[3].stackplot(t, fcc, hcp, other, labels=["fcc", "hcp", "other"], colors=["#2ca02c", "#d62728", "0.7"])
    axes[3].set(xlabel="time (ps)", ylabel="fraction of atoms (CNA)", ylim=(0, 1))
    axes[3].legend(fontsize=8, loc="lower center")
    return save(fig, figure_path(out_dir, "heatcool"))
