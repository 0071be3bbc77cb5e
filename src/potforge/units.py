"""Units and conversions. potforge works in eV, Å, fs, K, GPa and amu; conversions happen only at
the edges (NeuroChem files in Hartree, ASE's internal time unit, densities in g/cm³)."""

from __future__ import annotations

from ase import units as _ase_units

#: 1 Hartree in eV (CODATA 2014, the value of the ANI-Al release notes: 27.211386).
HARTREE_EV: float = float(_ase_units.Hartree)
#: 1 eV/Å³ in GPa.
EV_PER_A3_GPA: float = float(1.0 / _ase_units.GPa)
#: 1 fs in ASE time units.
FS_ASE: float = float(_ase_units.fs)
#: Boltzmann constant, eV/K.
KB_EV_PER_K: float = float(_ase_units.kB)
#: 1 amu in grams.
AMU_G: float = float(_ase_units._amu * 1e3)
#: 1 J/m² in eV/Å² — for stacking-fault and surface energies (mJ/m² = 1e-3 J/m²).
J_PER_M2_EV_PER_A2: float = float(_ase_units.J / _ase_units.m**2)


def density_g_cm3(total_mass_amu: float, volume_A3: float) -> float:
    """Mass density in g/cm³ of ``total_mass_amu`` in ``volume_A3``."""
    return total_mass_amu * AMU_G / (volume_A3 * 1e-24)


def volume_for_density_A3(total_mass_amu: float, density_g_cm3_: float) -> float:
    """Volume in Å³ that ``total_mass_amu`` occupies at ``density_g_cm3_``."""
    return total_mass_amu * AMU_G / density_g_cm3_ / 1e-24


def ev_per_A2_to_mJ_per_m2(value: float) -> float:
    """Energy per area: eV/Å² to mJ/m²."""
    return value / J_PER_M2_EV_PER_A2 * 1e3
