"""Melting line by solid–liquid coexistence (paper III.E, Fig. 5).

At each pressure, for each side (its own MD, same protocol and seeds):

1. an fcc slab of ``melting_supercell`` conventional cells (z normal to the (001) interface) at
   the side's lattice constant is equilibrated as a crystal (NPT, each axis on its own) at the
   coldest temperature of a grid centred on the guess c0 + c1·P + c2·P² (:attr:`melting_guess_K`);
   a slab whose held half is then not crystalline stops the benchmark with a clear message;
2. the lower half is held fixed while the upper half melts at 2 × the highest grid temperature
   (barostat on z only, so the liquid keeps the crystal's cross-section): an explicit interface;
3. for every trial temperature T of a grid around T_c, the liquid is first brought to T with the
   solid still held, then everything is released and run at (T, P), every axis barostatted on its
   own. Common neighbour analysis (OVITO, adaptive cutoff) counts the crystalline atoms (fcc, hcp,
   bcc) every ``melting_sample_fs``; the slope of that fraction in time says which way the
   interface moves: down above T_m (the solid melts), up below (the liquid freezes);
4. T_m lies between the highest temperature that grew and the lowest that melted; finer grids
   inside that bracket (``melting_refine_rounds``) narrow it, and a grid that does not bracket
   T_m is extended (``melting_extend_rounds``). The estimate is the zero of the slope, linearly
   interpolated between the bracketing temperatures; the uncertainty is half the bracket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from potforge import md
from potforge.validate.core import BenchmarkError, Evaluator
from potforge.validate.crystals import fcc_equilibrium
from potforge.validate.plots import COLORS, figure_path, new_figure, save
from potforge.validate.registry import register
from potforge.validate.results import BenchmarkResult, SummaryRow, Table
from potforge.validate.settings import ValidationSettings
from potforge.validate.trajectories import (
    fcc_supercell,
    fork,
    integrator,
    md_forces,
    md_is_cheap,
    run,
    solid_fraction,
    start,
)


def _steps(fs: float, dt: float) -> int:
    return max(round(fs / dt), 1)


def prepare_slab(
    forces: md.ForceProvider,
    a0_A: float,
    element: str,
    supercell: tuple[int, int, int],
    pressure_GPa: float,
    crystal_T_K: float,
    melt_T_K: float,
    prepare_fs: float,
    integ: md.Langevin,
    seed: int,
) -> md.MDState:
    """An fcc slab equilibrated at ``crystal_T_K`` whose upper half (z > Lz/2) was melted at
    ``melt_T_K`` while the lower half was held: the start of every coexistence run. The returned
    state still has the lower half ``fixed``."""
    dt = integ.timestep_fs
    atoms = fcc_supercell(element, a0_A, supercell)
    st = start(atoms, forces, crystal_T_K, (seed, 21), pressure_GPa=pressure_GPa, barostat="aniso")
    st = run(st, forces, integ, _steps(prepare_fs, dt), label="slab crystal")
    # (002) layers sit at z = j / (2 nz); shift by a quarter spacing so the cut falls between layers
    cell = st.cells[0].double().numpy()
    frac_z = (np.linalg.solve(cell.T, st.positions.double().numpy().T).T[:, 2] + 0.25 / supercell[2]) % 1.0
    st = fork(st, 0, melt_T_K, (seed, 22), pressure_GPa=pressure_GPa, barostat="z", fixed=frac_z < 0.5)
    return run(st, forces, integ, _steps(prepare_fs, dt), label="slab melting")


@dataclass
class Trial:
    """One coexistence run: times (ps), crystalline fraction, its slope (1/ps; < 0: melting)."""

    temperature_K: float
    time_ps: np.ndarray
    solid_fraction: np.ndarray
    slope_per_ps: float
    mean_pressure_GPa: float = float("nan")


def coexistence_runs(
    prepared: md.MDState,
    temperatures_K: list[float],
    forces: md.ForceProvider,
    *,
    pressure_GPa: float,
    settle_fs: float,
    run_fs: float,
    sample_fs: float,
    integ: md.Langevin,
    seed: int,
) -> list[Trial]:
    """Release the prepared slab at every temperature (batched for models); see the module doc."""
    dt = integ.timestep_fs
    states = md.concat([
        # the liquid's velocities at T; the held solid stays at rest
        fork(prepared, 0, float(t), (seed, 23, int(t * 1000)), pressure_GPa=pressure_GPa, barostat="z",
             thermalize=True)
        for t in temperatures_K
    ])  # fmt: skip
    states = run(states, forces, integ, _steps(settle_fs, dt), label="coexistence")  # liquid to T, solid held
    states = md.concat([
        fork(states, k, float(t), (seed, 24, int(t * 1000)), pressure_GPa=pressure_GPa, barostat="aniso",
             fixed=None, thermalize=True)
        for k, t in enumerate(temperatures_K)
    ])  # fmt: skip
    every = _steps(sample_fs, dt)
    n = every * max(round(run_fs / (every * dt)), 2)
    times: list[float] = [0.0]
    fracs = [[solid_fraction(states, k)] for k in range(states.n_systems)]
    pres: list[list[float]] = [[] for _ in temperatures_K]

    def sample(step, sts):
        times.append(step * dt / 1000)
        p_now = sts.pressure_GPa().tolist()
        for k in range(sts.n_systems):
            fracs[k].append(solid_fraction(sts, k))
            pres[k].append(p_now[k])

    run(states, forces, integ, n, every=every, callback=sample, label="coexistence")
    out = []
    t_ps = np.array(times)
    for t, f, p in zip(temperatures_K, fracs, pres, strict=True):
        f = np.array(f)
        slope = float(np.polyfit(t_ps, f, 1)[0])
        out.append(Trial(float(t), t_ps, f, slope, float(np.mean(p))))
    return out


@dataclass
class MeltingPoint:
    """T_m estimate (K) ± half the bracket, the bracket, and every trial run."""

    pressure_GPa: float
    T_m_K: float
    uncertainty_K: float
    bracket_K: tuple[float, float]
    trials: list[Trial] = field(default_factory=list)


def estimate(trials: list[Trial]) -> tuple[float, float, tuple[float, float]] | None:
    """(T_m, ± half bracket, bracket) from the trials; None when they do not bracket T_m."""
    melted = sorted(t.temperature_K for t in trials if t.slope_per_ps < 0)
    grew = sorted(t.temperature_K for t in trials if t.slope_per_ps >= 0)
    if not melted or not grew:
        return None
    hi = melted[0]
    below = [t for t in grew if t < hi]
    lo = below[-1] if below else grew[0]
    if lo > hi:  # every growing run is hotter than a melting one: noise; bracket the crossing anyway
        lo, hi = hi, lo
    by_t = {t.temperature_K: t.slope_per_ps for t in trials}
    s_lo, s_hi = by_t[lo], by_t[hi]
    tm = lo + (hi - lo) * s_lo / (s_lo - s_hi) if s_lo != s_hi else 0.5 * (lo + hi)
    return float(tm), 0.5 * (hi - lo), (lo, hi)


def melting_point(side: Evaluator, pressure_GPa: float, settings: ValidationSettings) -> MeltingPoint:
    """Coexistence estimate of ``side``'s fcc melting temperature at ``pressure_GPa``."""
    s = settings
    key = ("melting", pressure_GPa, s.model_dump_json())
    if key in side.memo:
        return side.memo[key]
    integ = integrator(s)
    c0, c1, c2 = s.melting_guess_K
    center = c0 + c1 * pressure_GPa + c2 * pressure_GPa**2
    hw, npts = s.melting_grid_half_width_K, s.melting_grid_points
    grid = list(np.linspace(center - hw, center + hw, npts))
    spacing = 2 * hw / (npts - 1)
    forces = md_forces(side)
    a0 = fcc_equilibrium(side, s).a0_A
    prepared_at: dict[float, md.MDState] = {}

    def slab(t_crystal: float) -> md.MDState:
        """The half-melted slab, its crystal equilibrated at the coldest trial temperature (a
        crystal that melts at T_c would leave no solid to hold); rebuilt when grids go colder."""
        key_t = max(t_crystal, 1.0)
        if key_t not in prepared_at:
            prepared_at.clear()
            st = prepare_slab(
                forces, a0, s.element, s.melting_supercell, pressure_GPa, key_t, 2 * max(grid),
                s.melting_prepare_fs, integ, s.md_seed,
            )  # fmt: skip
            held = solid_fraction(st, 0, st.fixed.numpy())
            if held < 0.3:
                raise BenchmarkError(
                    f"{side.label}: the fcc slab was not crystalline after {s.melting_prepare_fs:g} fs at "
                    f"{key_t:.0f} K and {pressure_GPa:g} GPa (crystalline fraction {held:.2f}); its T_m is far "
                    "below the grid: lower melting_guess_K"
                )
            prepared_at[key_t] = st
        return prepared_at[key_t]

    trials: list[Trial] = []
    refine, extend = s.melting_refine_rounds, s.melting_extend_rounds
    todo = grid
    t_crystal = min(grid)
    while todo:
        todo = [float(t) for t in todo if t > 0 and all(abs(t - x.temperature_K) > 1e-6 for x in trials)]
        if not todo:
            break
        t_crystal = min(t_crystal, *todo)
        try:
            prepared = slab(t_crystal)
        except BenchmarkError:
            if extend <= 0 or t_crystal - spacing <= 0:
                raise
            extend -= 1  # the crystal itself melted: the whole grid is above T_m; go colder
            todo = [t_crystal - spacing * (k + 1) for k in range(npts)]
            continue
        trials += coexistence_runs(
            prepared, todo, forces, pressure_GPa=pressure_GPa, settle_fs=0.25 * s.melting_prepare_fs,
            run_fs=s.melting_run_fs, sample_fs=s.melting_sample_fs, integ=integ, seed=s.md_seed,
        )  # fmt: skip
        est = estimate(trials)
        temps = sorted(t.temperature_K for t in trials)
        if est is None and extend > 0:
            extend -= 1
            melted_all = all(t.slope_per_ps < 0 for t in trials)
            step = -spacing if melted_all else spacing
            edge = temps[0] if melted_all else temps[-1]
            todo = [edge + step * (k + 1) for k in range(npts)]
            todo = [t for t in todo if t > 0]
        elif est is not None and refine > 0:
            refine -= 1
            lo, hi = est[2]
            todo = list(np.linspace(lo, hi, s.melting_refine_points + 2)[1:-1])
        else:
            todo = []
    est = estimate(trials)
    if est is None:
        kind = "melted" if all(t.slope_per_ps < 0 for t in trials) else "grew"
        raise BenchmarkError(
            f"{side.label}: no melting bracket at {pressure_GPa:g} GPa: the solid {kind} at every trial "
            f"temperature ({', '.join(f'{t.temperature_K:.0f}' for t in trials)} K); widen melting_guess_K/grid"
        )
    mp = MeltingPoint(pressure_GPa, est[0], est[1], est[2], sorted(trials, key=lambda t: t.temperature_K))
    side.memo[key] = mp
    return mp


