"""Speed of the exported KIM model in LAMMPS against potforge's ASE calculator driving ASE's
Langevin, the same run measured here: 4,000-atom fcc aluminium (10x10x10 cubic cells) at 300 K,
Langevin NVT (damping 0.1 ps), 1 fs steps, the published 8-member ANI-Al in float64 (what the
KIM driver computes), ensemble mean only on both sides.

LAMMPS runs on 1 and 2 MPI ranks (one OpenMP thread each); ASE with 1 and 2 PyTorch threads, so
each ratio compares the same number of cores. Start-up (LAMMPS' neighbour lists, the first
model call) is left out: both sides take a few untimed steps first. The model is exported and
installed into a temporary KIM collection, never the user's.

    python benchmarks/lammps_speed.py [--reps 10] [--steps 20] [--ranks 1 2]
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.build import bulk
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta

from potforge.export.kim import export_kim, install_kim
from potforge.export.lammps import run_lammps
from potforge.model import Calculator, load_model

NVT = """\
kim init {model} metal
lattice fcc 4.04
region box block 0 {reps} 0 {reps} 0 {reps}
create_box 1 box
create_atoms 1 box
mass 1 26.9815385
kim interactions Al
velocity all create 300 4928 mom yes rot yes dist gaussian loop geom
fix nve all nve
fix thermostat all langevin 300 300 0.1 8123
timestep 0.001
thermo {steps}
run {warmup}
run {steps}
"""


def lammps_steps_per_s(model: str, env: dict, reps: int, steps: int, ranks: int, workdir: Path) -> float:
    text = NVT.format(model=model, reps=reps, steps=steps, warmup=3)
    log = run_lammps(text, workdir, n_ranks=ranks, env=env, timeout_s=3600)
    loops = re.findall(r"Loop time of ([0-9.eE+-]+) on \d+ procs for (\d+) steps", log)
    seconds, n = loops[-1]  # the timed run, after the warm-up one
    return int(n) / float(seconds)


def ase_steps_per_s(reps: int, steps: int, threads: int) -> float:
    torch.set_num_threads(threads)
    atoms = bulk("Al", "fcc", a=4.04, cubic=True).repeat(reps)
    atoms.calc = Calculator(load_model("ani-al", dtype=torch.float64), dtype=torch.float64, uncertainty=False)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(1))
    dyn = Langevin(atoms, 1.0 * units.fs, temperature_K=300, friction=0.01 / units.fs, fixcm=False)
    dyn.run(3)
    t0 = time.perf_counter()
    dyn.run(steps)
    return steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10, help="cubic fcc cells per side (4 reps^3 atoms)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    n_atoms = 4 * args.reps**3
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = dict(os.environ, OMP_NUM_THREADS="1")
        env["KIM_API_MODEL_DRIVERS_DIR"] = str(root / "drivers")
        env["KIM_API_PORTABLE_MODELS_DIR"] = str(root / "models")
        for key in ("KIM_API_MODEL_DRIVERS_DIR", "KIM_API_PORTABLE_MODELS_DIR"):
            Path(env[key]).mkdir()
        export = export_kim("ani-al", root / "export")
        install_kim(export, "environment", env)
        print(f"{n_atoms} atoms, Langevin NVT 300 K, 1 fs, ANI-Al (8 members) float64, {args.steps} timed steps")
        for ranks in args.ranks:
            lmp = lammps_steps_per_s(export.model_name, env, args.reps, args.steps, ranks, root / f"np{ranks}")
            ase = ase_steps_per_s(args.reps, args.steps, ranks)
            print(f"LAMMPS + KIM potforge model, {ranks} MPI rank(s)   {lmp:8.3f} steps/s")
            print(f"ASE Langevin + potforge calculator, {ranks} thread(s) {ase:8.3f} steps/s")
            print(f"ratio LAMMPS / ASE ({ranks} core(s))               {lmp / ase:8.2f}x")


if __name__ == "__main__":
    main()
