"""Analysis tools of the dynamic benchmarks: RDF of a perfect crystal, CNA, the coexistence
bracket logic, and benchmark selection (the dynamic group runs only on request)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from potforge.analysis import coordination, crystalline_fraction, rdf, structure_fractions
from potforge.validate.liquid import first_peak, first_shell_coordination
from potforge.validate.melting import Trial, estimate
from potforge.validate.registry import select

A = 4.04  # shells away from bin edges (4.05 Å sits exactly on one)
#: fcc shells: (distance / a, atoms in the shell)
FCC_SHELLS = [(1 / np.sqrt(2), 12), (1.0, 6), (np.sqrt(1.5), 24), (np.sqrt(2), 12), (np.sqrt(2.5), 24)]


def test_rdf_of_perfect_fcc_has_peaks_at_shells_and_right_coordination():
    atoms = bulk("Al", "fcc", a=A, cubic=True).repeat(3)
    bin_A = 0.05
    r, g = rdf(atoms, r_max_A=6.5, bin_A=bin_A)
    rho = len(atoms) / atoms.get_volume()
    n = coordination(r, g, rho, bin_A)
    occupied = r[g > 0]
    cumulative = 0
    for frac, count in FCC_SHELLS:
        d = frac * A
        # every shell falls in the bin that contains its distance, and nothing lies between shells
        k = int(np.floor(d / bin_A))
        assert g[k] > 0, f"no peak at {d:.3f} Å"
        assert np.min(np.abs(occupied - d)) <= bin_A / 2 + 1e-9
        cumulative += count
        # running coordination just past the shell = total atoms out to it
        assert n[k] == pytest.approx(cumulative, abs=1e-9)
    assert len(occupied) == len(FCC_SHELLS)
    pos, _ = first_peak(r, g)
    assert pos == pytest.approx(A / np.sqrt(2), abs=bin_A)
    cn, r_min = first_shell_coordination(r, g, rho, bin_A)
    assert cn == pytest.approx(12) and A / np.sqrt(2) < r_min < A


def test_rdf_of_ideal_gas_tends_to_one():
    rng = np.random.default_rng(0)
    from ase import Atoms

    box = 12.0
    atoms = Atoms("Al600", positions=rng.uniform(0, box, (600, 3)), cell=[box] * 3, pbc=True)
    _r, g = rdf(atoms, r_max_A=5.0, bin_A=0.5)  # more than half the box: periodic images count too
    assert np.mean(g[4:]) == pytest.approx(1.0, abs=0.04)


def test_cna_tells_crystal_from_disorder():
    crystal = bulk("Al", "fcc", a=A, cubic=True).repeat(3)
    assert structure_fractions(crystal)["fcc"] == 1.0
    hcp = bulk("Al", "hcp", a=A / np.sqrt(2)).repeat((4, 4, 3))
    assert structure_fractions(hcp)["hcp"] == 1.0
    rng = np.random.default_rng(1)
    from ase import Atoms

    gas = Atoms("Al108", positions=rng.uniform(0, 12.0, (108, 3)), cell=[12.0] * 3, pbc=True)
    assert crystalline_fraction(gas) < 0.05


def _trial(t: float, slope: float) -> Trial:
    return Trial(t, np.array([0.0, 1.0]), np.array([0.5, 0.5 + slope]), slope)


def test_bracket_and_interpolated_melting_point():
    trials = [_trial(800, 0.04), _trial(900, 0.01), _trial(1000, -0.03), _trial(1100, -0.08)]
    tm, unc, bracket = estimate(trials)
    assert bracket == (900, 1000) and unc == 50
    assert tm == pytest.approx(900 + 100 * 0.01 / 0.04)
    assert estimate([_trial(800, -0.1), _trial(900, -0.2)]) is None  # everything melts: no bracket
    assert estimate([_trial(800, 0.1), _trial(900, 0.2)]) is None


def test_dynamic_group_runs_only_on_request():
    default = {b.name for b in select(None)}
    dynamic = {"rdf", "density", "melting", "heatcool"}
    assert default.isdisjoint(dynamic) and "eos" in default
    assert {b.name for b in select("dynamic")} == dynamic
    assert {b.name for b in select("all")} == default | dynamic
    assert [b.name for b in select("heatcool,eos")] == ["eos", "heatcool"]
