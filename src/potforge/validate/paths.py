"""Transformation paths of fcc (paper III.C, Fig. 3): the volume-conserving Bain path and the
generalized stacking fault energies (GSFE) along the {111}⟨112⟩ slip and twinning paths.

Bain: face-centred tetragonal primitive cell (1 atom) with conventional edges a = b and c, volume
a²c/4 held at the method's *own* fcc equilibrium volume; c/a = 1 is fcc, c/a = 1/√2 is bcc.
Energies relative to c/a = 1, meV/atom.

GSFE: a tilted periodic cell, no free surfaces. A stack of L (111) layers with a 1×1 in-plane
cell (ASE ``fcc111(periodic=True)``); slipping the crystal above a plane by u is done by shifting
the layers above it by u and adding the total slip to the third cell vector, so each cell holds
one fault per sheared plane and periodic images of the fault are L layers apart. The slip path
shears one plane by x·b_p (b_p = a/√6 along ⟨112⟩, the direction that makes an intrinsic stacking
fault at x = 1; x = 3 is a full lattice translation). The twinning path shears successive
adjacent planes, each by b_p: x ∈ [n, n+1] slips plane n by (x − n)·b_p with planes 0..n−1 fully
slipped (x = 1: intrinsic fault, x = 2: extrinsic fault / two-layer twin, x = 3: three-layer twin).
Atoms relax only perpendicular to the fault (z), at fixed cell. γ = (E(x) − E(0)) / A in mJ/m².
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import fcc111

from potforge.units import ev_per_A2_to_mJ_per_m2
from potforge.validate.core import Evaluation, Evaluator, require
from potforge.validate.crystals import fcc_equilibrium
from potforge.validate.plots import COLORS, figure_path, new_figure, plot_pair, save
from potforge.validate.registry import register
from potforge.validate.results import BenchmarkResult, Curve, SummaryRow, Table
from potforge.validate.settings import ValidationSettings

MEV = 1000.0
BCC_C_OVER_A = 1 / np.sqrt(2)


# --- Bain path ---------------------------------------------------------------------------------
def bain_cell(element: str, volume_per_atom_A3: float, c_over_a: float) -> Atoms:
    """Primitive face-centred tetragonal cell (1 atom) with conventional a = b, c = (c/a)·a and
    volume per atom a²c/4. At c/a = 1 it is exactly ASE's primitive fcc cell."""
    a = (4 * volume_per_atom_A3 / c_over_a) ** (1 / 3)
    c = c_over_a * a
    cell = [(0, a / 2, c / 2), (a / 2, 0, c / 2), (a / 2, a / 2, 0)]
    return Atoms(element, positions=[(0, 0, 0)], cell=cell, pbc=True)


def bain_grid(settings: ValidationSettings) -> np.ndarray:
    """c/a values: the regular grid plus exactly 1/√2 (bcc) and 1 (fcc), sorted."""
    s = settings
    n = round((s.bain_c_over_a_max - s.bain_c_over_a_min) / s.bain_c_over_a_step)
    grid = s.bain_c_over_a_min + s.bain_c_over_a_step * np.arange(n + 1)
    grid = grid[(np.abs(grid - 1) > 1e-9) & (np.abs(grid - BCC_C_OVER_A) > 1e-9)]
    return np.sort(np.concatenate([grid, [BCC_C_OVER_A, 1.0]]))


def bain_path(side: Evaluator, settings: ValidationSettings) -> tuple[np.ndarray, np.ndarray | None]:
    """Energies (n,) meV/atom along :func:`bain_grid` relative to c/a = 1 at the side's fcc V0,
    and their ensemble spread (n,) meV/atom (std over members of each member's difference)."""
    grid = bain_grid(settings)
    v0 = fcc_equilibrium(side, settings).volume_A3
    evs = side.single_points([bain_cell(settings.element, v0, r) for r in grid])
    i_fcc = int(np.argmin(np.abs(grid - 1)))
    e_fcc = require(evs[i_fcc], "Bain path at c/a = 1", side.label).energy_eV
    e = np.array([ev.energy_eV - e_fcc for ev in evs]) * MEV
    return e, _spread(evs, evs[i_fcc], 1.0 * MEV)


