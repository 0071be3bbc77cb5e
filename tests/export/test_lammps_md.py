"""Energy conservation of the exported model in LAMMPS: NVE of 108-atom fcc aluminium from
300 K, 1 fs steps, 10 ps; the drift of the total energy (a least-squares slope) must stay below
1e-5 eV/atom per ps. Exact forces (-dE/dr of the smooth cosine-cutoff AEV) are what make it
small; a force that missed a term would show up here as a steady drift."""

from __future__ import annotations

import numpy as np
import pytest

from potforge.export.lammps import run_lammps

NVE = """\
kim init {model} metal
lattice fcc 4.04
region box block 0 3 0 3 0 3
create_box 1 box
create_atoms 1 box
mass 1 26.9815385
kim interactions Al
neigh_modify every 1 delay 0 check yes
velocity all create 300 8731 mom yes rot yes dist gaussian loop geom
fix nve all nve
timestep 0.001
thermo 50
thermo_style custom step time temp pe etotal
thermo_modify format float %.15g
run 10000
"""


def energy_series(log: str) -> np.ndarray:
    lines = log.splitlines()
    start = next(i for i, x in enumerate(lines) if x.split()[:2] == ["Step", "Time"])
    rows = []
    for x in lines[start + 1 :]:
        parts = x.split()
        if not parts or not parts[0].isdigit():
            break
        rows.append([float(v) for v in parts])
    return np.array(rows)


@pytest.mark.slow
def test_nve_energy_drift(ani_al_kim, tmp_path):
    log = run_lammps(NVE.format(model=ani_al_kim.name), tmp_path, env=ani_al_kim.env, timeout_s=1800)
    rows = energy_series(log)
    time_ps, temp_K, etotal = rows[:, 1], rows[:, 2], rows[:, 4]
    assert time_ps[-1] == pytest.approx(10.0) and len(rows) == 201
    drift = np.polyfit(time_ps, etotal / 108, 1)[0]
    fluctuation = np.std(etotal) / 108
    print(f"NVE 108 atoms, 10 ps: drift {drift:.2e} eV/atom/ps, total-energy std {fluctuation:.2e} eV/atom")
    assert 100 < temp_K[-1] < 300  # a solid that equipartitioned, not one that melted or froze
    assert abs(drift) < 1e-5
    assert fluctuation < 1e-4
