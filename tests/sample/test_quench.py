"""Inherent structures of surviving trajectories: the quench finds a minimum of the model's
energy (zero forces and stress), and a sampler with ``quench`` flags the minima the ensemble is
unsure of, at the trajectory's last time, and leaves the others survived."""

from __future__ import annotations

import numpy as np
import pytest
from tests.conftest import fcc_al
from tests.sample.test_sampler import SMALL, _flagged_frames, sampler_config

from potforge.model import PotforgeCalculator
from potforge.sample import Sampler
from potforge.sample.config import QuenchConfig
from potforge.sample.quench import quench


def test_a_quench_of_a_hot_crystal_is_the_models_cold_lattice(ani_al64):
    """A rattled, strained fcc cell quenches to zero forces and zero stress, and its energy
    per atom is that of the perfect fcc lattice at the volume it reached."""
    hot = fcc_al(4.2, reps=(2, 2, 2), rattle=0.12, seed=3)
    minimum, measures = quench(ani_al64, hot, QuenchConfig(fmax_eV_per_A=0.005, max_steps=2000))
    calc = PotforgeCalculator(ani_al64, uncertainty=False)
    minimum.calc = calc
    assert np.abs(minimum.get_forces()).max() < 0.005
    # zero stress: the virial per atom (the cell's generalised force) below the tolerance too
    assert np.abs(minimum.get_stress()).max() * minimum.get_volume() / len(minimum) < 0.005
    a = (minimum.get_volume() / len(minimum) * 4) ** (1 / 3)
    perfect = fcc_al(a, reps=(2, 2, 2))
    perfect.calc = calc
    e_min, e_perfect = minimum.get_potential_energy(), perfect.get_potential_energy()
    assert e_min / len(minimum) == pytest.approx(e_perfect / len(perfect), abs=5e-4)
    hot.calc = calc
    assert e_min < hot.get_potential_energy() - 0.05 * len(hot)  # it did descend
    # the spread measured where it stopped, as the sampler measures it
    member = ani_al64.evaluate(
        __import__("potforge.model", fromlist=["atoms_to_batch"]).atoms_to_batch([minimum], ani_al64),
        member_forces=True,
    )
    assert measures["energy_eV_per_sqrt_atom"] == pytest.approx(
        float(member.energy_std[0]) / len(minimum) ** 0.5, rel=1e-6
    )
    assert measures["force_max_eV_per_A"] == pytest.approx(float(member.force_std.max()), rel=1e-6)


@pytest.mark.parametrize("unsure", [True, False])
def test_survivors_minima_are_flagged_where_the_ensemble_is_unsure(ani_al64, tmp_path, monkeypatch, unsure):
    """Thresholds no MD frame reaches; the quenched minima are events only when their spread
    exceeds them (an ensemble made a million times less sure of every minimum), then stored as
    the trajectories' frames at their last time, and they are minima of the model."""
    import potforge.sample.quench as q

    cfg = sampler_config(replicas=4, max_trajectories=4, max_flagged=4)
    cfg.schedule.t_max_fs = 60
    cfg.uncertainty.energy_eV_per_sqrt_atom = 1.0
    cfg.quench = QuenchConfig(enabled=True, max_steps=300)
    if unsure:
        real = q.quench
        monkeypatch.setattr(q, "quench", lambda *a: (lambda r: (r[0], {k: 1e6 * v for k, v in r[1].items()}))(real(*a)))
    summary = Sampler(ani_al64, cfg, SMALL, tmp_path, seed=2, generation=0).run()
    if not unsure:
        assert [o.outcome for o in summary.outcomes] == ["survived"] * 4
        return
    assert [o.outcome for o in summary.outcomes] == ["flagged"] * 4
    _, frames = _flagged_frames(tmp_path)
    assert len(frames) == 4 and all(f.reason == "quenched: energy_eV_per_sqrt_atom" for f in frames)
    calc = PotforgeCalculator(ani_al64, uncertainty=False)
    for f in frames:
        assert f.sim_time_fs == pytest.approx(60.0)
        atoms = f.atoms()
        atoms.calc = calc
        assert np.abs(atoms.get_forces()).max() < 0.1  # a minimum, to the quench's tolerance
