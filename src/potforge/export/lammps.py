"""Running LAMMPS on an exported potforge model: finding ``lmp`` and ``mpirun``, writing a
structure as a LAMMPS data file, and one single-point evaluation (energy, forces, per-atom
energies, virial stress) for checks against potforge's own calculator.

LAMMPS runs here as a separate program driven by an input file, as in production, so these
helpers need no LAMMPS Python module. Units: LAMMPS ``metal`` (Å, eV, bar, ps).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers

from potforge.errors import PotforgeError

#: LAMMPS' own eV/Å³ -> bar factor in ``units metal`` (its force->nktv2p); its pressures are
#: converted back with this exact number, not CODATA's (they differ in the 8th digit).
LAMMPS_METAL_BAR_PER_EV_A3 = 1.6021765e6


class LammpsError(PotforgeError):
    """LAMMPS is missing or a LAMMPS run failed."""


def find_lmp() -> str:
    """The LAMMPS executable (``$POTFORGE_LMP``, else ``lmp`` on PATH), or a one-line error."""
    exe = os.environ.get("POTFORGE_LMP") or shutil.which("lmp") or shutil.which("lmp_serial")
    if exe is None:
        raise LammpsError("LAMMPS (lmp) not found: install it with the KIM package (Debian: apt-get install lammps)")
    return exe


def mpirun_prefix(n_ranks: int) -> list[str]:
    """The command prefix that starts ``n_ranks`` MPI ranks (empty for one rank)."""
    if n_ranks <= 1:
        return []
    mpirun = shutil.which("mpirun") or shutil.which("mpiexec")
    if mpirun is None:
        raise LammpsError("mpirun not found: install an MPI launcher (Debian: apt-get install openmpi-bin)")
    cmd = [mpirun, "-np", str(n_ranks)]
    version = subprocess.run([mpirun, "--version"], capture_output=True, text=True).stdout
    if "Open MPI" in version or "OpenRTE" in version:
        # more ranks than cores is fine for checks; Open MPI refuses to run as root by default
        cmd += ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    return cmd


def lammps_cell(atoms: Atoms) -> tuple[float, float, float, float, float, float]:
    """(lx, ly, lz, xy, xz, yz) of a cell already in LAMMPS' orientation (a along x, b in the
    xy plane: a lower-triangular cell matrix); anything else raises ValueError."""
    c = atoms.cell.array
    if abs(c[0, 1]) > 1e-12 or abs(c[0, 2]) > 1e-12 or abs(c[1, 2]) > 1e-12:
        raise ValueError("LAMMPS needs a lower-triangular cell (a along x, b in the xy plane); rotate the structure")
    return tuple(float(x) for x in (c[0, 0], c[1, 1], c[2, 2], c[1, 0], c[2, 0], c[2, 1]))  # type: ignore[return-value]


def write_data(atoms: Atoms, path: str | Path, elements: tuple[str, ...] | list[str]) -> None:
    """LAMMPS data file (``atom_style atomic``) of a periodic ``atoms``; type k + 1 is
    ``elements[k]`` (the order given to ``kim interactions`` / ``pair_coeff``)."""
    lx, ly, lz, xy, xz, yz = lammps_cell(atoms)
    types = {el: k + 1 for k, el in enumerate(elements)}
    unknown = sorted(set(atoms.get_chemical_symbols()) - set(types))
    if unknown:
        raise ValueError(f"elements {unknown} are not in {list(elements)}")
    lines = [
        "potforge structure",
        "",
        f"{len(atoms)} atoms",
        f"{len(elements)} atom types",
        "",
        f"0 {lx!r} xlo xhi",
        f"0 {ly!r} ylo yhi",
        f"0 {lz!r} zlo zhi",
    ]
    if (xy, xz, yz) != (0.0, 0.0, 0.0):
        lines.append(f"{xy!r} {xz!r} {yz!r} xy xz yz")
    lines += ["", "Masses", ""]
    lines += [f"{k + 1} {float(atomic_masses[atomic_numbers[el]])!r}" for k, el in enumerate(elements)]
    lines += ["", "Atoms # atomic", ""]
    for i, (sym, (x, y, z)) in enumerate(zip(atoms.get_chemical_symbols(), atoms.positions, strict=True)):
        lines.append(f"{i + 1} {types[sym]} {float(x)!r} {float(y)!r} {float(z)!r}")
    Path(path).write_text("\n".join(lines) + "\n")


@dataclass(frozen=True)
class SinglePoint:
    """One LAMMPS evaluation: energy eV, forces (N, 3) eV/Å, per-atom energies (N,) eV, the
    virial stress (3, 3) eV/Å³ with ASE's sign (positive under tension) and the per-atom virials
    (N, 6: xx yy zz xy xz yz) eV with the same sign (their sum is the stress times the volume),
    atoms in input order."""

    energy_eV: float
    forces_eV_A: np.ndarray
    energies_eV: np.ndarray
    stress_eV_A3: np.ndarray
    atom_virials_eV: np.ndarray


def run_lammps(
    input_text: str, workdir: str | Path, n_ranks: int = 1, env: dict[str, str] | None = None, timeout_s: float = 600
) -> str:
    """Run LAMMPS on ``input_text`` in ``workdir``; returns its log. A failed run raises
    :class:`LammpsError` with LAMMPS' last lines."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "in.lmp").write_text(input_text)
    run_env = dict(os.environ if env is None else env)
    run_env.setdefault("OMP_NUM_THREADS", "1")  # one thread per rank unless asked otherwise
    cmd = [*mpirun_prefix(n_ranks), find_lmp(), "-in", "in.lmp", "-log", "log.lammps", "-screen", "none"]
    res = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=run_env, timeout=timeout_s)
    log = (workdir / "log.lammps").read_text() if (workdir / "log.lammps").exists() else ""
    if res.returncode != 0 or "ERROR" in log:
        tail = "\n".join((log + res.stdout + res.stderr).strip().splitlines()[-12:])
        raise LammpsError(f"LAMMPS failed in {workdir} (exit {res.returncode}):\n{tail}")
    return log


