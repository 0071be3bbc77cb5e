"""Speed of the batched sampler vs. the same trajectories run one by one with ASE's Langevin.

32 replicas of random aluminium cells (100-250 atoms), the 8-member ANI-Al ensemble in float32,
uncertainty checks on (every 10 steps, thresholds too high to stop anyone, so both sides
integrate the same number of steps). The peer is ASE's Langevin integrator with potforge's ASE
calculator (which returns every member's forces, i.e. the uncertainty, at every call), run for
each replica in turn. Both are measured in this run; the figure of merit is atom-steps/s.

    python benchmarks/sampler_speed.py [--replicas 32] [--steps 40] [--threads 2] [--device cpu]

On a GPU (``--device cuda``) both sides run the model there; the sampler's replicas stay on the CPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from ase import units
from ase.md.langevin import Langevin

from potforge.devices import device_name, resolve_device
from potforge.model import Calculator, load_model
from potforge.sample import Sampler, SamplerConfig
from potforge.structures import RandomCellSpec, random_cell

CELLS = RandomCellSpec(box_min_A=11.5, box_max_A=15.0, density_min_g_cm3=2.4, density_max_g_cm3=2.8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = load_model("ani-al", dtype=torch.float32, device=device)
    # the Sampler draws trajectory k of generation 0 from stream (seed, 0, k): the same cells here
    cells = [random_cell(CELLS, np.random.default_rng([5, 0, k])) for k in range(args.replicas)]
    sizes = [len(a) for a in cells]
    cfg = SamplerConfig(timestep_fs=1.0)
    check_every = cfg.uncertainty.check_every
    n_atoms = sum(sizes)
    print(f"{args.replicas} replicas, {min(sizes)}-{max(sizes)} atoms ({n_atoms} in all), {args.steps} steps, "
          f"float32, {args.threads} threads, {device_name(device)}, uncertainty every {check_every} steps")  # fmt: skip

    # potforge: the Sampler, all replicas in one batched model call per step, members' forces
    # only for the replicas being checked; thresholds off so that every replica runs all steps
    cfg.uncertainty.energy_eV_per_sqrt_atom = None
    cfg.uncertainty.force_mean_eV_per_A = None
    cfg.uncertainty.force_max_eV_per_A = None
    cfg = cfg.model_copy(update={"replicas": args.replicas, "max_steps": args.replicas * args.steps})
    cfg.schedule.t_max_fs = 1e9
    with tempfile.TemporaryDirectory() as tmp:
        warm = cfg.model_copy(update={"max_steps": args.replicas})  # kernel compilation, caches
        Sampler(model, warm, CELLS, tmp + "/warm", seed=5, generation=0).run()
        t0 = time.perf_counter()
        result = Sampler(model, cfg, CELLS, tmp + "/run", seed=5, generation=0).run()
        t_batched = time.perf_counter() - t0
    assert result.total_steps == args.replicas * args.steps
    rate_batched = n_atoms * args.steps / t_batched

    # ASE: the same trajectories one after another, the potforge calculator at every step
    calc = Calculator(model, dtype=torch.float32, uncertainty=True)
    warm = cells[0].copy()  # kernel compilation, caches
    warm.calc = calc
    Langevin(warm, timestep=1.0 * units.fs, temperature_K=600, friction=0.01 / units.fs, fixcm=False).run(3)
    t0 = time.perf_counter()
    for atoms in cells:
        atoms = atoms.copy()
        atoms.calc = calc
        dyn = Langevin(
            atoms, timestep=1.0 * units.fs, temperature_K=600, friction=cfg.friction_per_fs / units.fs, fixcm=False
        )
        dyn.run(args.steps)
    t_ase = time.perf_counter() - t0
    rate_ase = n_atoms * args.steps / t_ase

    print(f"{'':<28}{'atom-steps/s':>14}{'wall s':>10}")
    print(f"{'potforge batched sampler':<28}{rate_batched:>14.0f}{t_batched:>10.1f}")
    print(f"{'ASE Langevin, one by one':<28}{rate_ase:>14.0f}{t_ase:>10.1f}")
    print(f"speed-up: {rate_batched / rate_ase:.1f}x")


if __name__ == "__main__":
    main()
