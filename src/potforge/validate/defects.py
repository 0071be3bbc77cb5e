"""Point and planar defects of fcc: relaxed vacancy formation energy and (100), (110), (111)
surface energies (paper III.B, SI Table S3). Every method works at its own lattice constant.

Vacancy: n×n×n conventional supercell (4n³ atoms, default 108); one atom removed; positions
relaxed at fixed cell; E_v = E(N−1) − (N−1)/N · E(N).

Surfaces: a slab of L layers with a 1×1 surface cell, periodic in all three directions with
``surface_vacuum_A`` of vacuum between images (plane-wave DFT needs full periodicity), relaxed at
fixed cell; its bulk reference is the same oriented stack without vacuum, so the slab and the
bulk share the in-plane cell and k-point sampling and their errors cancel:
γ = (E_slab − E_bulk) / 2A.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.build import bulk, fcc100, fcc110, fcc111

from potforge.units import ev_per_A2_to_mJ_per_m2
from potforge.validate.core import Evaluator, require
from potforge.validate.crystals import fcc_equilibrium
from potforge.validate.plots import COLORS, figure_path, new_figure, save
from potforge.validate.registry import register
from potforge.validate.results import BenchmarkResult, SummaryRow, Table
from potforge.validate.settings import ValidationSettings

BUILDERS = {"100": fcc100, "110": fcc110, "111": fcc111}


def vacancy_energy(side: Evaluator, settings: ValidationSettings) -> dict[str, float]:
    """Vacancy formation energies (eV) of ``side``: relaxed and unrelaxed, with details."""
    eq = fcc_equilibrium(side, settings)
    n = settings.vacancy_supercell
    perfect = bulk(settings.element, "fcc", a=eq.a0_A, cubic=True).repeat((n, n, n))
    vacant = perfect.copy()
    del vacant[0]
    e_perfect = require(side.single_point(perfect), "perfect supercell", side.label).energy_eV
    e_unrelaxed = require(side.single_point(vacant), "unrelaxed vacancy cell", side.label).energy_eV
    ev, relaxed = side.relax(vacant, fmax_eV_A=settings.relax_fmax_eV_A, max_steps=settings.relax_max_steps)
    require(ev, "vacancy relaxation", side.label)
    n_atoms = len(perfect)
    ref = (n_atoms - 1) / n_atoms * e_perfect
    return {
        "E_v_relaxed_eV": ev.energy_eV - ref,
        "E_v_unrelaxed_eV": e_unrelaxed - ref,
        "n_atoms": n_atoms,
        "relax_converged": ev.converged,
        "relax_steps": ev.steps,
        "max_displacement_A": float(np.linalg.norm(relaxed.positions - vacant.positions, axis=1).max()),
    }


@register("vacancy", "Vacancy formation energy", section="III.B")
def vacancy_benchmark(
    model: Evaluator, reference: Evaluator, settings: ValidationSettings, out_dir: Path
) -> BenchmarkResult:
    """Relaxed (and unrelaxed) vacancy formation energy in eV."""
    res = {side.label: vacancy_energy(side, settings) for side in (model, reference)}
    m, r = res[model.label], res[reference.label]
    rows = [
        SummaryRow("E_v (vacancy, relaxed)", m["E_v_relaxed_eV"], r["E_v_relaxed_eV"], "eV", 3),
        SummaryRow("E_v (vacancy, unrelaxed)", m["E_v_unrelaxed_eV"], r["E_v_unrelaxed_eV"], "eV", 3),
    ]
    table = Table(
        "Vacancy per method",
        ["method", "atoms", "E_v relaxed (eV)", "E_v unrelaxed (eV)", "max displ. (Å)", "L-BFGS steps", "converged"],
        [
            [k, v["n_atoms"], v["E_v_relaxed_eV"], v["E_v_unrelaxed_eV"], v["max_displacement_A"], v["relax_steps"],
             "yes" if v["relax_converged"] else "NO"]
            for k, v in res.items()
        ],
        decimals=3,
    )  # fmt: skip
    n = settings.vacancy_supercell
    notes = [
        f"{n}×{n}×{n} conventional supercell ({4 * n**3} atoms) at each method's own a0; positions relaxed with "
        f"L-BFGS to {settings.relax_fmax_eV_A:g} eV/Å at fixed cell; E_v = E(N−1) − (N−1)/N·E(N)."
    ]
    notes += [f"{k}: vacancy relaxation did not converge" for k, v in res.items() if not v["relax_converged"]]
    return BenchmarkResult("vacancy", "Vacancy formation energy", "III.B", rows, [], [table], [], notes, res)


def surface_energy(side: Evaluator, settings: ValidationSettings, facet: str) -> dict[str, float]:
    """Relaxed and unrelaxed surface energy (mJ/m²) of one facet ('100', '110', '111')."""
    eq = fcc_equilibrium(side, settings)
    layers = settings.surface_layers[facet]
    stack = BUILDERS[facet](settings.element, (1, 1, layers), a=eq.a0_A, periodic=True)
    slab = stack.copy()
    cell = slab.cell.array.copy()
    cell[2] = cell[2] / np.linalg.norm(cell[2]) * (np.linalg.norm(cell[2]) + settings.surface_vacuum_A)
    slab.set_cell(cell, scale_atoms=False)
    slab.center(axis=2)
    area = float(np.linalg.norm(np.cross(cell[0], cell[1])))
    e_bulk = require(side.single_point(stack), f"({facet}) bulk stack", side.label).energy_eV
    e_unrelaxed = require(side.single_point(slab), f"({facet}) slab", side.label).energy_eV
    ev, _ = side.relax(slab, fmax_eV_A=settings.relax_fmax_eV_A, max_steps=settings.relax_max_steps)
    require(ev, f"({facet}) slab relaxation", side.label)
    return {
        "gamma_relaxed_mJ_m2": ev2mj(ev.energy_eV - e_bulk, area),
        "gamma_unrelaxed_mJ_m2": ev2mj(e_unrelaxed - e_bulk, area),
        "layers": layers,
        "area_A2": area,
        "relax_converged": ev.converged,
    }


def ev2mj(energy_eV: float, area_A2: float) -> float:
    """Energy (eV) of two surfaces of area ``area_A2`` (Å²) as a surface energy in mJ/m²."""
    return ev_per_A2_to_mJ_per_m2(energy_eV / (2 * area_A2))


@register("surfaces", "Surface energies (100), (110), (111)", section="III.B")
def surfaces_benchmark(
    model: Evaluator, reference: Evaluator, settings: ValidationSettings, out_dir: Path
) -> BenchmarkResult:
    """Relaxed surface energies of the low-index facets in mJ/m²."""
    facets = [f for f in ("100", "110", "111") if f in settings.surface_layers]
    res = {side.label: {f: surface_energy(side, settings, f) for f in facets} for side in (model, reference)}
    m, r = res[model.label], res[reference.label]
    rows = [
        SummaryRow(f"γ({f}) surface, relaxed", m[f]["gamma_relaxed_mJ_m2"], r[f]["gamma_relaxed_mJ_m2"], "mJ/m²", 1)
        for f in facets
    ]
    table = Table(
        "Surface energies per method (mJ/m²)",
        ["method", "facet", "layers", "γ relaxed", "γ unrelaxed", "converged"],
        [
            [k, f"({f})", v[f]["layers"], v[f]["gamma_relaxed_mJ_m2"], v[f]["gamma_unrelaxed_mJ_m2"],
             "yes" if v[f]["relax_converged"] else "NO"]
            for k, v in res.items() for f in facets
        ],
        decimals=1,
    )  # fmt: skip
    fig, (ax,) = new_figure(width_in=5.5, height_in=3.8)
    x = np.arange(len(facets))
    for k, (label, v) in enumerate(res.items()):
        ax.bar(x + (k - 0.5) * 0.38, [v[f]["gamma_relaxed_mJ_m2"] for f in facets], 0.38, label=label,
               color=COLORS[0] if k == 0 else "white", edgecolor=COLORS[0], hatch="" if k == 0 else "//")  # fmt: skip
    ax.set_xticks(x, [f"({f})" for f in facets])
    ax.set_ylabel("surface energy γ (mJ/m²)")
    ax.set_title("Relaxed fcc surface energies")
    ax.legend()
    figures = [save(fig, figure_path(out_dir, "surfaces"))]
    notes = [
        "1×1 surface cell, layers "
        + ", ".join(f"({f}): {settings.surface_layers[f]}" for f in facets)
        + f", {settings.surface_vacuum_A:g} Å vacuum, periodic in 3D, each method at its own a0; positions relaxed "
        f"(L-BFGS, {settings.relax_fmax_eV_A:g} eV/Å) at fixed cell. γ = (E_slab − E_bulk)/2A with E_bulk the same "
        "oriented stack without vacuum."
    ]
    return BenchmarkResult(
        "surfaces", "Surface energies (100), (110), (111)", "III.B", rows, [], [table], figures, notes, res
    )
