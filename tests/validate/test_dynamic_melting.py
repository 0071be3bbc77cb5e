"""Solid–liquid coexistence on a cheap oracle (EMT, whose fcc melting point is ≈ 550 K with
this protocol, docs/validate.md): far above T_m the interface moves into the solid, far below into the liquid."""

from __future__ import annotations

import pytest
from ase.calculators.emt import EMT

from potforge import md
from potforge.validate.melting import coexistence_runs, prepare_slab
from potforge.validate.trajectories import solid_fraction

EMT_FORCES = md.CalculatorForces(lambda atoms, directory: EMT())


def _coexistence(supercell, temps, prepare_fs, run_fs, seed=0, crystal_T_K=450.0):
    integ = md.Langevin(2.0, 0.01, 500.0)
    slab = prepare_slab(EMT_FORCES, 4.0, "Al", supercell, 0.0001, crystal_T_K, 2400.0, prepare_fs, integ, seed)
    fixed = slab.fixed.numpy()
    assert 0.45 < fixed.mean() < 0.55  # half held, half melted
    held = solid_fraction(slab, 0, fixed)
    melted = solid_fraction(slab, 0, ~fixed)
    assert held > 0.5 and melted < 0.2  # an explicit interface: crystal below, liquid above
    return coexistence_runs(slab, temps, EMT_FORCES, pressure_GPa=0.0001, settle_fs=100.0, run_fs=run_fs,
                            sample_fs=100.0, integ=integ, seed=seed)  # fmt: skip


def test_interface_moves_into_the_solid_above_and_into_the_liquid_below_tm():
    cold, hot = _coexistence((2, 2, 6), [450.0, 1300.0], prepare_fs=300.0, run_fs=800.0)
    assert hot.slope_per_ps < 0 and hot.solid_fraction[-1] < hot.solid_fraction[1]  # melts
    assert cold.slope_per_ps > 0 and cold.solid_fraction[-1] > hot.solid_fraction[-1]  # grows


@pytest.mark.slow
def test_coexistence_brackets_the_emt_melting_point():
    """A larger slab and longer runs: 400 K grows, 900 K melts (EMT's T_m lies between). The
    crystal is prepared below T_m: in 1 ps at 800 K a superheated EMT crystal can melt by itself."""
    from potforge.validate.melting import estimate

    temps = [400.0, 900.0]
    trials = _coexistence((3, 3, 10), temps, prepare_fs=1000.0, run_fs=4000.0, seed=1, crystal_T_K=450.0)
    tm, _unc, bracket = estimate(trials)
    assert bracket == (400.0, 900.0) and 400 < tm < 900
