"""Training throughput: potforge's 8 members trained together vs. the same 8 networks trained one
after another through TorchANI's modules, on the same EMT-labelled frames, in the same run.

Both use Eq. 1 with the force term on (forces by double backpropagation in TorchANI), Adam,
float32, the ANI-Al AEV and 96-96-64 networks, batches of 8 frames. TorchANI takes one periodic
cell per call (its batches share one cell), so its batch is a loop over frames.
Figure of merit: frames per second for all 8 members.

``--memory`` also prints the peak memory of one potforge training step (8 members, forces on)
against batch size, cell size and `training.member_chunk`, each measured in a fresh process: the growth of the peak
resident set over the step on a CPU, ``torch.cuda.max_memory_allocated`` on a GPU.

    python benchmarks/train_speed.py [--frames 32] [--steps 2] [--threads 2] [--device cpu]
                                     [--baseline REV | --no-baseline] [--memory]
        (TorchANI on 2 CPU cores: ~5 min; the baseline commit's own copy runs in a git worktree)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

import numpy as np
import torch
from ase.calculators.singlepoint import SinglePointCalculator

from potforge.devices import device_name, resolve_device, synchronize
from potforge.oracle import get_oracle
from potforge.structures import RandomCellSpec, random_cell
from potforge.train import FrameSet, TrainConfig, build_model, fit_self_energies
from potforge.train.optim import MemberAdam
from potforge.train.trainer import member_losses_backward

CELLS = RandomCellSpec(box_min_A=9.0, box_max_A=11.0)


def emt_frames(n: int, cells: RandomCellSpec = CELLS) -> list:
    oracle = get_oracle("emt")
    frames = []
    for k in range(n):
        atoms = random_cell(cells, np.random.default_rng([9, k]))
        label = oracle.compute(atoms, "/tmp")
        atoms.calc = SinglePointCalculator(atoms, energy=label.energy, forces=label.forces)
        frames.append(atoms)
    return frames


def torchani_members(n_members: int) -> list:
    """n_members independent (AEV computer, networks) pairs built from TorchANI's modules."""
    import torchani
    from torchani.aev import AEVComputer

    from potforge.model.aev import AEVParams

    p = AEVParams.ani_al()
    aev = AEVComputer.from_constants(
        radial_cutoff=p.radial_cutoff,
        angular_cutoff=p.angular_cutoff,
        radial_eta=p.radial_eta,
        radial_shifts=p.radial_shifts,
        angular_eta=p.angular_eta,
        angular_zeta=p.angular_zeta,
        angular_shifts=p.angular_shifts,
        sections=p.angular_sections,
        num_species=1,
        neighborlist="cell_list",
    )
    members = []
    for _ in range(n_members):
        net = torchani.nn.ANINetworks({"Al": torchani.nn.AtomicNetwork([96, 96, 96, 64, 1], activation="celu")})
        members.append(torch.nn.ModuleDict({"aev": aev, "net": net}))
    return members


def train_step(model, opt: MemberAdam, data: tuple, config: TrainConfig) -> None:
    """One Eq. 1 step of all members on one batch (``FrameSet.batch``'s tuple), as the trainer
    takes it (``config.member_chunk`` members at a time)."""
    batch, e, f, n = data
    opt.zero_grad()
    weights = torch.ones(model.n_members, len(n), dtype=torch.float64, device=e.device)
    member_losses_backward(model, batch, None, e, f, n, weights, config)
    opt.step()


