"""MD of the dynamic benchmarks on the one engine: barostat, held atoms, forks, the batched model
path agreeing with the ASE-calculator path, and blow-ups reported as benchmark errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

from potforge import md
from potforge.validate.core import BenchmarkError
from potforge.validate.trajectories import fork, run, start

EMT_FORCES = md.CalculatorForces(lambda atoms, directory: EMT())


def fcc(n: int = 2, a: float = 4.05):
    return bulk("Al", "fcc", a=a, cubic=True).repeat(n)


def test_barostat_relaxes_a_compressed_crystal_to_zero_pressure():
    st = start(fcc(2, a=3.85), EMT_FORCES, 300.0, 2, pressure_GPa=0.0)
    p0 = float(st.pressure_GPa()[0])
    pressures, volumes = [], []

    def sample(k, s):
        pressures.append(float(s.pressure_GPa()[0]))
        volumes.append(float(s.volumes()[0]) / s.n_atoms)

    integ = md.Langevin(2.0, 0.01, 100.0, barostat_every=5)
    run(st, EMT_FORCES, integ, 500, every=5, callback=sample)
    assert p0 > 3.0  # started well compressed
    assert np.mean(pressures[-50:]) == pytest.approx(0.0, abs=0.7)  # 32 atoms: P fluctuates by ~1 GPa
    # EMT's fcc volume is 15.93 Å³/atom at 0 K (a0 = 3.994 Å); thermal expansion at 300 K adds ~1 %
    assert 15.8 < np.mean(volumes[-50:]) < 16.5


def test_held_atoms_do_not_move_and_the_rest_does():
    atoms = fcc(2)
    fixed = atoms.positions[:, 2] < 4.0
    st = start(atoms, EMT_FORCES, 900.0, 3, pressure_GPa=0.0, barostat="z", fixed=fixed)
    begin = st.positions.clone()
    st = run(st, EMT_FORCES, md.Langevin(2.0, 0.01, 200.0, barostat_every=5), 40)
    held = torch.as_tensor(fixed)
    assert float((st.positions[held] - begin[held]).abs().max()) < 1e-9
    assert float((st.positions[~held] - begin[~held]).abs().max()) > 0.05
    assert bool((st.momenta[held] == 0).all())
    other = fork(st, 0, 300.0, 4, fixed=None)
    assert not bool(other.fixed.any()) and bool(st.fixed.any()) and int(other.uids[0]) != int(st.uids[0])


def test_batched_model_forces_match_the_ase_calculator(ani_al32):
    from potforge.model import Calculator

    frames = [fcc(2), fcc(3)]
    for a, seed in zip(frames, (5, 6), strict=True):
        a.rattle(0.08, seed=seed)
    drives = [md.Drive.of(300.0, pressure_GPa=0.0)] * 2
    batched = md.init(frames, drives, [1, 2], md.EnsembleForces(ani_al32))
    calculators = md.CalculatorForces(lambda a, d: Calculator(ani_al32, dtype=torch.float32, uncertainty=False))
    one_by_one = md.init(frames, drives, [1, 2], calculators)
    np.testing.assert_allclose(batched.energy.numpy(), one_by_one.energy.numpy(), atol=1e-3)
    np.testing.assert_allclose(batched.forces.numpy(), one_by_one.forces.numpy(), atol=1e-4)
    np.testing.assert_allclose(batched.stress.numpy(), one_by_one.stress.numpy(), atol=1e-5)


def test_exploding_trajectory_is_a_benchmark_error():
    atoms = fcc(2)
    atoms.positions[1] = atoms.positions[0] + [0.3, 0.0, 0.0]  # two atoms on top of each other
    with pytest.raises(BenchmarkError, match="unstable"):
        st = start(atoms, EMT_FORCES, 300.0, 7)
        run(st, EMT_FORCES, md.Langevin(1.0), 5, label="crushed")


def test_full_barostat_relaxes_a_sheared_crystal_to_a_hydrostatic_state():
    """An fcc crystal held in a sheared cell carries shear stress; the fully flexible barostat
    lets the cell shear back until the pressure tensor is hydrostatic (the isotropic and per-axis
    modes cannot: they never change the cell's angles)."""
    atoms = fcc(2, a=3.99)
    cell = atoms.cell.array.copy()
    atoms.set_cell(cell @ np.array([[1, 0.06, 0], [0, 1, 0], [0, 0, 1]]), scale_atoms=True)
    st = start(atoms, EMT_FORCES, 200.0, 5, pressure_GPa=0.0, barostat="full")
    shear0 = abs(float(st.pressure_tensor()[0, 0, 1])) / 0.00624150913
    integ = md.Langevin(2.0, 0.01, 100.0, barostat_every=5)
    shears, angles = [], []

    def sample(k, s):
        shears.append(float(s.pressure_tensor()[0, 0, 1]) / 0.00624150913)  # GPa
        c = s.cells[0].double()
        angles.append(float(torch.dot(c[0], c[1]) / (c[0].norm() * c[1].norm())))

    run(st, EMT_FORCES, integ, 600, every=5, callback=sample)
    assert shear0 > 1.0  # started with more than 1 GPa of shear stress
    assert abs(np.mean(shears[-40:])) < 0.3 * shear0
    assert abs(np.mean(angles[-40:])) < abs(angles[0])  # the cell sheared back towards cubic
