"""Speed of the 8-member ANI-Al ensemble: potforge vs TorchANI 2.9, measured in the same run.

Energy + forces (ensemble mean, as MD needs), float32, on rattled FCC aluminium of 1,000 and
4,000 atoms and on one batch of 64 cells x 108 atoms. TorchANI uses its cell-list neighbour
list (one system per call: it does not batch). Times are the best of several repeats after
a warm-up (compilation, caches).

    python benchmarks/model_speed.py [--threads 2] [--repeats 5] [--device cpu] [--profile]

With ``--device cuda`` both run on the GPU (TorchANI without its optional CUDA extensions).
``--profile`` also prints the time of each phase of one energy + forces call (CPU, C kernels)
for the 1,000- and 4,000-atom systems: neighbour list, edge vectors, radial and angular AEV,
networks (energies and their AEV gradients), radial and angular vector-Jacobian products, and
the scatter of edge gradients into forces. Radial-only kernel times come from the same kernels
run with a vanishing angular cutoff; the angular time is the difference.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

import numpy as np
import torch
from ase.build import bulk

from potforge.devices import device_name, resolve_device, synchronize
from potforge.model import atoms_to_batch, load_model
from potforge.model.io import PUBLISHED_MODELS
from potforge.units import HARTREE_EV


def fcc(reps, seed):
    atoms = bulk("Al", "fcc", a=4.04, cubic=True).repeat(reps)
    atoms.rattle(0.05, seed=seed)
    return atoms


def best_of(fn, repeats, device=torch.device("cpu")):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def torchani_model():
    from torchani.arch import ANI
    from torchani.neurochem import load_aev_computer_and_symbols, load_ensemble, load_sae

    root = PUBLISHED_MODELS["ani-al"].parent / "model-Al-75"
    aev, symbols = load_aev_computer_and_symbols(root / "rAl-7.0R_32-5.0A_a8-8.params", neighborlist="cell_list")
    return ANI(symbols, aev, load_ensemble(symbols, root / "train", 8), load_sae(root / "sae_linfit.dat"))


def torchani_energy_forces(model, frames, device=torch.device("cpu")):
    """TorchANI's cell list takes one system per call, so a batch is a loop over its cells."""
    if len(frames) > 1:
        parts = [torchani_energy_forces(model, [a], device) for a in frames]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    species = torch.tensor(np.array([a.numbers for a in frames]), device=device)
    pos = torch.tensor(np.array([a.positions for a in frames]), dtype=torch.float32, device=device)
    pos.requires_grad_(True)
    cell = torch.tensor(frames[0].cell.array, dtype=torch.float32, device=device)
    pbc = torch.tensor([True, True, True], device=device)
    energies = model((species, pos), cell=cell, pbc=pbc).energies
    forces = -torch.autograd.grad(energies.sum(), pos)[0]
    return energies.detach() * HARTREE_EV, forces


