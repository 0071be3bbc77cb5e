"""Liquid benchmarks (paper III.D, Fig. 4): radial distribution functions at 1123, 1183 and 1273 K
and the density of the liquid against temperature, both at 1 atm.

Protocol (each side its own MD, same settings and seeds): an n×n×n fcc crystal at the side's own
lattice constant is melted at ``liquid_premelt_K`` (NPT), then, for every temperature, NPT at
1 atm (equilibrate, then average the density), the cell set to that mean density, NVT
equilibration and ``rdf_frames`` frames ``rdf_frame_interval_fs`` apart, g(r) in
``rdf_bin_A`` bins averaged over them (the paper: 50 ps NVT, 100 frames 0.1 ps apart, 0.05 Å).
The paper used a Nosé–Hoover thermostat and barostat; here Langevin and stochastic cell
rescaling (:mod:`potforge.md`), which sample the same ensembles.
Liquid runs are shared between the two benchmarks through the evaluators' memo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from potforge import md
from potforge.analysis import coordination, crystalline_fraction, rdf
from potforge.validate.core import Evaluator
from potforge.validate.crystals import fcc_equilibrium
from potforge.validate.plots import COLORS, figure_path, new_figure, save
from potforge.validate.registry import register
from potforge.validate.results import BenchmarkResult, Curve, SummaryRow, Table
from potforge.validate.settings import ValidationSettings
from potforge.validate.trajectories import fcc_supercell, fork, integrator, md_forces, md_is_cheap, run, start, steps

#: Liquid aluminium density, Assael et al., J. Phys. Chem. Ref. Data 35, 285 (2006): ρ = ρm + k(T − Tm).
ASSAEL_AL = {"rho_m_g_cm3": 2.377, "k_g_cm3_K": -3.11e-4, "T_m_K": 933.47}


@dataclass
class LiquidNPT:
    """NPT result at one temperature: mean density and its standard error (g/cm³, block averages),
    mean pressure (GPa), and the final state (continued by the RDF's NVT run)."""

    temperature_K: float
    density_g_cm3: float
    density_sem_g_cm3: float
    pressure_GPa: float
    crystalline_fraction: float
    state: md.MDState


def _memo_key(settings: ValidationSettings) -> tuple:
    s = settings
    return (
        "liquid", s.element, s.liquid_supercell, s.liquid_premelt_K, s.liquid_premelt_fs, s.liquid_npt_equilibrate_fs,
        s.liquid_npt_average_fs, s.liquid_pressure_GPa, s.md_timestep_fs, s.md_friction_per_fs,
        s.md_barostat_tau_fs, s.md_seed,
    )  # fmt: skip


def liquid_npt(
    side: Evaluator, temperatures: tuple[float, ...], settings: ValidationSettings
) -> dict[float, LiquidNPT]:
    """NPT liquid runs of ``side`` at every temperature (K), computed once per side and shared."""
    s = settings
    key = _memo_key(s)
    done: dict[float, LiquidNPT] = side.memo.setdefault(key, {})
    todo = [float(t) for t in temperatures if float(t) not in done]
    if not todo:
        return {float(t): done[float(t)] for t in temperatures}
    forces, integ = md_forces(side), integrator(s)
    melt = side.memo.get((*key, "premelt"))
    if melt is None:
        a0 = fcc_equilibrium(side, s).a0_A
        atoms = fcc_supercell(s.element, a0 * 1.04, (s.liquid_supercell,) * 3)
        melt = start(atoms, forces, s.liquid_premelt_K, (s.md_seed, 1), pressure_GPa=s.liquid_pressure_GPa)
        melt = run(melt, forces, integ, steps(s.liquid_premelt_fs, s), label="melt")
        side.memo[(*key, "premelt")] = melt
    states = md.concat([
        fork(melt, 0, t, (s.md_seed, 2, int(t * 1000)), pressure_GPa=s.liquid_pressure_GPa, thermalize=True)
        for t in todo
    ])  # fmt: skip
    states = run(states, forces, integ, steps(s.liquid_npt_equilibrate_fs, s), label="liquid NPT")
    n_avg = max(steps(s.liquid_npt_average_fs, s), 1)
    every = max(1, min(10, n_avg))
    dens: list[torch.Tensor] = []
    pres: list[torch.Tensor] = []

    def sample(step, sts):
        dens.append(sts.density_g_cm3())
        pres.append(sts.pressure_GPa())

    states = run(states, forces, integ, n_avg, every=every, callback=sample, label="liquid NPT")
    d_all, p_all = torch.stack(dens).numpy(), torch.stack(pres).numpy()
    for k, t in enumerate(todo):
        done[t] = LiquidNPT(
            temperature_K=t,
            density_g_cm3=float(np.mean(d_all[:, k])),
            density_sem_g_cm3=block_sem(d_all[:, k]),
            pressure_GPa=float(np.mean(p_all[:, k])),
            crystalline_fraction=crystalline_fraction(states.to_atoms(k)),
            state=states.select([k]),
        )
    return {float(t): done[float(t)] for t in temperatures}


def block_sem(x: np.ndarray, n_blocks: int = 5) -> float:
    """Standard error of the mean of a correlated series from ``n_blocks`` block averages."""
    if len(x) < 2 * n_blocks:
        return float(np.std(x) / np.sqrt(max(len(x) - 1, 1)))
    blocks = np.array([b.mean() for b in np.array_split(x, n_blocks)])
    return float(blocks.std(ddof=1) / np.sqrt(n_blocks))


def liquid_rdfs(side: Evaluator, settings: ValidationSettings) -> dict[float, tuple[np.ndarray, np.ndarray, float]]:
    """g(r) of ``side`` at every RDF temperature: (r (nb,) Å, g (nb,), number density Å⁻³)."""
    s = settings
    extra = (s.rdf_temperatures_K, s.liquid_nvt_equilibrate_fs, s.rdf_frames, s.rdf_frame_interval_fs, s.rdf_bin_A)
    key = (*_memo_key(s), "rdf", *extra, s.rdf_r_max_A)
    if key in side.memo:
        return side.memo[key]
    npt = liquid_npt(side, s.rdf_temperatures_K, s)
    parts = []
    for t in s.rdf_temperatures_K:
        base = npt[float(t)].state
        st = fork(base, 0, float(t), (s.md_seed, 3, int(t * 1000)))
        # constant volume at the NPT mean density: scale the cell isotropically
        factor = float((st.density_g_cm3()[0] / npt[float(t)].density_g_cm3) ** (1 / 3))
        parts.append(st.replace(cells=st.cells * factor, positions=st.positions * factor))
    forces, integ = md_forces(side), integrator(s)
    states = run(md.concat(parts), forces, integ, steps(s.liquid_nvt_equilibrate_fs, s), label="liquid NVT")
    acc: list[list[np.ndarray]] = [[] for _ in parts]
    r_axis: list[np.ndarray] = []

    def sample(step, sts):
        for k in range(sts.n_systems):
            r, g = rdf(sts.to_atoms(k), s.rdf_r_max_A, s.rdf_bin_A)
            acc[k].append(g)
            if not r_axis:
                r_axis.append(r)

    every = max(steps(s.rdf_frame_interval_fs, s), 1)
    states = run(states, forces, integ, every * s.rdf_frames, every=every, callback=sample, label="liquid NVT")
    density = (states.counts().double() / states.volumes().double()).tolist()
    out = {float(t): (r_axis[0], np.mean(acc[k], axis=0), density[k]) for k, t in enumerate(s.rdf_temperatures_K)}
    side.memo[key] = out
    return out


def first_peak(r: np.ndarray, g: np.ndarray) -> tuple[float, float]:
    """Position (Å) and height of the first maximum of g(r), refined by a parabola."""
    k = int(np.argmax(g))
    if 0 < k < len(g) - 1:
        y0, y1, y2 = g[k - 1], g[k], g[k + 1]
        denom = y0 - 2 * y1 + y2
        if denom < 0:
            dx = 0.5 * (y0 - y2) / denom
            h = r[1] - r[0]
            return float(r[k] + dx * h), float(y1 - 0.25 * (y0 - y2) * dx)
    return float(r[k]), float(g[k])


def first_shell_coordination(r: np.ndarray, g: np.ndarray, rho: float, bin_A: float) -> tuple[float, float]:
    """Coordination number up to the first minimum after the first peak, and that radius (Å)."""
    k = int(np.argmax(g))
    j = k + int(np.argmin(g[k : k + round(2.0 / bin_A)]))
    n = coordination(r, g, rho, bin_A)
    return float(n[j]), float(r[j])


@register("rdf", "Liquid radial distribution functions", section="III.D", group="dynamic")
def rdf_benchmark(
    model: Evaluator, reference: Evaluator, settings: ValidationSettings, out_dir: Path
) -> BenchmarkResult:
    s = settings
    res = BenchmarkResult("rdf", "Liquid radial distribution functions", "III.D")
    with_ref = md_is_cheap(reference, s.md_reference)
    gm = liquid_rdfs(model, s)
    gr = liquid_rdfs(reference, s) if with_ref else {}
    npt_m = liquid_npt(model, s.rdf_temperatures_K, s)
    table_rows = []
    for t in s.rdf_temperatures_K:
        t = float(t)
        r, g, rho = gm[t]
        pm, hm = first_peak(r, g)
        cm, _ = first_shell_coordination(r, g, rho, s.rdf_bin_A)
        if t in gr:
            rr, ggr, rhor = gr[t]
            pr, hr = first_peak(rr, ggr)
            cr, _ = first_shell_coordination(rr, ggr, rhor, s.rdf_bin_A)
            ref_curve = ggr
        else:
            pr = hr = cr = None
            ref_curve = np.full_like(g, np.nan)
        res.curves.append(Curve(f"g(r) at {t:.0f} K", "r (Å)", "", r, g, ref_curve))
        res.summary += [
            SummaryRow(f"first peak position at {t:.0f} K", pm, pr, "Å", 3),
            SummaryRow(f"first peak height at {t:.0f} K", hm, hr, "", 2),
        ]
        table_rows.append([f"{t:.0f}", pm, pr, hm, hr, cm, cr, npt_m[t].crystalline_fraction])
    res.tables.append(Table(
        "First shell (coordination up to the first minimum of g)",
        ["T (K)", "peak r model (Å)", "peak r ref (Å)", "height model", "height ref", "CN model", "CN ref",
         "crystalline fraction (model, CNA)"],
        table_rows, decimals=3,
    ))  # fmt: skip
    res.figures.append(_plot_rdf(model.label, reference.label, gm, gr, s, out_dir))
    res.notes.append(
        f"{4 * s.liquid_supercell**3} atoms; NPT at {s.liquid_pressure_GPa * 1e4:.0f} bar to the density, then NVT "
        f"{s.liquid_nvt_equilibrate_fs / 1000:g} ps and {s.rdf_frames} frames {s.rdf_frame_interval_fs / 1000:g} ps "
        f"apart, bins {s.rdf_bin_A} Å; time step {s.md_timestep_fs} fs."
    )
    if not with_ref:
        res.notes.append(f"reference MD skipped (md_reference = {s.md_reference}; {reference.label} is not cheap)")
    res.data = {"model": _rdf_data(gm), "reference": _rdf_data(gr)}
    return res


def _rdf_data(g: dict) -> dict:
    return {f"{t:.0f}": {"r_A": r, "g": gg, "number_density_A3": rho} for t, (r, gg, rho) in g.items()}


def _plot_rdf(model_label, ref_label, gm, gr, s, out_dir: Path) -> Path:
    fig, (ax,) = new_figure(1, 6.4, 4.8)
    for k, t in enumerate(sorted(gm)):
        shift = 1.0 * k  # stacked like Fig. 4a
        r, g, _ = gm[t]
        color = COLORS[k % len(COLORS)]
        ax.plot(r, g + shift, "-", color=color, lw=1.6, label=f"{t:.0f} K {model_label}")
        if t in gr:
            rr, ggr, _ = gr[t]
            ax.plot(rr[::2], ggr[::2] + shift, "o", mfc="none", mec=color, ms=3.5, label=f"{t:.0f} K {ref_label}")
    ax.set(xlabel="r (Å)", ylabel="g(r) (offset by 1 per temperature)", xlim=(1.5, s.rdf_r_max_A))
    ax.legend(fontsize=8)
    return save(fig, figure_path(out_dir, "liquid_rdf"))


@register("density", "Liquid density vs temperature", section="III.D", group="dynamic")
def density_benchmark(
    model: Evaluator, reference: Evaluator, settings: ValidationSettings, out_dir: Path
) -> BenchmarkResult:
    s = settings
    res = BenchmarkResult("density", "Liquid density vs temperature", "III.D")
    temps = tuple(sorted({float(t) for t in s.density_temperatures_K}))
    with_ref = md_is_cheap(reference, s.md_reference)
    m = liquid_npt(model, temps, s)
    r = liquid_npt(reference, temps, s) if with_ref else {}
    x = np.array(temps)
    dm = np.array([m[t].density_g_cm3 for t in temps])
    dr = np.array([r[t].density_g_cm3 if t in r else np.nan for t in temps])
    em = np.array([m[t].density_sem_g_cm3 for t in temps])
    res.curves.append(Curve("liquid density", "T (K)", "g/cm³", x, dm, dr))
    slope_m = float(np.polyfit(x, dm, 1)[0]) if len(x) > 1 else np.nan
    slope_r = float(np.polyfit(x, dr, 1)[0]) if len(x) > 1 and with_ref else None
    res.summary.append(SummaryRow("dρ/dT (liquid, 1 atm)", slope_m * 1e4, None if slope_r is None else slope_r * 1e4,
                                  "10⁻⁴ g/cm³/K", 2, "experiment −3.11"))  # fmt: skip
    for t in temps:
        res.summary.append(SummaryRow(f"ρ at {t:.0f} K", m[t].density_g_cm3, r[t].density_g_cm3 if t in r else None,
                                      "g/cm³", 4))  # fmt: skip
    exp = ASSAEL_AL["rho_m_g_cm3"] + ASSAEL_AL["k_g_cm3_K"] * (x - ASSAEL_AL["T_m_K"])
    rows = [[f"{t:.0f}", m[t].density_g_cm3, m[t].density_sem_g_cm3, r[t].density_g_cm3 if t in r else None,
             r[t].density_sem_g_cm3 if t in r else None, e if s.element == "Al" else None,
             m[t].pressure_GPa, m[t].crystalline_fraction] for t, e in zip(temps, exp, strict=True)]  # fmt: skip
    res.tables.append(Table(
        "Liquid density at 1 atm (± standard error from block averages)",
        ["T (K)", "model (g/cm³)", "± model", "reference", "± reference", "experiment (Assael 2006)",
         "mean P model (GPa)", "crystalline fraction (model)"],
        rows, decimals=4,
    ))  # fmt: skip
    fig, (ax,) = new_figure(1)
    ax.errorbar(x, dm, yerr=em, fmt="-", color=COLORS[0], lw=1.8, capsize=2, label=model.label)
    if with_ref:
        er = np.array([r[t].density_sem_g_cm3 for t in temps])
        ax.errorbar(x, dr, yerr=er, fmt="o", mfc="none", mec=COLORS[0], ecolor=COLORS[0], label=reference.label)
    if s.element == "Al":
        ax.plot(x, exp, "k--", lw=1, label="experiment (Assael et al. 2006)")
    ax.set(xlabel="T (K)", ylabel="density (g/cm³)")
    ax.legend()
    res.figures.append(save(fig, figure_path(out_dir, "liquid_density")))
    res.notes.append(
        f"{4 * s.liquid_supercell**3} atoms melted at {s.liquid_premelt_K:.0f} K, NPT at "
        f"{s.liquid_pressure_GPa * 1e4:.0f} bar: {s.liquid_npt_equilibrate_fs / 1000:g} ps equilibration, "
        f"{s.liquid_npt_average_fs / 1000:g} ps averaged. A crystalline fraction above ~0.2 means the liquid froze."
    )
    if not with_ref:
        res.notes.append(f"reference MD skipped (md_reference = {s.md_reference})")
    res.data = {"temperatures_K": x, "model_g_cm3": dm, "reference_g_cm3": dr, "model_sem": em}
    return res