def _spread(evs: Sequence[Evaluation], zero: Evaluation, scale: float) -> np.ndarray | None:
    """Ensemble std (ddof = 1) of each member's (E − E_zero)·scale, or None without members."""
    if zero.member_energies_eV is None or any(ev.member_energies_eV is None for ev in evs if ev.ok):
        return None
    return np.array(
        [np.std((ev.member_energies_eV - zero.member_energies_eV) * scale, ddof=1) if ev.ok else np.nan for ev in evs]
    )


@register("bain", "Bain path (Fig. 3a)", section="III.C")
def bain_benchmark(
    model: Evaluator, reference: Evaluator, settings: ValidationSettings, out_dir: Path
) -> BenchmarkResult:
    """Volume-conserving tetragonal path between fcc (c/a = 1) and bcc (c/a = 1/√2), meV/atom."""
    grid = bain_grid(settings)
    e_m, std = bain_path(model, settings)
    e_r, _ = bain_path(reference, settings)
    i_bcc = int(np.argmin(np.abs(grid - BCC_C_OVER_A)))
    curve = Curve("Bain path", "c/a", "meV/atom", grid, e_m, e_r, std)
    rows = [SummaryRow("Bain: E(bcc, c/a = 1/√2) − E(fcc)", e_m[i_bcc], e_r[i_bcc], "meV/atom", 2)]
    fig, (ax,) = new_figure()
    plot_pair(ax, grid, e_m, e_r, color=COLORS[0], label="", model_label=model.label,
              reference_label=reference.label, model_std=std)  # fmt: skip
    for xv, name in ((BCC_C_OVER_A, "bcc"), (1.0, "fcc")):
        ax.axvline(xv, color="0.6", ls=":", lw=1)
        ax.annotate(name, (xv, 0), xytext=(3, 5), textcoords="offset points", color="0.4")
    ax.set_xlabel("c/a")
    ax.set_ylabel("E − E_fcc (meV/atom)")
    ax.set_title("Bain path (volume conserving)")
    ax.legend()
    figures = [save(fig, figure_path(out_dir, "bain"))]
    notes = [
        f"Face-centred tetragonal primitive cell; c/a from {grid[0]:g} to {grid[-1]:g} (step "
        f"{settings.bain_c_over_a_step:g}, plus 1/√2 and 1) at constant a²c equal to each method's own fcc "
        "equilibrium volume; energies relative to c/a = 1. Error bars: ensemble spread of the differences."
    ]
    data = {"c_over_a": grid, model.label: e_m, reference.label: e_r}
    return BenchmarkResult("bain", "Bain path (Fig. 3a)", "III.C", rows, [curve], [], figures, notes, data)


# --- generalized stacking faults ---------------------------------------------------------------
def stacking_cell(element: str, a0_A: float, n_layers: int) -> tuple[Atoms, np.ndarray, np.ndarray]:
    """A perfect (111) stack: (atoms with one atom per layer ordered bottom-up, layer index of each
    atom (n,), partial Burgers vector b_p (3,) Å: the in-plane stacking vector from one layer to
    the next, |b_p| = a/√6; slipping the layers above a plane by +b_p makes an intrinsic fault)."""
    atoms = fcc111(element, (1, 1, n_layers), a=a0_A, periodic=True)
    order = np.argsort(atoms.positions[:, 2], kind="stable")
    atoms = atoms[order]
    cell = atoms.cell.array
    step = atoms.positions[1] - atoms.positions[0]
    step[2] = 0.0
    # minimum image of the in-plane stacking vector
    frac = np.linalg.solve(cell[:2, :2].T, step[:2])
    step[:2] = (frac - np.round(frac)) @ cell[:2, :2]
    return atoms, np.arange(n_layers), step


def fault_cell(element: str, a0_A: float, n_layers: int, slips: Sequence[tuple[int, float]]) -> Atoms:
    """A (111) stack with planes slipped by multiples of b_p. ``slips``: (plane, x) pairs; plane 0
    is the periodic boundary below layer 0, plane p ≥ 1 lies between layers p − 1 and p. Layer i
    moves by Σ_{1≤p≤i} x_p·b_p and the third cell vector by Σ_p x_p·b_p."""
    atoms, layer, b_p = stacking_cell(element, a0_A, n_layers)
    shift = np.zeros(n_layers)
    total = 0.0
    for plane, x in slips:
        if not 0 <= plane < n_layers:
            raise ValueError(f"plane {plane} outside 0..{n_layers - 1}")
        if plane > 0:  # plane 0 is the cell boundary: only the cell vector carries its slip
            shift[layer >= plane] += x
        total += x
    atoms.positions += shift[:, None] * b_p
    cell = atoms.cell.array.copy()
    cell[2] += total * b_p
    atoms.set_cell(cell, scale_atoms=False)
    return atoms