@register("melting", "Melting line by solid–liquid coexistence", section="III.E", group="dynamic")
def melting_benchmark(
    model: Evaluator, reference: Evaluator, settings: ValidationSettings, out_dir: Path
) -> BenchmarkResult:
    s = settings
    res = BenchmarkResult("melting", "Melting line by solid–liquid coexistence", "III.E")
    with_ref = md_is_cheap(reference, s.md_reference)
    pm: dict[float, MeltingPoint] = {}
    pr: dict[float, MeltingPoint] = {}
    failures = []
    for p in s.melting_pressures_GPa:
        pm[p] = melting_point(model, p, s)
        if with_ref:
            try:
                pr[p] = melting_point(reference, p, s)
            except BenchmarkError as exc:
                failures.append(str(exc))
    for p in s.melting_pressures_GPa:
        m, r = pm[p], pr.get(p)
        res.summary.append(SummaryRow(
            f"T_m at {p:g} GPa", m.T_m_K, None if r is None else r.T_m_K, "K", 0,
            f"± {m.uncertainty_K:.0f} (model)" + ("" if r is None else f", ± {r.uncertainty_K:.0f} (reference)"),
        ))  # fmt: skip
    rows = []
    for side_label, pts in ((model.label, pm), (reference.label, pr)):
        for p, mp in pts.items():
            for t in mp.trials:
                rows.append([side_label, p, t.temperature_K, t.slope_per_ps, t.solid_fraction[0], t.solid_fraction[-1],
                             t.mean_pressure_GPa, "melts" if t.slope_per_ps < 0 else "grows"])  # fmt: skip
    res.tables.append(Table(
        "Coexistence runs (crystalline fraction by adaptive CNA)",
        ["side", "P (GPa)", "T (K)", "slope (1/ps)", "fraction start", "fraction end", "mean P (GPa)", "solid"],
        rows, decimals=3,
    ))  # fmt: skip
    res.tables.append(Table(
        "Melting temperatures", ["side", "P (GPa)", "T_m (K)", "± (K)", "bracket low (K)", "bracket high (K)"],
        [[lab, p, mp.T_m_K, mp.uncertainty_K, *mp.bracket_K] for lab, pts in ((model.label, pm), (reference.label, pr))
         for p, mp in pts.items()], decimals=1,
    ))  # fmt: skip
    res.figures.append(_plot(model.label, reference.label, pm, pr, out_dir))
    nx, ny, nz = s.melting_supercell
    res.notes.append(
        f"fcc (001) slab {nx}×{ny}×{nz} cells ({4 * nx * ny * nz} atoms), half melted; runs of "
        f"{s.melting_run_fs / 1000:g} ps per trial temperature, time step {s.md_timestep_fs} fs. "
        "Experiment: 933.5 K at 1 atm; the paper: ≈ 925 K for ANI-Al and Mendelev EAM."
    )
    res.notes += [f"reference: {f}" for f in failures]
    if not with_ref:
        res.notes.append(f"reference MD skipped (md_reference = {s.md_reference})")
    res.data = {lab: {f"{p:g}": {"T_m_K": mp.T_m_K, "uncertainty_K": mp.uncertainty_K, "bracket_K": mp.bracket_K,
                                 "trials": [{"T_K": t.temperature_K, "time_ps": t.time_ps, "fraction": t.solid_fraction,
                                             "slope_per_ps": t.slope_per_ps} for t in mp.trials]}
                      for p, mp in pts.items()} for lab, pts in (("model", pm), ("reference", pr))}  # fmt: skip
    return res


