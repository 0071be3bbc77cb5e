"""Crystal energies vs volume (paper Fig. 2, section III.A) and the fcc equation of state.

Both use primitive cells (1 atom for fcc/bcc/sc, 2 for hcp/diamond; hcp at the ideal c/a), so an
expensive reference (GPAW) stays cheap. Each method's energies are relative to its *own* fcc
minimum; ε_x is the model − reference difference of structure x's minimum energy (so ε_fcc = 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, covalent_radii, reference_states
from ase.eos import EquationOfState

from potforge.structures import crystal
from potforge.units import EV_PER_A3_GPA
from potforge.validate.core import BenchmarkError, Evaluator, require
from potforge.validate.plots import COLORS, figure_path, new_figure, plot_pair, save
from potforge.validate.registry import register
from potforge.validate.results import BenchmarkResult, Curve, SummaryRow, Table
from potforge.validate.settings import ValidationSettings

MEV = 1000.0


def fit_eos(volumes_A3: np.ndarray, energies_eV: np.ndarray, kind: str) -> tuple[float, float, float]:
    """ASE equation-of-state fit of energies (n,) eV vs volumes (n,) Å³: (V0 Å³, E0 eV, B eV/Å³).
    Raises :class:`BenchmarkError` when the fit fails or its minimum lies outside the data."""
    try:
        v0, e0, b = EquationOfState(np.asarray(volumes_A3), np.asarray(energies_eV), eos=kind).fit()
    except Exception as exc:  # ASE raises ValueError/RuntimeError/LinAlgError from scipy
        raise BenchmarkError(f"{kind} EOS fit failed: {exc}") from None
    if not (min(volumes_A3) <= v0 <= max(volumes_A3)) or not np.isfinite(b):
        raise BenchmarkError(f"{kind} EOS fit minimum V0 = {v0:.3f} Å³ lies outside the scanned volumes")
    return float(v0), float(e0), float(b)


def guess_fcc_volume_A3(element: str) -> float:
    """Starting volume per atom of the fcc scan: ASE's reference lattice constant for fcc
    elements, else close packing at twice the covalent radius."""
    z = atomic_numbers[element]
    state = reference_states[z] or {}
    if state.get("symmetry") == "fcc":
        return state["a"] ** 3 / 4
    d = 2 * covalent_radii[z]
    return (d * np.sqrt(2)) ** 3 / 4


@dataclass
class Equilibrium:
    """fcc equilibrium of one method. Per-atom quantities; ``strains`` (n,) are V/V_c − 1 of the
    final scan, centred at V_c (the previous scan's fitted V0); energies (n,) eV/atom,
    members (n, M) eV/atom or None."""

    volume_A3: float
    a0_A: float
    energy_eV: float
    bulk_modulus_GPa: float
    center_A3: float
    strains: np.ndarray
    energies_eV: np.ndarray
    members_eV: np.ndarray | None
    n_scans: int


def fcc_equilibrium(side: Evaluator, settings: ValidationSettings) -> Equilibrium:
    """The fcc minimum of ``side`` from ASE EOS fits, memoized on the evaluator (every benchmark
    that works at the equilibrium lattice constant shares it). Scans V_c·(1 ± window) around a
    guess (walking downhill while the minimum is not bracketed), fits, then scans again centred
    on the fitted V0 and fits that final scan, so both methods' final scans share one relative
    grid."""
    s = settings
    key = ("fcc_equilibrium", s.element, s.eos_kind, s.eos_points, s.eos_volume_window)
    if key in side.memo:
        return side.memo[key]
    strains = np.linspace(-s.eos_volume_window, s.eos_volume_window, s.eos_points)
    center = guess_fcc_volume_A3(s.element)
    previous_fit = None
    n_scans = 0
    while True:
        n_scans += 1
        if n_scans > 6:
            raise BenchmarkError(f"{side.label}: no fcc energy minimum found near {center:.2f} Å³/atom")
        volumes = center * (1 + strains)
        evs = side.single_points([crystal("fcc", float(v), s.element) for v in volumes])
        for v, ev in zip(volumes, evs, strict=True):
            require(ev, f"fcc single point at {v:.3f} Å³/atom", side.label)
        energies = np.array([ev.energy_per_atom_eV for ev in evs])
        i = int(np.argmin(energies))
        if i in (0, len(volumes) - 1):  # minimum not bracketed: walk towards it
            center, previous_fit = float(volumes[i]), None
            continue
        v0, e0, b = fit_eos(volumes, energies, s.eos_kind)
        if previous_fit is not None:  # this scan was centred on the previous fit: done
            break
        center = previous_fit = v0
    members = [ev.member_energies_eV for ev in evs]
    eq = Equilibrium(
        volume_A3=v0,
        a0_A=(4 * v0) ** (1 / 3),
        energy_eV=e0,
        bulk_modulus_GPa=b * EV_PER_A3_GPA,
        center_A3=float(center),
        strains=strains,
        energies_eV=energies,
        members_eV=None if any(m is None for m in members) else np.stack(members),
        n_scans=n_scans,
    )
    side.memo[key] = eq
    return eq


def isolated_atom_energy_eV(side: Evaluator, settings: ValidationSettings) -> float:
    """Energy of one atom in a periodic cubic box (``isolated_atom_box_A``), NaN when it fails."""
    box = settings.isolated_atom_box_A
    atom = Atoms(settings.element, positions=[(box / 2, box / 2, box / 2)], cell=[box] * 3, pbc=True)
    return side.single_point(atom).energy_eV


@register("eos", "Equation of state of fcc", section="III.B")
def eos_benchmark(
    model: Evaluator, reference: Evaluator, settings: ValidationSettings, out_dir: Path
) -> BenchmarkResult:
    """fcc a0, V0, minimum energy, bulk modulus (ASE EOS fit) and cohesive energy."""
    eqs = {side.label: fcc_equilibrium(side, settings) for side in (model, reference)}
    m, r = eqs[model.label], eqs[reference.label]
    e_atom = {side.label: isolated_atom_energy_eV(side, settings) for side in (model, reference)}
    e_coh = {k: e_atom[k] - eqs[k].energy_eV for k in eqs}
    x = 1 + m.strains
    y_m = (m.energies_eV - m.energy_eV) * MEV
    y_r = (r.energies_eV - r.energy_eV) * MEV
    std = None if m.members_eV is None else np.std(m.members_eV - m.members_eV[len(x) // 2], axis=1, ddof=1) * MEV
    curve = Curve("E − E0 vs V/V_c (fcc)", "V / V_c", "meV/atom", x, y_m, y_r, std)
    fig, (ax,) = new_figure()
    plot_pair(
        ax, x, y_m, y_r, color=COLORS[0], label="fcc", model_label=model.label,
        reference_label=reference.label, model_std=std,
    )  # fmt: skip
    ax.set_xlabel("V / V_c  (V_c: centre of each method's final scan ≈ its V0)")
    ax.set_ylabel("E − E0 (meV/atom)")
    ax.set_title(f"fcc equation of state ({settings.eos_kind} fit)")
    ax.legend()
    figures = [save(fig, figure_path(out_dir, "eos"))]
    rows = [
        SummaryRow("a0 (fcc)", m.a0_A, r.a0_A, "Å", 4),
        SummaryRow("V0 (fcc)", m.volume_A3, r.volume_A3, "Å³/atom", 3),
        SummaryRow("B (EOS)", m.bulk_modulus_GPa, r.bulk_modulus_GPa, "GPa", 1),
        SummaryRow(
            "E_coh", e_coh[model.label], e_coh[reference.label], "eV/atom", 3,
            note=f"isolated atom in a {settings.isolated_atom_box_A:g} Å periodic box",
        ),
    ]  # fmt: skip
    table = Table(
        "fcc equilibrium per method",
        ["method", "a0 (Å)", "V0 (Å³/atom)", "E0 (eV/atom)", "B (GPa)", "E_atom (eV)", "E_coh (eV/atom)", "scans"],
        [
            [k, e.a0_A, e.volume_A3, e.energy_eV, e.bulk_modulus_GPa, e_atom[k], e_coh[k], e.n_scans]
            for k, e in eqs.items()
        ],
        decimals=4,
    )
    data = {
        k: {
            "a0_A": e.a0_A, "V0_A3": e.volume_A3, "E0_eV_per_atom": e.energy_eV, "B_GPa": e.bulk_modulus_GPa,
            "E_atom_eV": e_atom[k], "E_coh_eV_per_atom": e_coh[k], "scan_volumes_A3": e.center_A3 * (1 + e.strains),
            "scan_energies_eV_per_atom": e.energies_eV, "n_scans": e.n_scans,
        }
        for k, e in eqs.items()
    }  # fmt: skip
    notes = [
        f"{settings.eos_points} fcc primitive cells over V_c·(1 ± {settings.eos_volume_window:g}), re-centred on "
        f"each method's own fitted V0; ASE EquationOfState '{settings.eos_kind}'.",
        "E0 is the absolute minimum energy; it is comparable between methods only when they share an energy "
        "zero, so the summary compares cohesive energies. A machine-learned model was rarely trained on an "
        "isolated atom, so its E_coh is an extrapolation.",
    ]
    return BenchmarkResult("eos", "Equation of state of fcc", "III.B", rows, [curve], [table], figures, notes, data)


class Minimum(NamedTuple):
    """Minimum of one structure's E(V): volume Å³/atom, energy eV/atom, member energies (M,)
    eV/atom at the fine point nearest the minimum (or None), how it was found, and the fine scan
    (volumes Å³/atom, energies eV/atom; empty when there was none)."""

    volume_A3: float
    energy_eV: float
    members_eV: np.ndarray | None
    method: str
    fine_volumes_A3: np.ndarray
    fine_energies_eV: np.ndarray


def _local_minimum(
    side: Evaluator, structure: str, volumes: np.ndarray, energies: np.ndarray, settings: ValidationSettings
) -> Minimum:
    """The minimum of one structure: a fine scan of ``crystal_refine_points`` over ± one grid step
    around the grid minimum, fitted with the EOS; the grid minimum when it is not bracketed."""
    none = np.array([])
    ok = np.isfinite(energies)
    if ok.sum() < 3:
        return Minimum(float("nan"), float("nan"), None, "too few points", none, none)
    i = int(np.nanargmin(np.where(ok, energies, np.nan)))
    if i in (0, len(volumes) - 1) or not (ok[i - 1] and ok[i + 1]):
        return Minimum(float(volumes[i]), float(energies[i]), None, "grid minimum (not bracketed)", none, none)
    step = settings.crystal_volume_step_A3
    fine = np.linspace(volumes[i] - step, volumes[i] + step, settings.crystal_refine_points)
    frames = [crystal(structure, float(v), settings.element) for v in fine]
    evs = side.single_points(frames)
    e = np.array([ev.energy_per_atom_eV for ev in evs])
    j = int(np.nanargmin(e))
    members = evs[j].member_energies_eV
    members = None if members is None else members / len(frames[0])
    try:
        v0, e0, _ = fit_eos(fine, e, settings.eos_kind)
        return Minimum(v0, e0, members, "EOS fit of the fine scan", fine, e)
    except BenchmarkError:
        return Minimum(float(fine[j]), float(e[j]), members, "fine-scan minimum (fit failed)", fine, e)


@register("crystal", "Crystal energies vs volume (Fig. 2)", section="III.A")
def crystal_benchmark(
    model: Evaluator, reference: Evaluator, settings: ValidationSettings, out_dir: Path
) -> BenchmarkResult:
    """Energy per atom vs volume per atom of fcc, hcp, bcc, sc, diamond relative to each method's
    fcc minimum (meV/atom); ε_x at each structure's minimum."""
    s = settings
    grid = np.arange(s.crystal_volume_min_A3, s.crystal_volume_max_A3 + 0.5 * s.crystal_volume_step_A3,
                     s.crystal_volume_step_A3)  # fmt: skip
    frames = [crystal(x, float(v), s.element) for x in s.crystal_structures for v in grid]
    sides: dict[str, dict] = {}
    failures: list[str] = []
    for side in (model, reference):
        evs = side.single_points(frames)
        failures += [f"{side.label}: {ev.error}" for ev in evs if not ev.ok]
        e = np.array([ev.energy_per_atom_eV for ev in evs]).reshape(len(s.crystal_structures), len(grid))
        members = None
        if all(ev.member_energies_eV is not None for ev in evs):
            members = np.stack([ev.member_energies_eV / ev.n_atoms for ev in evs])
            members = members.reshape(len(s.crystal_structures), len(grid), -1)
        minima = {x: _local_minimum(side, x, grid, e[k], s) for k, x in enumerate(s.crystal_structures)}
        _, e_fcc, m_fcc, how, _, _ = minima["fcc"]
        if not np.isfinite(e_fcc) or how.startswith("grid"):
            raise BenchmarkError(f"{side.label}: fcc minimum not found inside {grid[0]}–{grid[-1]} Å³/atom")
        std = None
        if members is not None and m_fcc is not None:
            std = np.std(members - m_fcc, axis=2, ddof=1) * MEV
        sides[side.label] = {"rel": (e - e_fcc) * MEV, "std": std, "minima": minima, "e_fcc": e_fcc}
    sm, sr = sides[model.label], sides[reference.label]
    curves, rows, table_rows = [], [], []
    region = (grid >= s.training_region_A3[0]) & (grid <= s.training_region_A3[1])
    for k, x in enumerate(s.crystal_structures):
        c = Curve(f"E(V) {x}", "volume (Å³/atom)", "meV/atom", grid, sm["rel"][k], sr["rel"][k],
                  None if sm["std"] is None else sm["std"][k])  # fmt: skip
        curves.append(c)
        vm, em, _, how_m, _, _ = sm["minima"][x]
        vr, er, _, how_r, _, _ = sr["minima"][x]
        de_m, de_r = (em - sm["e_fcc"]) * MEV, (er - sr["e_fcc"]) * MEV
        d = (c.model - c.reference)[region & c.common]
        rmse_region = float(np.sqrt(np.mean(d**2))) if d.size else float("nan")
        table_rows.append([x, vm, vr, de_m, de_r, de_m - de_r, c.rmse, rmse_region, c.mae])
        if x != "fcc":
            note = "" if how_m == how_r == "EOS fit of the fine scan" else f"model: {how_m}; reference: {how_r}"
            rows.append(SummaryRow(f"E_{x} − E_fcc at minimum (ε_{x})", de_m, de_r, "meV/atom", 2, note))
    lo, hi = s.training_region_A3
    table = Table(
        "Minima and errors per structure (energies relative to each method's fcc minimum)",
        ["structure", "V_min model (Å³)", "V_min ref (Å³)", "ΔE model (meV/atom)", "ΔE ref (meV/atom)",
         "ε_x (meV/atom)", "RMSE (meV/atom)", f"RMSE {lo:g}–{hi:g} Å³", "MAE (meV/atom)"],
        table_rows,
    )  # fmt: skip
    figures = [_plot_crystals(model, reference, s, grid, sm, sr, out_dir)]
    notes = [
        f"Primitive cells; volumes {grid[0]:g}–{grid[-1]:g} Å³/atom in steps of {s.crystal_volume_step_A3:g}; "
        f"hcp at ideal c/a. Minima from a {s.crystal_refine_points}-point fine scan over ± one step around the "
        f"grid minimum, fitted with ASE's '{s.eos_kind}' EOS.",
        "Energies are relative to each method's own fcc minimum; ε_x = ΔE_x(model) − ΔE_x(reference) at each "
        "structure's energy-minimizing volume (paper III.A). Error bars: ensemble standard deviation (ddof = 1) "
        "of each member's energy relative to its fcc minimum.",
    ]
    if failures:
        notes.append(f"{len(failures)} failed calculation(s) left out: " + "; ".join(failures[:5]))
    data = {
        "volumes_A3": grid,
        "structures": list(s.crystal_structures),
        **{
            label: {
                "energies_rel_meV_per_atom": {x: v["rel"][k] for k, x in enumerate(s.crystal_structures)},
                "minima": {
                    x: {"V_A3": mn.volume_A3, "E_eV_per_atom": mn.energy_eV, "method": mn.method}
                    for x, mn in v["minima"].items()
                },
            }
            for label, v in sides.items()
        },
    }  # fmt: skip
    return BenchmarkResult(
        "crystal", "Crystal energies vs volume (Fig. 2)", "III.A", rows, curves, [table], figures, notes, data
    )


def _plot_crystals(model, reference, s, grid, sm, sr, out_dir: Path) -> Path:
    fig, (ax_a, ax_b) = new_figure(2, width_in=6.0)
    ax_a.axvspan(*s.training_region_A3, color="#f5d76e", alpha=0.25, lw=0)
    ax_b.axvspan(*s.training_region_A3, color="#f5d76e", alpha=0.25, lw=0)
    for k, x in enumerate(s.crystal_structures):
        color = COLORS[k % len(COLORS)]
        plot_pair(
            ax_a, grid, sm["rel"][k], sr["rel"][k], color=color, label=x, model_label=model.label,
            reference_label=reference.label, scale=1 / MEV, model_std=None if sm["std"] is None else sm["std"][k],
        )  # fmt: skip
        # (b): the grid plus each method's fine scan around its minima, in meV/atom
        for side, style in ((sm, "model"), (sr, "ref")):
            mn = side["minima"][x]
            v = np.concatenate([grid, mn.fine_volumes_A3])
            e = np.concatenate([side["rel"][k], (mn.fine_energies_eV - side["e_fcc"]) * MEV])
            order = np.argsort(v)
            if style == "model":
                ax_b.plot(v[order], e[order], "-", color=color, lw=1.8, label=f"{x} {model.label}")
            else:
                ax_b.plot(v[order], e[order], "o", mfc="none", mec=color, ms=4, label=f"{x} {reference.label}")
    for ax in (ax_a, ax_b):
        ax.set_xlabel("volume (Å³/atom)")
    ax_a.set_ylabel("E − E_fcc,min (eV/atom)")
    ax_a.set_title("(a) crystal energies vs volume (bars: ensemble spread)")
    ax_a.legend(fontsize=7, ncol=2)
    v_fcc = sr["minima"]["fcc"].volume_A3
    ax_b.set_xlim(v_fcc * 0.8, v_fcc * 1.35)
    near = [sm["minima"][x].energy_eV - sm["e_fcc"] for x in s.crystal_structures if x in ("hcp", "bcc")]
    near += [sr["minima"][x].energy_eV - sr["e_fcc"] for x in s.crystal_structures if x in ("hcp", "bcc")]
    top = max([v * MEV for v in near if np.isfinite(v)] + [20.0])
    ax_b.set_ylim(-0.15 * top - 5, 2.0 * top + 40)
    ax_b.set_ylabel("E − E_fcc,min (meV/atom)")
    ax_b.set_title("(b) near the minima (grid and fine scans)")
    return save(fig, figure_path(out_dir, "crystal_energies"))
