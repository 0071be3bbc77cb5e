"""Integrators as pure functions of the state: Langevin BAOAB (NVT) and, per system, stochastic
cell rescaling (NPT) or a prescribed strain.

Atoms: BAOAB (Leimkuhler & Matthews, Appl. Math. Res. Express 2013): half kick, half drift,
an exact Ornstein–Uhlenbeck step of the momenta at the target T(t + dt/2), half drift, new
forces, half kick. Its configurational sampling is exact to second order in dt for any friction.

Cell (systems whose drive has a pressure): stochastic cell rescaling (Bernetti & Bussi, J. Chem.
Phys. 153, 114107 (2020)) every ``barostat_every`` steps, with ε = ln V (``iso``) or ln L_a per
Cartesian axis (``aniso``; ``z``: that axis alone), or a symmetric strain of the whole cell
(``full``, shear included: each pressure-tensor component drives its own strain component):

    dε = (β/τ)(P − P₀ + kT/V) dt + sqrt(2 kT β dt / (V τ)) ξ     (per axis: β/3τ and 3Vτ),

positions of the moving atoms and the cell scaled along the axes, momenta inversely. It samples
the isothermal–isobaric ensemble. Systems with a strain drive get cell(t) = cell_ref F(t)
instead, atoms carried affinely. Held atoms (``fixed``) never move.

Every random number comes from the system's own counter-based stream (:mod:`potforge.md.noise`),
so a step is a deterministic function of the state: a checkpoint continues exactly, and a
system's path never depends on which others share the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from potforge.md import noise
from potforge.md.forces import ForceProvider, Forces, check_forces
from potforge.md.neighbors import refresh
from potforge.md.schedules import Drive
from potforge.md.state import ACCEL, GPA, KB, MDState, from_atoms, row_times


@dataclass(frozen=True)
class Langevin:
    """Time step (fs) and friction γ (1/fs; the relaxation time of the momenta is 1/γ), and the
    barostat of systems driven at a pressure: relaxation time (fs), a compressibility guess
    (1/GPa; it sets the barostat's response, not the result) and the steps between rescalings."""

    timestep_fs: float = 1.0
    friction_per_fs: float = 0.01
    barostat_tau_fs: float = 1000.0
    compressibility_per_GPa: float = 1.0 / 50.0
    barostat_every: int = 10

    def __post_init__(self) -> None:
        if self.timestep_fs <= 0 or self.friction_per_fs <= 0 or self.barostat_tau_fs <= 0:
            raise ValueError("time step, friction and barostat time must be positive")
        if self.barostat_every < 1:
            raise ValueError("barostat_every must be at least 1")


def _per_atom(state: MDState, per_system: torch.Tensor) -> torch.Tensor:
    return per_system.to(state.dtype)[state.system]


def _moving(state: MDState) -> torch.Tensor:
    return (~state.fixed).to(state.dtype)[:, None]


def _needs_stress(state: MDState) -> bool:
    return any(d.pressure_GPa is not None for d in state.drives)


def thermalize(state: MDState, temperature_K: torch.Tensor | Sequence[float] | None = None) -> MDState:
    """Fresh Maxwell–Boltzmann momenta at ``temperature_K`` (B,) (default: each system's T(t)),
    without centre-of-mass drift; held atoms at rest. Drawn from the systems' streams at their
    current step, so thermalising is reproducible too."""
    temps = state.target_temperature_K() if temperature_K is None else torch.as_tensor(temperature_K).double()
    counts = state.counts()
    xi = noise.normal(state.keys, state.steps, counts, 3, noise.VELOCITIES, state.dtype)
    sigma = torch.sqrt(state.masses * KB * _per_atom(state, temps.clamp(min=0.0)) * ACCEL)
    p = xi * sigma[:, None] * _moving(state)
    # remove each system's drift (over its moving atoms)
    moving = _moving(state)[:, 0]
    mass = torch.zeros(state.n_systems, dtype=state.dtype).index_add(0, state.system, state.masses * moving)
    total = torch.zeros(state.n_systems, 3, dtype=state.dtype).index_add(0, state.system, p)
    p = (p - state.masses[:, None] * (total / mass.clamp(min=1e-30)[:, None])[state.system]) * _moving(state)
    return state.replace(momenta=p)


def evaluate(
    state: MDState, provider: ForceProvider, *, members: Sequence[int] = (), stress: bool | None = None
) -> tuple[MDState, Forces]:
    """Forces of ``state`` (neighbour lists refreshed first); the returned state carries them,
    and the stress when computed (``stress`` None: where a system is driven at a pressure; a
    state keeps its last stress otherwise). Raises
    :class:`~potforge.md.neighbors.UnstableSystems` for systems that cannot go on."""
    if provider.cutoff_A is not None:
        state = refresh(state, provider.cutoff_A, provider.skin_A)
    want_stress = _needs_stress(state) if stress is None else stress
    forces = provider(state, stress=want_stress, members=members)
    check_forces(state, forces)
    stress_t = forces.stress if forces.stress is not None else state.stress
    return state.replace(forces=forces.forces, energy=forces.energy, stress=stress_t), forces


def init(
    frames: Sequence[Atoms],
    drives: Sequence[Drive],
    keys: Sequence[int],
    provider: ForceProvider,
    *,
    dtype: torch.dtype = torch.float64,
    uids: Sequence[int] | None = None,
    fixed: Sequence[np.ndarray | None] | None = None,
) -> MDState:
    """A state of ``frames`` with Maxwell–Boltzmann momenta at each drive's T(0) and its forces."""
    state = thermalize(from_atoms(frames, drives, keys, dtype=dtype, uids=uids, fixed=fixed))
    return evaluate(state, provider)[0]


def _strain_cells(state: MDState, t_new: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    cells = state.cells.clone()
    strained = []
    for b, d in enumerate(state.drives):
        if d.strain is not None:
            f = torch.as_tensor(d.strain.deformation(float(t_new[b])), dtype=state.dtype)
            cells[b] = state.ref_cells[b] @ f
            strained.append(b)
    return cells, strained


def _rescale(state: MDState, integ: Langevin, systems: list[int]) -> MDState:
    """One stochastic cell-rescaling step (length barostat_every × dt) of ``systems``."""
    dt = integ.barostat_every * integ.timestep_fs
    tau = integ.barostat_tau_fs
    beta = integ.compressibility_per_GPa / GPA  # Å³/eV
    ptens = state.pressure_tensor()
    vols = state.volumes()
    xi = noise.normal(state.keys, state.steps, torch.ones(state.n_systems, dtype=torch.long), 6, noise.BAROSTAT,
                      torch.float64)  # fmt: skip
    deform = torch.eye(3, dtype=state.dtype).repeat(state.n_systems, 1, 1)
    for b in systems:
        d = state.drives[b]
        temp = max(d.temperature_K(float(state.time_fs[b])), 1.0)
        p0 = d.pressure_GPa(float(state.time_fs[b])) * GPA
        vol = float(vols[b])
        kt_v = KB * temp / vol
        if d.barostat == "iso":
            d_lnv = beta / tau * (float(torch.trace(ptens[b])) / 3 - p0 + kt_v) * dt
            d_lnv += math.sqrt(2 * KB * temp * beta * dt / (vol * tau)) * float(xi[b, 0])
            deform[b] = torch.eye(3, dtype=state.dtype) * math.exp(d_lnv / 3)
        elif d.barostat == "full":
            # a symmetric strain increment (no rotation): every component of the pressure tensor
            # drives its own; the noise has the per-axis variance on the diagonal, half of it off
            eps = beta / (3 * tau) * (ptens[b].double() - (p0 - kt_v) * torch.eye(3, dtype=torch.float64)) * dt
            z = xi[b]
            noise_m = torch.tensor([[z[0], z[3] / math.sqrt(2), z[4] / math.sqrt(2)],
                                    [z[3] / math.sqrt(2), z[1], z[5] / math.sqrt(2)],
                                    [z[4] / math.sqrt(2), z[5] / math.sqrt(2), z[2]]], dtype=torch.float64)  # fmt: skip
            eps = eps + math.sqrt(2 * KB * temp * beta * dt / (3 * vol * tau)) * noise_m
            deform[b] = torch.linalg.matrix_exp(0.5 * (eps + eps.T)).to(state.dtype)
        else:
            for a in (0, 1, 2) if d.barostat == "aniso" else (2,):
                da = beta / (3 * tau) * (float(ptens[b, a, a]) - p0 + kt_v) * dt
                da += math.sqrt(2 * KB * temp * beta * dt / (3 * vol * tau)) * float(xi[b, a])
                deform[b, a, a] = math.exp(da)
    moving = _moving(state)
    # deform the cell rows and the moving atoms' positions alike (r -> r S), momenta inversely
    # (p -> p S⁻¹); held atoms (a crystal block) keep their positions
    positions = state.apply_per_system(state.positions, deform, systems)
    positions = moving * positions + (1 - moving) * state.positions
    momenta = state.apply_per_system(state.momenta, torch.linalg.inv(deform), systems) * moving
    chosen = state.system_mask(systems)[:, None, None]
    cells = torch.where(chosen, row_times(state.cells, deform[:, None]), state.cells)  # cells[b] @ deform[b]
    return state.replace(cells=cells, positions=positions, momenta=momenta)


def step(
    state: MDState,
    provider: ForceProvider,
    integ: Langevin,
    *,
    members: Sequence[int] = (),
    stress: bool | None = None,
) -> tuple[MDState, Forces]:
    """One BAOAB step of every system (plus its cell move); ``members``: systems whose member
    forces (ensemble spread) the new forces should include; ``stress``: compute the virial stress
    (None: only where the barostat will use it at the next step; True: always, e.g. to watch the
    pressure). Raises
    :class:`~potforge.md.neighbors.UnstableSystems` naming the systems that blew up; the step
    is a pure function, so the caller may drop them and repeat it for the others."""
    dt = integ.timestep_fs
    moving = _moving(state)
    inv_m = 1.0 / state.masses[:, None]
    p = state.momenta + 0.5 * dt * ACCEL * state.forces * moving
    r = state.positions + 0.5 * dt * p * inv_m
    t_half = state.time_fs + 0.5 * dt
    c1 = math.exp(-integ.friction_per_fs * dt)
    temps = state.target_temperature_K(t_half).clamp(min=0.0)
    sigma = torch.sqrt((1 - c1 * c1) * state.masses * KB * _per_atom(state, temps) * ACCEL)
    xi = noise.normal(state.keys, state.steps, state.counts(), 3, noise.THERMOSTAT, state.dtype)
    p = (c1 * p + sigma[:, None] * xi) * moving
    r = r + 0.5 * dt * p * inv_m
    t_new = state.time_fs + dt
    steps = state.steps + 1
    state = state.replace(positions=r, momenta=p, time_fs=t_new, steps=steps)
    cells, strained = _strain_cells(state, t_new)
    if strained:
        # affine: atoms keep their fractional coordinates as the cell deforms
        a = torch.linalg.solve(state.cells, cells)
        state = state.replace(positions=state.apply_per_system(state.positions, a, strained), cells=cells)
    every = integ.barostat_every
    npt = [b for b, d in enumerate(state.drives) if d.pressure_GPa is not None and int(steps[b]) % every == 0]
    if npt:
        state = _rescale(state, integ, npt)
    if stress is None:  # the next step rescales these systems' cells from this stress
        stress = any(d.pressure_GPa is not None and (int(steps[b]) + 1) % every == 0
                     for b, d in enumerate(state.drives))  # fmt: skip
    state, forces = evaluate(state, provider, members=members, stress=stress)
    p = state.momenta + 0.5 * dt * ACCEL * state.forces * moving
    return state.replace(momenta=p), forces


def run(
    state: MDState,
    provider: ForceProvider,
    integ: Langevin,
    n_steps: int,
    *,
    every: int = 0,
    callback: Callable[[int, MDState], None] | None = None,
    stop: Callable[[int, MDState, Forces], Sequence[int]] | None = None,
    spread: bool = False,
    stress: bool | None = None,
    progress: Callable[[int], None] | None = None,
) -> MDState:
    """``n_steps`` steps of every system. Every ``every`` steps: ``callback(step, state)``, then
    the stop hook ``stop(step, state, forces)``, which names the systems to take out of the run
    (the others go on unchanged; the hook may keep what it needs of the stopped ones). With
    ``spread`` those steps' forces include every member's (``forces.spread``) for all systems;
    ``stress`` as for :func:`step`.
    Raises :class:`~potforge.md.neighbors.UnstableSystems` when a system blows up."""
    for k in range(1, n_steps + 1):
        due = bool(every) and k % every == 0
        members = range(state.n_systems) if due and spread else ()
        state, forces = step(state, provider, integ, members=members, stress=stress)
        if progress is not None:
            progress(1)
        if not due:
            continue
        if callback is not None:
            callback(k, state)
        if stop is not None:
            out = set(int(b) for b in stop(k, state, forces))
            if out:
                state = state.select([b for b in range(state.n_systems) if b not in out])
                if state.n_systems == 0:
                    return state
    return state
