"""Physics of the MD engine against independent values: the harmonic oscillator's exact
canonical moments, the configurational temperature of an EMT crystal, and ASE's MTK barostat."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from potforge import md
from potforge.md.state import ACCEL, KB

#: tolerance of every statistical check, in standard errors (block averages)
N_SE = 4.0


def block_mean_sem(series: np.ndarray, n_blocks: int = 20) -> tuple[float, float]:
    """Mean and standard error of a correlated series from ``n_blocks`` block averages."""
    blocks = np.array([b.mean() for b in np.array_split(np.asarray(series, float), n_blocks)])
    return float(blocks.mean()), float(blocks.std(ddof=1) / math.sqrt(n_blocks))


class Harmonic:
    """Independent 3-D oscillators tethered to their start: U = k/2 Σ|r − r0|², F = −k (r − r0)."""

    cutoff_A = None
    skin_A = 0.0

    def __init__(self, anchors: torch.Tensor, k_eV_A2: float) -> None:
        self.anchors, self.k = anchors, k_eV_A2

    def __call__(self, state, *, stress=False, members=()):
        d = state.positions - self.anchors
        e = 0.5 * self.k * torch.zeros(state.n_systems, dtype=torch.float64).index_add(0, state.system, (d**2).sum(1))
        return md.Forces(e, -self.k * d, torch.zeros(state.n_systems, 3, 3, dtype=state.dtype) if stress else None)


def test_baoab_samples_the_harmonic_oscillators_canonical_distribution():
    """⟨x²⟩ = kT/k per component (BAOAB is exact in configuration for harmonic forces) and
    Maxwell–Boltzmann velocities: ⟨v²⟩ = kT/m and ⟨v⁴⟩ = 3 (kT/m)², at two temperatures at once."""
    n, k_spring, temps = 400, 1.0, (300.0, 900.0)
    frames = [Atoms("Al" * n, positions=np.zeros((n, 3)), cell=[50.0] * 3, pbc=True) for _ in temps]
    drives = [md.Drive.of(t) for t in temps]
    anchors = torch.zeros(2 * n, 3, dtype=torch.float64)
    prov = Harmonic(anchors, k_spring)
    state = md.init(frames, drives, [11, 12], prov)
    integ = md.Langevin(timestep_fs=2.0, friction_per_fs=0.02)
    state = md.run(state, prov, integ, 500)  # equilibrate (50 friction times)
    x2, v2, v4 = ([[] for _ in temps] for _ in range(3))

    def sample(step, st):
        v = st.velocities
        for b in range(2):
            sl = st.system_atoms(b)
            x2[b].append(float((st.positions[sl] ** 2).mean()))
            v2[b].append(float((v[sl] ** 2).mean()))
            v4[b].append(float((v[sl] ** 4).mean()))

    md.run(state, prov, integ, 6000, every=10, callback=sample)
    m = float(frames[0].get_masses()[0])
    for b, t in enumerate(temps):
        kt = KB * t
        mean, sem = block_mean_sem(np.array(x2[b]))
        assert abs(mean - kt / k_spring) < N_SE * sem, (t, mean, kt / k_spring, sem)
        sigma2 = kt * ACCEL / m  # (Å/fs)²
        mean, sem = block_mean_sem(np.array(v2[b]))
        # BAOAB's kinetic temperature carries an O((ω dt)²) bias: ω dt = 0.04 here, 4e-4 relative
        assert abs(mean - sigma2) < N_SE * sem + 1e-3 * sigma2, (t, mean, sigma2, sem)
        mean, sem = block_mean_sem(np.array(v4[b]))
        assert abs(mean - 3 * sigma2**2) < N_SE * sem + 2e-3 * sigma2**2, (t, mean, 3 * sigma2**2, sem)
        assert sem < 0.02 * sigma2 * 3 * sigma2  # the check has resolving power


def _emt_forces(atoms: Atoms) -> np.ndarray:
    work = atoms.copy()
    work.calc = EMT()
    return work.get_forces()


@pytest.mark.slow
def test_configurational_temperature_of_an_emt_crystal_equals_the_target():
    """T_conf = ⟨|∇U|²⟩ / (k_B ⟨∇²U⟩) measures temperature from positions alone (no momenta);
    the Laplacian by finite differences of EMT forces along random ±1 directions (Hutchinson)."""
    target = 400.0
    atoms = bulk("Al", "fcc", a=4.03, cubic=True).repeat(2)
    prov = md.CalculatorForces(lambda a, d: EMT())
    state = md.init([atoms], [md.Drive.of(target)], [5], prov)
    integ = md.Langevin(timestep_fs=2.0, friction_per_fs=0.01)
    state = md.run(state, prov, integ, 300)
    rng = np.random.default_rng(0)
    num, den = [], []
    h = 1e-3

    def sample(step, st):
        a = st.to_atoms(0, wrap=False)
        f = st.forces.double().numpy()
        z = rng.choice([-1.0, 1.0], size=f.shape)
        plus, minus = a.copy(), a.copy()
        plus.positions += h * z
        minus.positions -= h * z
        lap = -float((z * (_emt_forces(plus) - _emt_forces(minus))).sum()) / (2 * h)
        num.append(float((f**2).sum()))
        den.append(lap)

    md.run(state, prov, integ, 2500, every=10, callback=sample)
    num, den = np.array(num), np.array(den)
    t_conf = num.mean() / (KB * den.mean())
    # standard error of the ratio from block averages (delta method on the blocks' ratios)
    blocks = [n.mean() / (KB * d.mean()) for n, d in zip(np.array_split(num, 10), np.array_split(den, 10), strict=True)]
    sem = float(np.std(blocks, ddof=1) / math.sqrt(len(blocks)))
    assert abs(t_conf - target) < N_SE * sem, (t_conf, target, sem)
    assert sem < 0.05 * target


@pytest.mark.slow
def test_npt_volume_of_emt_fcc_agrees_with_ase_mtk():
    """Mean volume of EMT fcc at 300 K and 0 GPa: stochastic cell rescaling vs ASE's
    isotropic MTK barostat (Nosé–Hoover chains), an independent algorithm for the same ensemble."""
    from ase import units
    from ase.md.nose_hoover_chain import IsotropicMTKNPT
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    temp, reps, n_steps = 300.0, 3, 12000
    start = bulk("Al", "fcc", a=4.00, cubic=True).repeat(reps)
    prov = md.CalculatorForces(lambda a, d: EMT())
    state = md.init([start], [md.Drive.of(temp, pressure_GPa=0.0)], [21], prov)
    integ = md.Langevin(timestep_fs=2.0, friction_per_fs=0.01, barostat_tau_fs=500.0, barostat_every=5)
    state = md.run(state, prov, integ, 1500)
    ours: list[float] = []
    md.run(state, prov, integ, n_steps, every=10, callback=lambda k, st: ours.append(float(st.volumes()[0])))

    atoms = start.copy()
    atoms.calc = EMT()
    MaxwellBoltzmannDistribution(atoms, temperature_K=temp, rng=np.random.default_rng(22))
    dyn = IsotropicMTKNPT(atoms, timestep=2.0 * units.fs, temperature_K=temp, pressure_au=0.0,
                          tdamp=100 * units.fs, pdamp=1000 * units.fs)  # fmt: skip
    dyn.run(1500)
    theirs: list[float] = []
    for _ in range(n_steps // 10):
        dyn.run(10)
        theirs.append(atoms.get_volume())
    n = len(start)
    m1, s1 = block_mean_sem(np.array(ours) / n, 10)
    m2, s2 = block_mean_sem(np.array(theirs) / n, 10)
    assert abs(m1 - m2) < N_SE * math.hypot(s1, s2), (m1, s1, m2, s2)
    assert 15.9 < m1 < 16.6  # EMT: 15.93 Å³/atom at 0 K, thermal expansion adds ~1-2 %
