"""The MD engine's behaviour: reused neighbour lists give the forces of fresh ones, a checkpoint
resumes bit for bit, systems are independent of their batch, stop hooks, oracle forces."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

from potforge import md
from potforge.model.calculator import atoms_to_batch
from potforge.structures import RandomCellSpec, random_cell

SMALL = RandomCellSpec(box_min_A=6.5, box_max_A=8.0, density_min_g_cm3=2.3, density_max_g_cm3=2.8)


def _frames(n: int, seed: int = 3):
    return [random_cell(SMALL, np.random.default_rng([seed, k])) for k in range(n)]


def _drives():
    """NVT on an Eq. 2 schedule, NPT on a pressure schedule, and a strained cell."""
    return [
        md.Drive.of(md.TemperatureSchedule(600, 300, 200, 400, 5000)),
        md.Drive.of(500.0, pressure_GPa=md.PiecewiseLinear((0.0, 100.0), (0.0, 2.0))),
        md.Drive.of(700.0, strain=md.StrainSchedule(0.04, 0.05, 300.0, (0, 2))),
    ]


INTEG = md.Langevin(timestep_fs=2.0, friction_per_fs=0.02, barostat_tau_fs=200.0, barostat_every=3)


def _start(model, skin=0.6):
    prov = md.EnsembleForces(model, skin_A=skin)
    return md.init(_frames(3), _drives(), [md.stream_key(7, k) for k in range(3)], prov), prov


def test_reused_neighbour_lists_give_the_forces_of_fresh_ones(ani_al64):
    """Along NVT, NPT and strained trajectories the skin criterion keeps every pair inside the
    cutoff listed: forces, energies and stress equal a from-scratch evaluation of each step."""
    state, prov = _start(ani_al64, skin=0.3)
    versions = []
    for _ in range(60):
        state, forces = md.step(state, prov, INTEG)
        frames = [state.to_atoms(b, wrap=False) for b in range(state.n_systems)]
        fresh = ani_al64.evaluate(atoms_to_batch(frames, ani_al64), forces=True, stress=True)
        torch.testing.assert_close(forces.energy, fresh.energy, rtol=0, atol=1e-9)
        torch.testing.assert_close(forces.forces, fresh.forces, rtol=0, atol=1e-9)
        versions.append(state.nl_version.clone())
    rebuilt = torch.stack(versions).diff(dim=0).sum(0)
    assert (rebuilt > 0).all() and (rebuilt < 59).all()  # lists were both reused and rebuilt


def test_a_checkpointed_state_resumes_bit_for_bit(ani_al64, tmp_path):
    """Kill after 25 steps (only the checkpoint survives: a new provider, no neighbour cache),
    resume: 40 more steps equal an uninterrupted run exactly, in float64."""
    state, prov = _start(ani_al64)
    straight = state
    for _ in range(65):
        straight, _ = md.step(straight, prov, INTEG)
    for _ in range(25):
        state, _ = md.step(state, prov, INTEG)
    buffer = io.BytesIO()
    torch.save(md.state_to_dict(state), buffer)
    buffer.seek(0)
    resumed = md.state_from_dict(torch.load(buffer, weights_only=True))
    fresh = md.EnsembleForces(ani_al64, skin_A=0.6)
    for _ in range(40):
        resumed, _ = md.step(resumed, fresh, INTEG)
    for name in ("positions", "momenta", "cells", "forces", "time_fs", "nl_version"):
        assert torch.equal(getattr(resumed, name), getattr(straight, name)), name
    assert resumed.drives == straight.drives


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_system_leaving_the_batch_leaves_the_others_paths_unchanged(dtype, ani_al64, ani_al32):
    model = ani_al64 if dtype == torch.float64 else ani_al32
    prov = md.EnsembleForces(model, skin_A=0.6)
    start = md.init(_frames(3), _drives(), [md.stream_key(8, k) for k in range(3)], prov, dtype=dtype)
    together, fewer = start, start
    for k in range(100):
        if k == 10:
            fewer = fewer.select([0, 2])  # system 1 stops after 10 steps
        together, _ = md.step(together, prov, INTEG)
        fewer, _ = md.step(fewer, prov, INTEG)
    for b_all, b_few in ((0, 0), (2, 1)):
        a, b = together.positions[together.system_atoms(b_all)], fewer.positions[fewer.system_atoms(b_few)]
        if dtype == torch.float64:
            assert torch.equal(a, b)
        else:
            assert float((a - b).abs().max()) < 1e-6


def test_stop_hook_takes_systems_out_and_sees_their_spread(ani_al32):
    prov = md.EnsembleForces(ani_al32)
    state = md.init(_frames(3), [md.Drive.of(400.0)] * 3, [1, 2, 3], prov, dtype=torch.float32)
    seen = []

    def stop(step, st, forces):
        measures = forces.spread.measures(st.counts())
        seen.append((step, st.uids.tolist(), measures["force_max_eV_per_A"].tolist()))
        return [0] if step == 10 else []

    out = md.run(state, prov, md.Langevin(1.0), 30, every=10, stop=stop, spread=True)
    assert out.uids.tolist() == [1, 2]
    assert [s[1] for s in seen] == [[0, 1, 2], [1, 2], [1, 2]]
    assert all(v > 0 for s in seen for v in s[2])


def test_oracle_forces_come_from_an_isolated_process_with_a_timeout(tmp_path):
    from potforge.oracle import OracleTimeout, get_oracle

    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    with md.OracleForces(get_oracle("emt"), tmp_path / "emt") as prov:
        state = md.init([atoms], [md.Drive.of(300.0)], [4], prov)
        state = md.run(state, prov, md.Langevin(2.0), 5)
        work = state.to_atoms(0, wrap=False)
        work.calc = EMT()
        np.testing.assert_allclose(state.forces.numpy(), work.get_forces(), atol=1e-12)
        assert prov.session.n_calculations == 6
        assert prov.session._proc is not None and prov.session._proc.pid != 0
    hang = get_oracle("python:potforge.oracle.fake:FaultyEMT", {"mode": "hang"})
    with md.OracleForces(hang, tmp_path / "hang", timeout_s=2.0) as prov, pytest.raises(OracleTimeout):
        md.init([atoms], [md.Drive.of(300.0)], [4], prov)


def test_a_blown_up_system_is_named(ani_al64):
    frames = _frames(2)
    crushed = frames[1].copy()
    crushed.positions[1] = crushed.positions[0] + [1e-4, 0, 0]
    prov = md.EnsembleForces(ani_al64)
    with pytest.raises(md.UnstableSystems) as err:
        md.init([frames[0], crushed], [md.Drive.of(300.0)] * 2, [1, 2], prov)
    assert list(err.value.reasons) == [1]


def test_a_system_driven_by_one_member_moves_on_that_members_forces(ani_al64, tmp_path):
    """Drives naming a member: those systems get that member's forces and stress, the others the
    mean, in one batched call; the member survives a checkpoint."""
    import dataclasses

    drives = _drives()
    drives[0] = dataclasses.replace(drives[0], member=5)
    drives[1] = dataclasses.replace(drives[1], member=2)
    prov = md.EnsembleForces(ani_al64, skin_A=0.5)
    state = md.init(_frames(3), drives, [md.stream_key(7, k) for k in range(3)], prov)
    for _ in range(5):
        state, forces = md.step(state, prov, INTEG, members=[0, 2])
    frames = [state.to_atoms(b, wrap=False) for b in range(3)]
    ref = ani_al64.evaluate(atoms_to_batch(frames, ani_al64), member_forces=True, stress=True)
    forces = prov(state, stress=True)
    sl = [state.system_atoms(b) for b in range(3)]
    torch.testing.assert_close(forces.forces[sl[0]], ref.member_forces[5, sl[0]], rtol=0, atol=1e-9)
    torch.testing.assert_close(forces.forces[sl[1]], ref.member_forces[2, sl[1]], rtol=0, atol=1e-9)
    torch.testing.assert_close(forces.forces[sl[2]], ref.forces[sl[2]], rtol=0, atol=1e-9)
    torch.testing.assert_close(forces.stress[1], ref.member_stress[2, 1], rtol=0, atol=1e-12)
    torch.testing.assert_close(forces.energy[0], ref.member_energies[5, 0].double(), rtol=0, atol=1e-9)
    buf = io.BytesIO()
    torch.save(md.state_to_dict(state), buf)
    buf.seek(0)
    back = md.state_from_dict(torch.load(buf, weights_only=True))
    assert [d.member for d in back.drives] == [5, 2, None]
    with pytest.raises(ValueError, match="members"):
        bad = dataclasses.replace(drives[0], member=ani_al64.n_members)
        md.init(_frames(1), [bad], [md.stream_key(7, 0)], prov)