def _resident_mib(field: str) -> float:
    """This process's resident set (``VmRSS``) or its peak (``VmHWM``) in MiB, from /proc (Linux).
    Not ``getrusage``: its ``ru_maxrss`` survives exec, so a probe started by a large parent
    would inherit the parent's peak and see none of its own."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> None:
    """Start VmHWM afresh from the current resident set (Linux ≥ 4.0: clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def memory_probe(batch: int, box_A: float, chunk: int, device: torch.device) -> None:
    """One training step of ``batch`` cells of side ``box_A`` in this (fresh) process, ``chunk``
    members at a time (0: all 8 at once); prints its atoms per frame and the step's peak memory
    in MiB."""
    atoms = emt_frames(batch, RandomCellSpec(box_min_A=box_A, box_max_A=box_A))
    frames = FrameSet.from_atoms(atoms, ("Al",))
    cfg = TrainConfig(l0_A2=0.01, dtype="float32", member_chunk=chunk or None)
    model = build_model(("Al",), cfg, fit_self_energies(frames)).to(device)
    opt = MemberAdam(list(model.networks.parameters()), torch.full((8,), 1e-3))
    data = frames.batch(torch.arange(batch), torch.float32, device)
    before = _resident_mib("VmRSS")
    _reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train_step(model, opt, data, cfg)
    synchronize(device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = _resident_mib("VmHWM") - before
    print(f"probe {np.mean([len(a) for a in atoms]):.0f} {peak:.0f}")


def memory_table(threads: int, device_arg: str) -> None:
    print("peak memory of one training step (8 members, forces), each in a fresh process;")
    print("'members' is training.member_chunk (all: the default, 8 at once):")
    print(f"{'batch':>6}{'box Å':>8}{'atoms/frame':>13}{'members':>9}{'MiB':>9}{'MiB/atom':>10}")
    for box in (10.0, 14.0):
        for batch in (4, 8, 16):
            for chunk in (0, 2, 1):
                out = subprocess.run([sys.executable, __file__, "--probe", str(batch), str(box), str(chunk),
                                      "--threads", str(threads), "--device", device_arg],
                                     capture_output=True, text=True, check=True)  # fmt: skip
                _, atoms, mib = next(line for line in out.stdout.splitlines() if line.startswith("probe")).split()
                per_atom = float(mib) / (batch * float(atoms))
                print(f"{batch:>6}{box:>8.1f}{atoms:>13}{chunk or 'all':>9}{mib:>9}{per_atom:>10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2, help="optimisation steps timed on each side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--baseline", default="72cd5b0", help="git revision whose training speed to compare with")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--memory", action="store_true", help="also the peak memory of a training step")
    parser.add_argument("--probe", nargs=3, type=float, metavar=("BATCH", "BOX_A", "CHUNK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.probe:
        memory_probe(int(args.probe[0]), args.probe[1], int(args.probe[2]), device)
        return
    atoms = emt_frames(args.frames)
    frames = FrameSet.from_atoms(atoms, ("Al",))
    n_atoms = [len(a) for a in atoms]
    print(f"{args.frames} EMT frames of {min(n_atoms)}-{max(n_atoms)} atoms, batches of {args.batch}, "
          f"8 members, float32, {args.threads} threads, {device_name(device)}")  # fmt: skip
    cfg = TrainConfig(l0_A2=0.01, dtype="float32")
    sae = fit_self_energies(frames)
    batches = [
        torch.arange(k, k + args.batch) % len(frames) for k in range(0, args.batch * (args.steps + 1), args.batch)
    ]

    # potforge: one step trains all 8 members on the batch
    model = build_model(("Al",), cfg, sae).to(device)
    opt = MemberAdam(list(model.networks.parameters()), torch.full((8,), 1e-3))

    def ours(idx):
        train_step(model, opt, frames.batch(idx, torch.float32, device), cfg)

    ours(batches[0])  # warm-up (kernel compilation)
    synchronize(device)
    t0 = time.perf_counter()
    for idx in batches[1:]:
        ours(idx)
    synchronize(device)
    t_ours = time.perf_counter() - t0

    # TorchANI: the same 8 networks, one after another, double backpropagation for the forces
    members = [m.to(device) for m in torchani_members(8)]
    optims = [torch.optim.Adam(m["net"].parameters(), lr=1e-3) for m in members]

    def theirs(idx):
        for member, opt_m in zip(members, optims, strict=True):
            opt_m.zero_grad()
            for k in idx.tolist():
                a = atoms[k]
                species = torch.zeros(1, len(a), dtype=torch.long, device=device)
                pos = torch.tensor(a.positions, dtype=torch.float32, device=device).unsqueeze(0).requires_grad_(True)
                cell = torch.tensor(a.cell.array, dtype=torch.float32, device=device)
                x = member["aev"](species, pos, cell=cell, pbc=torch.tensor([True, True, True], device=device))
                energy = member["net"](species, x).sum() + sae[0] * len(a)
                forces = -torch.autograd.grad(energy, pos, create_graph=True)[0][0]
                ref_f = torch.tensor(a.get_forces(), dtype=torch.float32, device=device)
                loss = (energy - a.get_potential_energy()) ** 2 + cfg.l0_A2 / len(a) * ((forces - ref_f) ** 2).sum()
                loss.backward()
            opt_m.step()

    theirs(batches[0][:1])  # warm-up
    synchronize(device)
    t0 = time.perf_counter()
    for idx in batches[1:]:
        theirs(idx)
    synchronize(device)
    t_theirs = time.perf_counter() - t0

    n_frames = args.batch * args.steps
    print(f"{'':<34}{'frames/s':>10}{'wall s':>10}")
    print(f"{'potforge, 8 members together':<34}{n_frames / t_ours:>10.2f}{t_ours:>10.1f}")
    print(f"{'TorchANI, 8 members one by one':<34}{n_frames / t_theirs:>10.2f}{t_theirs:>10.1f}")
    print(f"speed-up: {t_theirs / t_ours:.1f}x")
    if not args.no_baseline:
        from baseline import rate_at

        cli = ["--frames", str(args.frames), "--steps", str(args.steps), "--threads", str(args.threads),
               "--device", args.device]  # fmt: skip
        rate = rate_at(args.baseline, "train_speed.py", cli, r"potforge, 8 members together\s+([\d.]+)")
        if rate is not None:
            print(f"{f'potforge at {args.baseline} (same run)':<34}{rate:>10.2f}")
            print(f"speed-up over {args.baseline}: {n_frames / t_ours / rate:.2f}x")
    if args.memory:
        memory_table(args.threads, args.device)


if __name__ == "__main__":
    main()
