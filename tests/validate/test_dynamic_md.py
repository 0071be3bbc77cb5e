"""The MD engine of the dynamic benchmarks: thermostat, barostat, held atoms, and the batched
model path agreeing with the ASE-calculator path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

from potforge.validate.core import BenchmarkError
from potforge.validate.dynamics import (
    CalculatorForces,
    Integrator,
    ModelForces,
    clone_state,
    new_state,
    run_md,
)

EMT_FORCES = CalculatorForces(lambda atoms, directory: EMT())


def fcc(n: int = 2, a: float = 4.05):
    return bulk("Al", "fcc", a=a, cubic=True).repeat(n)


def test_langevin_holds_the_target_temperature():
    st = new_state(fcc(2), 600.0, 1)
    temps = []
    run_md(
        [st], EMT_FORCES, 400, Integrator(2.0, 50.0), every=5, callback=lambda k, s: temps.append(s[0].temperature())
    )
    # 32 atoms: the kinetic temperature fluctuates by ~T·sqrt(2/3N) ≈ 0.14 T per sample
    assert np.mean(temps[10:]) == pytest.approx(600.0, rel=0.1)


def test_barostat_relaxes_a_compressed_crystal_to_zero_pressure():
    st = new_state(fcc(2, a=3.85), 300.0, 2, pressure_GPa=0.0)
    run_md([st], EMT_FORCES, 1, Integrator(2.0))
    p0 = st.pressure_GPa_now()
    pressures, volumes = [], []

    def sample(k, s):
        pressures.append(s[0].pressure_GPa_now())
        volumes.append(s[0].volume / s[0].n_atoms)

    run_md([st], EMT_FORCES, 500, Integrator(2.0, 100.0, 100.0, barostat_every=5), every=5, callback=sample)
    assert p0 > 3.0  # started well compressed
    assert np.mean(pressures[-50:]) == pytest.approx(0.0, abs=0.7)  # 32 atoms: P fluctuates by ~1 GPa
    # EMT's fcc volume is 15.93 Å³/atom at 0 K (a0 = 3.994 Å); thermal expansion at 300 K adds ~1 %
    assert 15.8 < np.mean(volumes[-50:]) < 16.5


def test_held_atoms_do_not_move_and_the_rest_does():
    atoms = fcc(2)
    fixed = atoms.positions[:, 2] < 4.0
    st = new_state(atoms, 900.0, 3, fixed=fixed, pressure_GPa=0.0, barostat="z")
    start = st.positions.copy()
    run_md([st], EMT_FORCES, 40, Integrator(2.0, 100.0, 200.0, barostat_every=5))
    assert np.abs(st.positions[fixed] - start[fixed]).max() < 1e-9  # (wrapping rounds at 1e-15)
    assert np.abs(st.positions[~fixed] - start[~fixed]).max() > 0.05
    assert np.all(st.velocities[fixed] == 0.0)
    other = clone_state(st, 300.0, 4, fixed=None)
    assert other.positions is not st.positions and other.fixed is None and st.fixed is not None


def test_batched_model_forces_match_the_ase_calculator(ani_al32):
    from potforge.model import Calculator

    frames = [fcc(2), fcc(3)]
    for a, seed in zip(frames, (5, 6), strict=True):
        a.rattle(0.08, seed=seed)
    states = [new_state(a, 300.0, k) for k, a in enumerate(frames)]
    ModelForces(ani_al32)(states)
    ase_states = [clone_state(s, 300.0, 0) for s in states]
    CalculatorForces(lambda atoms, d: Calculator(ani_al32, dtype=torch.float32, uncertainty=False))(ase_states)
    for s, r in zip(states, ase_states, strict=True):
        assert s.energy == pytest.approx(r.energy, abs=1e-3)
        assert np.abs(s.forces - r.forces).max() < 1e-4
        assert np.abs(s.stress - r.stress).max() < 1e-5
    assert ani_al32.dtype == torch.float32  # the evaluator's model is copied, never converted


def test_exploding_trajectory_is_a_benchmark_error():
    atoms = fcc(2)
    atoms.positions[1] = atoms.positions[0] + [0.3, 0.0, 0.0]  # two atoms on top of each other
    with pytest.raises(BenchmarkError, match="unstable"):
        run_md([new_state(atoms, 300.0, 7, label="crushed")], EMT_FORCES, 5, Integrator(1.0))