def profile(model, frames, repeats: int) -> dict[str, float]:
    """Best-of time (ms) of every phase of one energy + forces evaluation."""
    from potforge.model.ensemble import edge_to_atom_forces
    from potforge.model.kernels import KernelArgs

    batch = atoms_to_batch(frames, model)
    graph = model.graph(batch)
    vec = graph.edge_vectors(batch.positions, batch.cells)
    params = model.aev_params
    ints, reals, triu = params.kernel_params(vec.dtype)
    no_angular = reals.clone()
    no_angular[2] = 1e-6  # angular cutoff: no angular neighbours, the same radial work
    nspec = batch.species[graph.neighbors]
    full = KernelArgs(graph.offsets, vec, nspec, ints, reals, triu, params.n_features)
    radial = KernelArgs(graph.offsets, vec, nspec, ints, no_angular, triu, params.n_features)
    aev = full.forward()
    segments = [0, *torch.cumsum(batch.atoms_per_system(), 0).tolist()]
    _, grads = model.atomic_terms(aev, batch.species, True, segments=segments)
    cot = grads.mean(0, keepdim=True).contiguous()
    gvec = full.vjp(cot)
    phases = {
        "neighbour list": lambda: model.graph(batch),
        "edge vectors": lambda: graph.edge_vectors(batch.positions, batch.cells),
        "radial AEV": radial.forward,
        "AEV (radial + angular)": full.forward,
        "networks + input gradients": lambda: model.atomic_terms(aev, batch.species, True, segments=segments),
        "radial VJP": lambda: radial.vjp(cot),
        "VJP (radial + angular)": lambda: full.vjp(cot),
        "forces scatter": lambda: edge_to_atom_forces(gvec, graph, batch.n_atoms),
        "whole call": lambda: model.evaluate(batch, forces=True),
    }
    with torch.no_grad():
        t = {name: best_of(fn, repeats) for name, fn in phases.items()}
    t["angular AEV"] = t.pop("AEV (radial + angular)") - t["radial AEV"]
    t["angular VJP"] = t.pop("VJP (radial + angular)") - t["radial VJP"]
    return t


def print_profile(model, cases: dict, repeats: int) -> None:
    order = ["neighbour list", "edge vectors", "radial AEV", "angular AEV", "networks + input gradients",
             "radial VJP", "angular VJP", "forces scatter", "whole call"]  # fmt: skip
    tables = {name: profile(model, frames, repeats) for name, frames in cases.items()}
    print(f"{'phase (ms)':<30}" + "".join(f"{n:>16}" for n in tables))
    for phase in order:
        print(f"{phase:<30}" + "".join(f"{t[phase]:>16.1f}" for t in tables.values()))
    rest = {n: t["whole call"] - sum(t[p] for p in order[:-1]) for n, t in tables.items()}
    print(f"{'rest (energies, glue)':<30}" + "".join(f"{v:>16.1f}" for v in rest.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--profile", action="store_true", help="time of each phase (CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    ours = load_model("ani-al", dtype=torch.float32, device=device)
    theirs = torchani_model().to(device)

    cases = {
        "1,000 atoms": [fcc((5, 5, 10), 1)],
        "4,000 atoms": [fcc((10, 10, 10), 2)],
        "64 cells x 108 atoms": [fcc((3, 3, 3), 100 + k) for k in range(64)],
    }
    where = device_name(device) if device.type != "cpu" else platform.processor() or platform.machine()
    print(f"ANI-Al, 8 members, float32, {args.threads} threads, {where}")
    print(f"{'system':<22}{'potforge ms':>13}{'torchani ms':>13}{'speed-up':>10}{'ms/1000 atoms':>15}")
    results = {}
    for name, frames in cases.items():
        batch = atoms_to_batch(frames, ours)
        t_ours = best_of(lambda batch=batch: ours.evaluate(batch, forces=True), args.repeats, device)
        # sanity: both compute the same thing
        e_ours = ours.evaluate(batch).energy.cpu()
        e_theirs = torchani_energy_forces(theirs, frames, device)[0].cpu()
        assert torch.allclose(e_ours, e_theirs.double(), atol=1e-3 * len(frames[0])), "energies disagree"
        t_theirs = best_of(
            lambda frames=frames: torchani_energy_forces(theirs, frames, device), max(1, args.repeats // 2), device
        )
        n_atoms = sum(len(a) for a in frames)
        results[name] = t_ours
        print(f"{name:<22}{t_ours:>13.1f}{t_theirs:>13.1f}{t_theirs / t_ours:>9.1f}x{t_ours / n_atoms * 1000:>15.1f}")
    print(f"4,000-atom time / 1,000-atom time (potforge): {results['4,000 atoms'] / results['1,000 atoms']:.2f}")
    if args.profile and device.type == "cpu":
        print()
        print_profile(ours, {k: cases[k] for k in ("1,000 atoms", "4,000 atoms")}, args.repeats)


if __name__ == "__main__":
    main()
