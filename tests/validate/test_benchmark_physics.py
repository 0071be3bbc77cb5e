"""Physics of each benchmark's protocol, checked on EMT aluminium against independent
calculations (ASE's own EOS fit, the bcc/fcc cells of the crystal builders, lattice
translations), not against the harness itself."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.eos import EquationOfState
from ase.neighborlist import neighbor_list

from potforge.structures import crystal
from potforge.units import EV_PER_A3_GPA
from potforge.validate import reference_evaluator
from potforge.validate.crystals import fcc_equilibrium
from potforge.validate.elastic import elastic_constants
from potforge.validate.paths import (
    BCC_C_OVER_A,
    bain_cell,
    fault_cell,
    gsfe_energies,
    stacking_cell,
    twin_slips,
)


@pytest.fixture()
def emt():
    return reference_evaluator("emt")


def test_eos_matches_ase_own_fit_of_emt_aluminium(emt, quick_settings):
    """The EOS benchmark's a0 and B agree with a plain ASE EquationOfState fit (ASE tutorial style:
    conventional cell, lattice constants around the minimum)."""
    eq = fcc_equilibrium(emt, quick_settings)
    a = np.linspace(0.98, 1.02, 9) * eq.a0_A
    volumes, energies = [], []
    for ai in a:
        atoms = bulk("Al", "fcc", a=ai, cubic=True)
        atoms.calc = EMT()
        volumes.append(atoms.get_volume() / 4)
        energies.append(atoms.get_potential_energy() / 4)
    v0, e0, b = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    assert eq.volume_A3 == pytest.approx(v0, rel=1e-4)
    assert eq.energy_eV == pytest.approx(e0, abs=1e-5)
    assert eq.bulk_modulus_GPa == pytest.approx(b * EV_PER_A3_GPA, rel=0.01)
    assert 3.9 < eq.a0_A < 4.1  # EMT aluminium, near the experimental 4.05 Å


def test_elastic_constants_are_consistent_by_stress_energy_and_eos(emt, quick_settings):
    res, members = elastic_constants(emt, quick_settings)
    assert members is None  # EMT is not an ensemble
    b_eos = fcc_equilibrium(emt, quick_settings).bulk_modulus_GPa
    for delta, r in res.items():
        # finite-strain terms are O(δ²): tight at 0.5 %, looser at 1 %
        tol = 2e-3 if delta <= 0.005 else 1e-2
        for c in ("C11", "C12", "C44"):
            assert r[f"{c}_stress"] == pytest.approx(r[f"{c}_energy"], rel=5 * tol), c
        # (C11 + 2 C12)/3 from uniaxial stresses = volumetric stress response = EOS curvature
        assert r["B_stress"] == pytest.approx(r["B_volumetric_stress"], rel=tol)
        assert r["B_stress"] == pytest.approx(b_eos, rel=0.02)
        assert r["C11_stress"] > r["C12_stress"] > 0 and r["C44_stress"] > 0  # Born stability of fcc


def test_bain_path_passes_through_fcc_and_bcc(emt, quick_settings):
    v0 = fcc_equilibrium(emt, quick_settings).volume_A3
    fcc = bain_cell("Al", v0, 1.0)
    np.testing.assert_array_equal(fcc.cell.array, crystal("fcc", v0).cell.array)
    bcc_path = emt.single_point(bain_cell("Al", v0, BCC_C_OVER_A)).energy_eV
    bcc_cubic = emt.single_point(crystal("bcc", v0)).energy_eV
    assert bcc_path == pytest.approx(bcc_cubic, abs=1e-9)
    for r in (0.65, 0.9, 1.2):
        assert bain_cell("Al", v0, r).get_volume() == pytest.approx(v0)


def test_gsfe_is_zero_for_lattice_translations(emt, quick_settings):
    """A perfect crystal at zero shift and at a full lattice translation in the (111) plane, along
    ⟨112⟩ (3 b_p) and along the full Burgers vector a/2⟨110⟩, has zero fault energy."""
    gamma, _, _ = gsfe_energies(emt, quick_settings, [[(0, 0.0)], [(0, 3.0)]])
    np.testing.assert_allclose(gamma, 0.0, atol=1e-6)
    a0 = fcc_equilibrium(emt, quick_settings).a0_A
    atoms, _, b_p = stacking_cell("Al", a0, quick_settings.gsfe_layers)
    assert np.linalg.norm(b_p) == pytest.approx(a0 / np.sqrt(6))
    e0 = emt.single_point(atoms).energy_eV
    shifted = atoms.copy()
    cell = shifted.cell.array.copy()
    burgers = cell[0]  # a/√2 along ⟨110⟩: the full dislocation's Burgers vector
    assert np.linalg.norm(burgers) == pytest.approx(a0 / np.sqrt(2))
    cell[2] += burgers
    shifted.set_cell(cell, scale_atoms=False)
    assert emt.single_point(shifted).energy_eV == pytest.approx(e0, abs=1e-9)


def test_partial_slip_makes_an_intrinsic_fault(emt, quick_settings):
    """Slip by +b_p gives the intrinsic stacking fault (each atom keeps 12 nearest neighbours);
    slip by 2 b_p puts a layer right on top of its neighbour (atoms at the (111) spacing)."""
    a0 = fcc_equilibrium(emt, quick_settings).a0_A
    n = quick_settings.gsfe_layers

    def nearest(atoms):
        return neighbor_list("d", atoms, 3.5).min()

    isf = fault_cell("Al", a0, n, [(0, 1.0)])
    onto = fault_cell("Al", a0, n, [(0, 2.0)])
    assert nearest(isf) == pytest.approx(a0 / np.sqrt(2), rel=1e-6)
    assert nearest(onto) == pytest.approx(a0 / np.sqrt(3), rel=1e-6)
    gamma, _, _ = gsfe_energies(emt, quick_settings, [[(0, 0.5)], [(0, 1.0)], [(0, 2.0)]])
    assert gamma[2] > gamma[0] > gamma[1]  # A-on-A stacking > unstable fault > intrinsic fault


def test_twin_path_steps_are_successive_planes():
    assert twin_slips(0.0) == [(0, 0.0)]
    assert twin_slips(0.5) == [(0, 0.5)]
    assert twin_slips(1.0) == [(0, 1.0)]
    assert twin_slips(2.25) == [(0, 1.0), (1, 1.0), (2, 0.25)]


def test_vacancy_and_surfaces_of_emt_aluminium(emt_report):
    """Relaxation lowers the energies; the (111) surface is the most stable fcc facet."""
    ref = emt_report.reference["label"]
    vac = emt_report.result("vacancy").data[ref]
    assert 0 < vac["E_v_relaxed_eV"] < vac["E_v_unrelaxed_eV"] < 1.5
    assert vac["relax_converged"]
    surf = emt_report.result("surfaces").data[ref]
    for facet in ("100", "110", "111"):
        assert 0 < surf[facet]["gamma_relaxed_mJ_m2"] <= surf[facet]["gamma_unrelaxed_mJ_m2"] + 1e-6
    assert surf["111"]["gamma_relaxed_mJ_m2"] < surf["100"]["gamma_relaxed_mJ_m2"] < surf["110"]["gamma_relaxed_mJ_m2"]


def test_crystal_energies_are_relative_to_fcc_minimum(emt_report):
    res = emt_report.result("crystal")
    ref = emt_report.reference["label"]
    minima = res.data[ref]["minima"]
    assert minima["fcc"]["method"] == "EOS fit of the fine scan"
    rel = res.data[ref]["energies_rel_meV_per_atom"]
    assert min(np.nanmin(v) for v in rel.values()) > -5.0  # nothing far below the fcc minimum in EMT
    assert minima["diamond"]["V_A3"] > minima["sc"]["V_A3"] > minima["fcc"]["V_A3"]  # open structures expand


def test_vacancy_energy_matches_a_plain_ase_calculation(emt_report, quick_settings):
    """The unrelaxed vacancy formation energy, E(N−1) − (N−1)/N E(N), computed here with ASE and
    EMT alone at the benchmark's lattice constant, equals the benchmark's."""
    ref = emt_report.reference["label"]
    vac = emt_report.result("vacancy").data[ref]
    a0 = emt_report.result("eos").data[ref]["a0_A"]
    n = quick_settings.vacancy_supercell
    perfect = bulk("Al", "fcc", a=a0, cubic=True).repeat(n)
    perfect.calc = EMT()
    e_n = perfect.get_potential_energy()
    defect = perfect.copy()
    del defect[0]
    defect.calc = EMT()
    e_v = defect.get_potential_energy() - (len(defect) / len(perfect)) * e_n
    assert vac["E_v_unrelaxed_eV"] == pytest.approx(e_v, abs=1e-6)
    assert 0.5 < e_v < 1.2  # EMT's aluminium vacancy, near the experimental 0.67 eV


def test_bcc_above_fcc_matches_plain_ase_eos_fits(emt_report):
    """ε_bcc of the crystal benchmark equals the difference of two ASE EquationOfState minima,
    fcc and bcc, each fitted here on its own lattice-constant scan with EMT."""

    def minimum(structure: str, a_guess: float) -> float:
        volumes, energies = [], []
        for a in np.linspace(0.97, 1.03, 11) * a_guess:
            atoms = bulk("Al", structure, a=a, cubic=True)
            atoms.calc = EMT()
            volumes.append(atoms.get_volume() / len(atoms))
            energies.append(atoms.get_potential_energy() / len(atoms))
        return EquationOfState(volumes, energies, eos="birchmurnaghan").fit()[1]

    eps_bcc = (minimum("bcc", 3.2) - minimum("fcc", 4.0)) * 1e3
    ref = emt_report.reference["label"]
    row = next(r for r in emt_report.result("crystal").summary if r.property.startswith("E_bcc"))
    assert row.reference == pytest.approx(eps_bcc, abs=0.2)  # meV/atom, EOS fits of different scans
    assert eps_bcc > 0 and ref
