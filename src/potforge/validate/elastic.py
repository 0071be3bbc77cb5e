"""Zero-kelvin cubic elastic constants C11, C12, C44 of fcc (paper III.B) by stress and by energy,
at several strain amplitudes.

Each method is strained about its *own* equilibrium lattice constant (primitive 1-atom cell: fcc
has no internal coordinates, so nothing relaxes). Strain ε is applied as cell → cell·(1 + ε):

* uniaxial  ε_xx = δ            σ_xx = C11 δ, σ_yy = σ_zz = C12 δ;   E/V0 = ½ C11 δ²
* volumetric ε = δ·1            E/V0 = (3/2)(C11 + 2 C12) δ²
* shear     ε_yz = ε_zy = δ/2   σ_yz = C44 δ;                      E/V0 = ½ C44 δ²

By stress: central difference (σ(+δ) − σ(−δ)) / 2δ, the linear fit through ±δ. By energy:
(E(+δ) + E(−δ) − 2 E(0)) / (V0 δ²), the quadratic through −δ, 0, +δ. Both cancel the leading
anharmonic term; what is left, and any kink of the model's cutoff functions (ANI-Al's third and
sixth fcc shells, 4.95 Å and 7.0 Å, sit at its 5.0/7.0 Å cutoffs), shows up as dependence on δ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms

from potforge.structures import crystal
from potforge.units import EV_PER_A3_GPA
from potforge.validate.core import Evaluator, require
from potforge.validate.crystals import fcc_equilibrium
from potforge.validate.plots import COLORS, figure_path, new_figure, save
from potforge.validate.registry import register
from potforge.validate.results import BenchmarkResult, Curve, SummaryRow, Table
from potforge.validate.settings import ValidationSettings

MODES = ("uniaxial", "volumetric", "shear")


def strain_tensor(mode: str, delta: float) -> np.ndarray:
    """Symmetric strain (3, 3) of a deformation mode with amplitude ``delta`` (engineering shear)."""
    eps = np.zeros((3, 3))
    if mode == "uniaxial":
        eps[0, 0] = delta
    elif mode == "volumetric":
        eps[:] = np.eye(3) * delta
    elif mode == "shear":
        eps[1, 2] = eps[2, 1] = delta / 2
    else:
        raise ValueError(f"unknown strain mode {mode!r}")
    return eps


def strained(atoms: Atoms, eps: np.ndarray) -> Atoms:
    """A copy of ``atoms`` with cell and positions deformed by (1 + eps) (row vectors)."""
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ (np.eye(3) + eps).T, scale_atoms=True)
    return out


def elastic_constants(
    side: Evaluator, settings: ValidationSettings
) -> tuple[dict[float, dict[str, float]], dict[float, dict[str, np.ndarray]] | None]:
    """Elastic constants (GPa) per strain amplitude: {δ: {'C11_stress', 'C12_stress', 'C44_stress',
    'B_stress', 'C11_energy', 'C12_energy', 'C44_energy', 'B_energy'}}, and the energy-method
    constants of every ensemble member {δ: {name: (M,)}} when the side has members."""
    eq = fcc_equilibrium(side, settings)
    base = crystal("fcc", eq.volume_A3, settings.element)
    v0 = base.get_volume()
    frames = [base] + [
        strained(base, strain_tensor(mode, sign * d))
        for d in settings.elastic_strains
        for mode in MODES
        for sign in (1, -1)
    ]
    evs = side.single_points(frames)
    for a, ev in zip(frames, evs, strict=True):
        require(ev, f"strained fcc cell {np.round(a.cell.array, 4).tolist()}", side.label)
    e0, m0 = evs[0].energy_eV, evs[0].member_energies_eV
    out: dict[float, dict[str, float]] = {}
    members: dict[float, dict[str, np.ndarray]] | None = {} if m0 is not None else None
    k = 1
    for d in settings.elastic_strains:
        res: dict[str, dict[str, tuple]] = {}
        for mode in MODES:
            plus, minus = evs[k], evs[k + 1]
            k += 2
            res[mode] = {"s": (plus.stress_eV_A3, minus.stress_eV_A3), "e": (plus.energy_eV, minus.energy_eV)}
            if members is not None:
                res[mode]["m"] = (plus.member_energies_eV, minus.member_energies_eV)

        c11_s = _dsig(res["uniaxial"]["s"], 0, d)
        c12_s = 0.5 * (_dsig(res["uniaxial"]["s"], 1, d) + _dsig(res["uniaxial"]["s"], 2, d))
        c44_s = _dsig(res["shear"]["s"], 3, d)
        c11_e = _curv(res["uniaxial"]["e"], e0, v0, d)
        sum_e = _curv(res["volumetric"]["e"], e0, v0, d) / 3  # C11 + 2 C12
        c44_e = _curv(res["shear"]["e"], e0, v0, d)
        out[d] = {
            "C11_stress": c11_s, "C12_stress": c12_s, "C44_stress": c44_s, "B_stress": (c11_s + 2 * c12_s) / 3,
            "B_volumetric_stress": _dsig(res["volumetric"]["s"], 0, d) / 3,
            "C11_energy": c11_e, "C12_energy": (sum_e - c11_e) / 2, "C44_energy": c44_e, "B_energy": sum_e / 3,
        }  # fmt: skip
        if members is not None:
            c11_m = _curv(res["uniaxial"]["m"], m0, v0, d)
            sum_m = _curv(res["volumetric"]["m"], m0, v0, d) / 3
            members[d] = {"C11": c11_m, "C12": (sum_m - c11_m) / 2, "C44": _curv(res["shear"]["m"], m0, v0, d)}
    return out, members


def _dsig(pair: tuple[np.ndarray, np.ndarray], component: int, delta: float) -> float:
    """dσ/dδ (GPa) of one Voigt component by central difference of the (+δ, −δ) stresses (eV/Å³)."""
    plus, minus = pair
    return (plus[component] - minus[component]) / (2 * delta) * EV_PER_A3_GPA


def _curv(pair: tuple, e_zero, v0_A3: float, delta: float):
    """d²E/dδ² / V0 (GPa) from energies (eV; floats or member arrays) at +δ, −δ and 0."""
    plus, minus = pair
    return (plus + minus - 2 * e_zero) / (v0_A3 * delta * delta) * EV_PER_A3_GPA


@register("elastic", "Elastic constants C11, C12, C44", section="III.B")
def elastic_benchmark(
    model: Evaluator, reference: Evaluator, settings: ValidationSettings, out_dir: Path
) -> BenchmarkResult:
    """C11, C12, C44 by stress and by energy at each strain amplitude; B = (C11 + 2 C12)/3 beside
    the EOS bulk modulus. Summary values: stress method at ``elastic_headline_strain``."""
    strains = list(settings.elastic_strains)
    res_m, mem_m = elastic_constants(model, settings)
    res_r, _ = elastic_constants(reference, settings)
    h = min(strains, key=lambda d: abs(d - settings.elastic_headline_strain))
    pct = f"{100 * h:g} %"
    rows = [
        SummaryRow(f"{c} (stress, {pct})", res_m[h][f"{c}_stress"], res_r[h][f"{c}_stress"], "GPa", 1)
        for c in ("C11", "C12", "C44")
    ]
    rows.append(SummaryRow("B = (C11 + 2 C12)/3", res_m[h]["B_stress"], res_r[h]["B_stress"], "GPa", 1))
    x = 100 * np.array(strains)
    curves = []
    for c in ("C11", "C12", "C44"):
        std = None if mem_m is None else np.array([np.std(mem_m[d][c], ddof=1) for d in strains])
        for method in ("stress", "energy"):
            curves.append(
                Curve(
                    f"{c} vs strain ({method})", "strain amplitude (%)", "GPa",
                    x, [res_m[d][f"{c}_{method}"] for d in strains], [res_r[d][f"{c}_{method}"] for d in strains],
                    std if method == "energy" else None,
                )
            )  # fmt: skip
    b_eos = {side.label: fcc_equilibrium(side, settings).bulk_modulus_GPa for side in (model, reference)}
    table_rows = []
    for label, res in ((model.label, res_m), (reference.label, res_r)):
        for d in strains:
            r = res[d]
            table_rows.append(
                [label, 100 * d, r["C11_stress"], r["C12_stress"], r["C44_stress"], r["C11_energy"], r["C12_energy"],
                 r["C44_energy"], r["B_stress"], r["B_energy"], b_eos[label]]
            )  # fmt: skip
    table = Table(
        "Elastic constants (GPa) vs strain amplitude: by stress (σ) and by energy (E)",
        ["method", "strain (%)", "C11 σ", "C12 σ", "C44 σ", "C11 E", "C12 E", "C44 E", "B σ", "B E", "B EOS"],
        table_rows,
        decimals=2,
    )
    figures = [_plot(model, reference, strains, res_m, res_r, mem_m, out_dir)]
    notes = [
        "Primitive fcc cell (1 atom) at each method's own EOS lattice constant; strains ±δ for δ in "
        + ", ".join(f"{100 * d:g} %" for d in strains)
        + "; uniaxial, volumetric and yz-shear deformations. By stress: (σ(+δ) − σ(−δ))/2δ; by energy: "
        "(E(+δ) + E(−δ) − 2E(0))/(V0 δ²); C12 by energy from the volumetric (C11 + 2 C12) and uniaxial curvatures.",
        f"Summary values use the stress method at δ = {pct}. B EOS is the equation-of-state fit over "
        f"±{100 * settings.eos_volume_window:g} % volume; it differs from (C11 + 2 C12)/3 by the anharmonicity "
        "over that window.",
    ]
    if mem_m is not None:
        notes.append("Error bars on the model's energy-method constants: ensemble standard deviation (ddof = 1).")
    data = {
        "strains": strains,
        "headline_strain": h,
        model.label: {str(d): res_m[d] for d in strains},
        reference.label: {str(d): res_r[d] for d in strains},
        "B_EOS_GPa": b_eos,
    }
    return BenchmarkResult(
        "elastic", "Elastic constants C11, C12, C44", "III.B", rows, curves, [table], figures, notes, data
    )


def _plot(model, reference, strains, res_m, res_r, mem_m, out_dir: Path) -> Path:
    fig, axes = new_figure(3, width_in=4.3, height_in=3.8)
    x = 100 * np.array(strains)
    for ax, c in zip(axes, ("C11", "C12", "C44"), strict=True):
        for method, color, style, marker in (("stress", COLORS[0], "-", "o"), ("energy", COLORS[1], "--", "s")):
            ym = [res_m[d][f"{c}_{method}"] for d in strains]
            yr = [res_r[d][f"{c}_{method}"] for d in strains]
            ax.plot(x, ym, style, color=color, marker=".", label=f"{model.label} ({method})")
            if method == "energy" and mem_m is not None:
                std = [np.std(mem_m[d][c], ddof=1) for d in strains]
                ax.errorbar(x, ym, yerr=std, fmt="none", ecolor=color, capsize=2)
            ax.plot(x, yr, marker, mfc="none", mec=color, ls="none", label=f"{reference.label} ({method})")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.set_xlabel("strain amplitude δ (%)")
        ax.set_ylabel(f"{c} (GPa)")
        ax.set_title(c)
    axes[0].legend(fontsize=7)
    return save(fig, figure_path(out_dir, "elastic"))