def slip_path_x(settings: ValidationSettings) -> np.ndarray:
    """Slip path abscissae in units of b_p, exact multiples of 1/points_per_partial."""
    k = settings.gsfe_points_per_partial
    return np.arange(round(settings.gsfe_slip_max_partials * k) + 1) / k


def twin_path_x(settings: ValidationSettings) -> np.ndarray:
    k = settings.gsfe_points_per_partial
    return np.arange(settings.gsfe_twin_steps * k + 1) / k


def twin_slips(x: float) -> list[tuple[int, float]]:
    """Slips of the twinning path at x (units of b_p): planes below floor(x) fully slipped."""
    n = int(np.floor(x + 1e-9))
    slips = [(p, 1.0) for p in range(n)]
    if x - n > 1e-9 or n == 0:
        slips.append((n, x - n))
    return slips


def gsfe_energies(
    side: Evaluator, settings: ValidationSettings, slips_list: Sequence[Sequence[tuple[int, float]]]
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """γ (n,) mJ/m² of each fault configuration relative to the perfect stack, the ensemble spread
    (n,) mJ/m² or None, and details. Relaxed along z when ``settings.gsfe_relax``."""
    eq = fcc_equilibrium(side, settings)
    frames = [fault_cell(settings.element, eq.a0_A, settings.gsfe_layers, slips) for slips in slips_list]
    perfect = fault_cell(settings.element, eq.a0_A, settings.gsfe_layers, [])
    cell = perfect.cell.array
    area = float(np.linalg.norm(np.cross(cell[0], cell[1])))
    zero = require(side.single_point(perfect), "perfect (111) stack", side.label)
    if settings.gsfe_relax:
        evs = [
            side.relax(a, fmax_eV_A=settings.relax_fmax_eV_A, max_steps=settings.relax_max_steps, fix_inplane=True)[0]
            for a in frames
        ]
    else:
        evs = side.single_points(frames)
    scale = ev_per_A2_to_mJ_per_m2(1.0 / area)
    gamma = np.array([(ev.energy_eV - zero.energy_eV) * scale for ev in evs])
    unconverged = sum(1 for ev in evs if ev.ok and not ev.converged)
    return gamma, _spread(evs, zero, scale), {"area_A2": area, "unconverged_relaxations": unconverged}


def _peak(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Maximum of y on lo ≤ x ≤ hi, refined by a parabola through the highest point and its neighbours."""
    idx = np.flatnonzero((x >= lo - 1e-9) & (x <= hi + 1e-9) & np.isfinite(y))
    if idx.size == 0:
        return float("nan")
    i = idx[np.argmax(y[idx])]
    if i - 1 in idx and i + 1 in idx:
        y0, y1, y2 = y[i - 1], y[i], y[i + 1]
        denom = y0 - 2 * y1 + y2
        if denom < 0:
            return float(y1 - (y2 - y0) ** 2 / (8 * denom))
    return float(y[i])


def _at(x: np.ndarray, y: np.ndarray, value: float) -> float:
    i = np.flatnonzero(np.abs(x - value) < 1e-9)
    return float(y[i[0]]) if i.size else float("nan")


def gsfe_characteristics(x_slip, g_slip, x_twin, g_twin) -> dict[str, float]:
    """γ_us (max of slip path on [0, 1]), γ_isf (x = 1), γ_utf (max of twinning path on [1, 2]),
    γ_tf = ½ γ(x = 2) (two twin boundaries of the two-layer twin), γ at x = 3 on the twin path."""
    return {
        "gamma_us": _peak(x_slip, g_slip, 0.0, 1.0),
        "gamma_isf": _at(x_slip, g_slip, 1.0),
        "gamma_utf": _peak(x_twin, g_twin, 1.0, 2.0),
        "gamma_tf": 0.5 * _at(x_twin, g_twin, 2.0),
        "gamma_twin3": _at(x_twin, g_twin, 3.0),
    }


@register("gsfe", "Generalized stacking fault energies (Fig. 3b, c)", section="III.C")
def gsfe_benchmark(
    model: Evaluator, reference: Evaluator, settings: ValidationSettings, out_dir: Path
) -> BenchmarkResult:
    """GSFE slip and twinning paths (mJ/m²) with γ_us, γ_isf, γ_utf, γ_tf."""
    xs, xt = slip_path_x(settings), twin_path_x(settings)
    slip_cfg = [[(0, float(x))] for x in xs]
    twin_cfg = [twin_slips(float(x)) for x in xt]
    out = {}
    for side in (model, reference):
        gs, ss, info = gsfe_energies(side, settings, slip_cfg)
        gt, st, info_t = gsfe_energies(side, settings, twin_cfg)
        info["unconverged_relaxations"] += info_t["unconverged_relaxations"]
        out[side.label] = {"slip": gs, "slip_std": ss, "twin": gt, "twin_std": st, "info": info,
                           "chars": gsfe_characteristics(xs, gs, xt, gt)}  # fmt: skip
    m, r = out[model.label], out[reference.label]
    names = {"gamma_us": "γ_us", "gamma_isf": "γ_isf", "gamma_utf": "γ_utf", "gamma_tf": "γ_tf"}
    rows = [SummaryRow(f"{v} (GSFE)", m["chars"][k], r["chars"][k], "mJ/m²", 1) for k, v in names.items()]
    curves = [
        Curve("GSFE slip path", "slip / b_p", "mJ/m²", xs, m["slip"], r["slip"], m["slip_std"]),
        Curve("GSFE twinning path", "cumulative slip / b_p", "mJ/m²", xt, m["twin"], r["twin"], m["twin_std"]),
    ]
    table = Table(
        "Characteristic fault energies (mJ/m²)",
        ["method", "γ_us", "γ_isf", "γ_utf", "γ_tf", "γ(3-layer twin)", "unconverged relaxations"],
        [[k, *(v["chars"][c] for c in (*names, "gamma_twin3")), v["info"]["unconverged_relaxations"]]
         for k, v in out.items()],
        decimals=1,
    )  # fmt: skip
    figures = []
    for key, x, title, fname in (("slip", xs, "(b) GSFE slip path {111}⟨112⟩", "gsfe_slip"),
                                 ("twin", xt, "(c) GSFE twinning path", "gsfe_twin")):  # fmt: skip
        fig, (ax,) = new_figure()
        plot_pair(ax, x, m[key], r[key], color=COLORS[0], label="", model_label=model.label,
                  reference_label=reference.label, model_std=m[f"{key}_std"])  # fmt: skip
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_xlabel("slip / b_p  (b_p = a/√6)" if key == "slip" else "cumulative slip / b_p (one plane per b_p)")
        ax.set_ylabel("γ (mJ/m²)")
        ax.set_title(title)
        ax.legend()
        figures.append(save(fig, figure_path(out_dir, fname)))
    relax = "relaxed along z only (perpendicular to the fault), fixed cell" if settings.gsfe_relax else "unrelaxed"
    notes = [
        f"Tilted periodic cell of {settings.gsfe_layers} (111) layers (1×1 in-plane, no free surfaces) at each "
        f"method's own a0; {settings.gsfe_points_per_partial} points per b_p; {relax}. Slip path: one plane "
        f"slipped 0–{settings.gsfe_slip_max_partials:g} b_p along ⟨112⟩. Twinning path: planes 0, 1, 2, ... slipped "
        "one after another by b_p.",
        "γ_us: maximum on the slip path before the intrinsic fault; γ_isf: slip path at b_p; γ_utf: maximum of "
        "the second step of the twinning path; γ_tf: half the two-layer-twin energy (x = 2), "
        "the convention of Kibey et al. (2007). Maxima refined by a parabola through three points.",
    ]
    data = {"slip_x_bp": xs, "twin_x_bp": xt,
            **{k: {kk: v[kk] for kk in ("slip", "twin", "chars", "info")} for k, v in out.items()}}  # fmt: skip
    return BenchmarkResult(
        "gsfe", "Generalized stacking fault energies (Fig. 3b, c)", "III.C", rows, curves, [table], figures, notes, data
    )
