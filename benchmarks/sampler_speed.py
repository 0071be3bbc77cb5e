"""Speed of the batched sampler, against ASE's Langevin one replica at a time and against an
earlier potforge commit, all measured in this run; and the MD engine's overhead.

32 trajectories of random aluminium cells (100-250 atoms), the 8-member ANI-Al ensemble in
float32, uncertainty checks every 10 steps (thresholds off, so every side integrates the same
number of steps). Printed:

* atom-steps/s of potforge's sampler, of ASE's Langevin with potforge's calculator (which
  returns every member's forces, i.e. the uncertainty, at every call) run for each replica in
  turn, and of the sampler of ``--baseline`` (default 72cd5b0, main before the MD engine was
  rewritten), checked out into a temporary git worktree and run there by its own copy of this
  benchmark;
* the engine's overhead: its time per MD step of these systems (``potforge.md.step``, every
  member's forces on every 10th step, as the sampler checks them) over the time of one bare
  batched model call for the same systems (ensemble-mean energy and forces, neighbour list built afresh). A
  ratio below 1 is possible because the engine reuses neighbour lists between steps.

    python benchmarks/sampler_speed.py [--replicas 32] [--steps 40] [--threads 2] [--device cpu]
                                       [--baseline REV | --no-baseline]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from ase import units
from ase.md.langevin import Langevin

from potforge import md
from potforge.devices import device_name, resolve_device, synchronize
from potforge.model import Calculator, atoms_to_batch, build_graph, load_model
from potforge.sample import Sampler, SamplerConfig
from potforge.structures import RandomCellSpec, random_cell

CELLS = RandomCellSpec(box_min_A=11.5, box_max_A=15.0, density_min_g_cm3=2.4, density_max_g_cm3=2.8)


def sampler_config(replicas: int, steps: int, dt: float = 1.0) -> SamplerConfig:
    cfg = SamplerConfig(replicas=replicas, max_trajectories=replicas, timestep_fs=dt, max_flagged=10**6)
    cfg.uncertainty.energy_eV_per_sqrt_atom = None
    cfg.uncertainty.force_mean_eV_per_A = None
    cfg.uncertainty.force_max_eV_per_A = None
    cfg.schedule.t_max_fs = steps * dt  # every trajectory runs exactly `steps` steps, then survives
    cfg.census_every_fs = 1e9
    return cfg


def baseline_rate(rev: str, args) -> float | None:
    """atom-steps/s of the sampler at commit ``rev``, run by that commit's own benchmark."""
    from baseline import rate_at

    cli = ["--replicas", str(args.replicas), "--steps", str(args.steps), "--threads", str(args.threads),
           "--device", args.device]  # fmt: skip
    return rate_at(rev, "sampler_speed.py", cli, r"potforge batched sampler\s+(\d+)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--baseline", default="72cd5b0", help="git revision to compare the sampler with")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = load_model("ani-al", dtype=torch.float32, device=device)
    # the Sampler draws trajectory k of generation 0 from stream (seed, 0, k): the same cells here
    cells = [random_cell(CELLS, np.random.default_rng([5, 0, k])) for k in range(args.replicas)]
    sizes = [len(a) for a in cells]
    n_atoms = sum(sizes)
    cfg = sampler_config(args.replicas, args.steps)
    check_every = cfg.uncertainty.check_every
    print(f"{args.replicas} replicas, {min(sizes)}-{max(sizes)} atoms ({n_atoms} in all), {args.steps} steps, "
          f"float32, {args.threads} threads, {device_name(device)}, uncertainty every {check_every} steps")  # fmt: skip

    # potforge: the Sampler, all replicas in one batched model call per step, members' forces
    # only for the replicas being checked
    with tempfile.TemporaryDirectory() as tmp:
        Sampler(model, sampler_config(args.replicas, 3), CELLS, tmp + "/warm", seed=5, generation=0).run()
        t0 = time.perf_counter()
        summary = Sampler(model, cfg, CELLS, tmp + "/run", seed=5, generation=0).run()
        t_batched = time.perf_counter() - t0
    assert summary.total_steps == args.replicas * args.steps, summary.total_steps
    rate_batched = n_atoms * args.steps / t_batched

    # the engine alone: the same systems stepped by potforge.md (member forces every 10th step)
    drives = [md.Drive.of(600.0)] * len(cells)
    provider = md.EnsembleForces(model, skin_A=cfg.neighbor_skin_A)
    state = md.init(cells, drives, list(range(len(cells))), provider)
    integ = md.Langevin(cfg.timestep_fs, cfg.friction_per_fs)
    t0 = time.perf_counter()
    for k in range(1, args.steps + 1):
        members = range(len(cells)) if k % check_every == 0 else ()
        state, _ = md.step(state, provider, integ, members=members)
    synchronize(device)
    t_engine = (time.perf_counter() - t0) / args.steps

    # the bare model call: the same systems, mean energy and forces, neighbour list built afresh
    batch = atoms_to_batch(cells, model)

    def bare() -> None:
        graph = build_graph(batch, model.cutoff_A, len(model.elements))
        model.evaluate(batch, forces=True, graph=graph)

    bare()
    times = []
    for _ in range(5):
        synchronize(device)
        t0 = time.perf_counter()
        bare()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    t_bare = float(np.median(times))
    overhead = t_engine / t_bare

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

    rate_base = None if args.no_baseline else baseline_rate(args.baseline, args)
    print(f"{'':<36}{'atom-steps/s':>14}{'wall s':>10}")
    print(f"{'potforge batched sampler':<36}{rate_batched:>14.0f}{t_batched:>10.1f}")
    print(f"{'ASE Langevin, one by one':<36}{rate_ase:>14.0f}{t_ase:>10.1f}")
    if rate_base is not None:
        print(f"{f'potforge at {args.baseline} (same run)':<36}{rate_base:>14.0f}")
    print(f"speed-up over ASE: {rate_batched / rate_ase:.1f}x")
    if rate_base is not None:
        print(f"speed-up over {args.baseline}: {rate_batched / rate_base:.2f}x")
    print(f"engine overhead: {t_engine * 1e3:.1f} ms per MD step (member forces every {check_every}th) / "
          f"{t_bare * 1e3:.1f} ms per bare model call (mean forces, fresh neighbour list) "
          f"= {overhead:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
