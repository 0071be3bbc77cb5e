"""The shipped LAMMPS example ``examples/lammps/in.uncertainty``: a potforge spread check inside
LAMMPS (a python-style variable + ``fix halt``) stops a run where the ensemble disagrees, lets a
run where it agrees go to its end, and leaves the dynamics exactly as they are without it."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np
from ase import Atoms
from tests.export.conftest import Installed

from potforge.export.lammps import read_dump_last, run_lammps
from potforge.model import Calculator

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lammps" / "in.uncertainty"
THRESHOLD_EV_A = 0.2  # force_max; ANI-Al's 300 K crystal stays near 0.02


def run_example(installed: Installed, workdir: Path, n_ranks: int = 1, **variables) -> str:
    """The example with its ``index`` variables set (a first definition wins, as ``-var`` does)."""
    settings = {
        "pf_kim": installed.name,
        "pf_model": installed.source,
        "pf_site": sysconfig.get_paths()["purelib"],  # this interpreter's packages, potforge included
        "pf_threshold": THRESHOLD_EV_A,
        **variables,
    }
    head = "".join(f"variable {k} index {v}\n" for k, v in settings.items())
    return run_lammps(head + EXAMPLE.read_text(), workdir, n_ranks=n_ranks, env=installed.env)


def done_line(log: str) -> tuple[int, float]:
    words = next(x for x in log.splitlines() if x.startswith("POTFORGE_DONE")).split()
    return int(words[2]), float(words[4])


def thermo_rows(log: str) -> list[str]:
    lines = log.splitlines()
    start = next(i for i, x in enumerate(lines) if x.split()[:2] == ["Step", "Temp"])
    return [x.split()[:5] for x in lines[start + 1 :] if x.strip() and x.split()[0].isdigit()]


def potforge_force_max(workdir: Path, installed: Installed) -> float:
    """The spread of the final configuration, computed apart from LAMMPS."""
    rows = read_dump_last(workdir / "final.dump")
    lines = (workdir / "final.dump").read_text().splitlines()
    k = next(i for i, x in enumerate(lines) if x.startswith("ITEM: BOX"))
    bounds = np.array([[float(v) for v in lines[k + j].split()[:2]] for j in (1, 2, 3)])
    atoms = Atoms(f"Al{len(rows)}", positions=rows[:, 1:4] - bounds[:, 0], cell=np.diag(np.ptp(bounds, 1)), pbc=True)
    atoms.calc = Calculator(installed.model)
    atoms.get_potential_energy()
    return float(atoms.calc.results["force_std"].max())


def test_unsure_run_halts_on_two_ranks(ani_al_kim, tmp_path):
    """Compressed (a = 3.5 Å, ~100 GPa) and hot: the ensemble disagrees and the run stops early,
    on both ranks (a rank stopping alone would hang the other)."""
    log = run_example(ani_al_kim, tmp_path, n_ranks=2, a=3.5, T=8000, steps=200)
    step, value = done_line(log)
    assert "Fix halt condition for fix-id pf_halt met" in log
    assert step < 200 and value > THRESHOLD_EV_A
    assert abs(potforge_force_max(tmp_path, ani_al_kim) - value) < 1e-6


def test_confident_run_completes_with_unchanged_dynamics(ani_al_kim, tmp_path):
    """A 300 K crystal: every check passes, and the trajectory equals, digit for digit, the same
    run without the check (it only reads positions)."""
    checked = run_example(ani_al_kim, tmp_path / "checked", steps=100)
    plain = run_example(ani_al_kim, tmp_path / "plain", steps=100, pf_check="no")
    step, value = done_line(checked)
    assert step == 100 and value < THRESHOLD_EV_A
    assert "Fix halt condition" not in checked
    assert thermo_rows(checked) == thermo_rows(plain) and len(thermo_rows(plain)) == 11
    a = read_dump_last(tmp_path / "checked" / "final.dump")
    b = read_dump_last(tmp_path / "plain" / "final.dump")
    np.testing.assert_array_equal(a, b)
    assert abs(potforge_force_max(tmp_path / "checked", ani_al_kim) - value) < 1e-6