def single_point(
    atoms: Atoms,
    model_name: str,
    elements: tuple[str, ...] | list[str],
    workdir: str | Path,
    n_ranks: int = 1,
    env: dict[str, str] | None = None,
    style: str = "kim init",
) -> SinglePoint:
    """Energy, forces, per-atom energies and stress of ``atoms`` from LAMMPS with the KIM model
    ``model_name`` (``style``: ``"kim init"`` (``kim init`` + ``kim interactions``) or
    ``"pair_style"`` (``pair_style kim`` + ``pair_coeff``))."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    write_data(atoms, workdir / "data.lmp", elements)
    species = " ".join(elements)
    read = "boundary p p p\natom_style atomic\nread_data data.lmp\n"
    if style == "kim init":
        head = f"kim init {model_name} metal\n{read}kim interactions {species}\n"
    elif style == "pair_style":
        head = f"units metal\n{read}pair_style kim {model_name}\npair_coeff * * {species}\n"
    else:
        raise ValueError(f"unknown style {style!r}")
    fmt = "%.17g"
    text = head + (
        "compute pf_pe all pe/atom\n"
        "compute pf_p all pressure NULL virial\n"  # the virial part alone: no kinetic term
        "compute pf_sa all stress/atom NULL virial\n"
        "dump pf all custom 1 out.dump id fx fy fz c_pf_pe c_pf_sa[*]\n"
        f"dump_modify pf format float {fmt} sort id\n"
        "thermo_style custom step pe c_pf_p[1] c_pf_p[2] c_pf_p[3] c_pf_p[4] c_pf_p[5] c_pf_p[6]\n"
        "run 0\n"
        f'print "POTFORGE_RESULT $(pe:{fmt}) $(c_pf_p[1]:{fmt}) $(c_pf_p[2]:{fmt}) $(c_pf_p[3]:{fmt}) '
        f'$(c_pf_p[4]:{fmt}) $(c_pf_p[5]:{fmt}) $(c_pf_p[6]:{fmt})"\n'
    )
    log = run_lammps(text, workdir, n_ranks=n_ranks, env=env)
    line = next(x for x in log.splitlines() if x.startswith("POTFORGE_RESULT"))
    values = [float(v) for v in line.split()[1:]]
    pxx, pyy, pzz, pxy, pxz, pyz = values[1:]
    pressure = np.array([[pxx, pxy, pxz], [pxy, pyy, pyz], [pxz, pyz, pzz]])
    rows = read_dump_last(workdir / "out.dump")
    return SinglePoint(
        energy_eV=values[0],
        forces_eV_A=rows[:, 1:4],
        energies_eV=rows[:, 4],
        stress_eV_A3=-pressure / LAMMPS_METAL_BAR_PER_EV_A3,
        # stress/atom is in bar Å³ and sums to minus pressure times volume: ASE's sign already
        atom_virials_eV=rows[:, 5:11] / LAMMPS_METAL_BAR_PER_EV_A3,
    )


def read_dump_last(path: str | Path) -> np.ndarray:
    """The per-atom columns (sorted by id) of the last frame of a LAMMPS custom dump."""
    lines = Path(path).read_text().splitlines()
    k = max(i for i, x in enumerate(lines) if x.startswith("ITEM: NUMBER OF ATOMS"))
    n = int(lines[k + 1])
    start = next(i for i in range(k, len(lines)) if lines[i].startswith("ITEM: ATOMS"))
    rows = np.array([[float(v) for v in x.split()] for x in lines[start + 1 : start + 1 + n]])
    return rows[np.argsort(rows[:, 0])]