def _plot(ml: str, rl: str, pm: dict, pr: dict, out_dir: Path) -> Path:
    fig, (ax1, ax2) = new_figure(2, 5.2, 4.2)
    for pts, label, fmt in ((pm, ml, "-s"), (pr, rl, "--o")):
        if pts:
            p = sorted(pts)
            ax1.errorbar(p, [pts[x].T_m_K for x in p], yerr=[pts[x].uncertainty_K for x in p], fmt=fmt, capsize=3,
                         mfc="none", label=label)  # fmt: skip
    ax1.set(xlabel="P (GPa)", ylabel="T_m (K)", title="fcc–liquid coexistence")
    ax1.legend()
    first = min(pm)
    for pts, ls, label in ((pm, "-", ml), (pr, "--", rl)):
        if first not in pts:
            continue
        temps = [t.temperature_K for t in pts[first].trials]
        lo, hi = min(temps), max(temps)
        for t in pts[first].trials:
            c = COLORS[0] if hi == lo else _cmap((t.temperature_K - lo) / (hi - lo))
            ax2.plot(t.time_ps, t.solid_fraction, ls, color=c, lw=1.3, label=f"{label} {t.temperature_K:.0f} K")
    ax2.set(xlabel="time (ps)", ylabel="crystalline fraction (CNA)", title=f"slab at {first:g} GPa")
    ax2.legend(fontsize=6, ncol=2)
    return save(fig, figure_path(out_dir, "melting"))


def _cmap(x: float):
    from matplotlib import colormaps

    return colormaps["coolwarm"](float(x))
