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
        monkeypatch.setattr(
            q, "quench", lambda *a, **kw: (lambda r: (r[0], {k: 1e6 * v for k, v in r[1].items()}))(real(*a, **kw))
        )
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


@pytest.mark.parametrize("unsure", [True, False])
def test_a_trajectorys_first_crystal_is_quenched_once(ani_al64, tmp_path, monkeypatch, unsure):
    """``quench.on_crystal``: a census that reports every replica crystalline from 100 fs on (a
    stand-in for the common-neighbour analysis, tested on its own) makes the sampler minimise each
    trajectory at its first crystalline snapshot alone; an unsure minimum ends the trajectory as
    its flagged frame at that time, a sure one lets it run on to t_max (and its last quench)."""
    import potforge.sample.quench as q
    import potforge.sample.sampler as s
    from potforge.records import CensusPoint

    cfg = sampler_config(replicas=4, max_trajectories=4, max_flagged=4, census_every_fs=50.0)
    cfg.schedule.t_max_fs = 200
    cfg.uncertainty.energy_eV_per_sqrt_atom = 1.0
    cfg.quench = QuenchConfig(enabled=True, max_steps=100, on_crystal=True)
    fractions = dict(fcc=0.0, hcp=0.0, bcc=0.0, ico=0.0)
    monkeypatch.setattr(
        s,
        "census_of",
        lambda atoms, t: CensusPoint(time_fs=t, **{**fractions, "fcc": float(t >= 100), "other": float(t < 100)}),
    )
    calls = []
    real = q.quench

    def counted(*a, **kw):
        calls.append(1)
        minimum, m = real(*a, **kw)
        return minimum, {k: (1e6 if unsure else 1.0) * v for k, v in m.items()}

    monkeypatch.setattr(q, "quench", counted)
    summary = Sampler(ani_al64, cfg, SMALL, tmp_path, seed=2, generation=0).run()
    if not unsure:
        assert [o.outcome for o in summary.outcomes] == ["survived"] * 4
        assert len(calls) == 8  # at 100 fs, not again at 150 fs, and at t_max
        return
    assert [o.outcome for o in summary.outcomes] == ["flagged"] * 4 and len(calls) == 4
    _, frames = _flagged_frames(tmp_path)
    assert all(f.reason.startswith("quenched crystal: ") and f.sim_time_fs == pytest.approx(100.0) for f in frames)


def test_minima_are_judged_by_the_quenchs_own_thresholds(ani_al64, tmp_path):
    """``quench.uncertainty``: thresholds no MD frame reaches for the trajectories (1 eV/√atom),
    and a threshold every minimum exceeds for the quench (no ensemble agrees to 1e-9 eV/√atom):
    every survivor's minimum is flagged; the MD thresholds would have let them all survive."""
    from potforge.sample.config import UncertaintyConfig

    cfg = sampler_config(replicas=3, max_trajectories=3, max_flagged=3)
    cfg.schedule.t_max_fs = 40
    cfg.uncertainty.energy_eV_per_sqrt_atom = 1.0
    strict = UncertaintyConfig(energy_eV_per_sqrt_atom=1e-9, force_mean_eV_per_A=None, force_max_eV_per_A=None)
    cfg.quench = QuenchConfig(enabled=True, max_steps=50, uncertainty=strict)
    summary = Sampler(ani_al64, cfg, SMALL, tmp_path, seed=4, generation=0).run()
    assert [o.outcome for o in summary.outcomes] == ["flagged"] * 3
    assert all(o.reason == "quenched: energy_eV_per_sqrt_atom" for o in summary.outcomes)


def test_a_fixed_cell_quench_keeps_the_cell_and_finds_an_inherent_structure(ani_al64):
    """``cell: fixed``: positions alone descend to zero forces, the cell is untouched, and a
    compressed fcc cell stays compressed (positive pressure under the model) while the relaxed
    quench of the same cell expands it to zero stress."""
    hot = fcc_al(3.9, reps=(2, 2, 2), rattle=0.12, seed=5)
    fixed_config = QuenchConfig(cell="fixed", fmax_eV_per_A=0.005, max_steps=2000)
    fixed, _ = quench(ani_al64, hot, fixed_config, relax_cell=fixed_config.relaxes_cell(0))
    relaxed, _ = quench(ani_al64, hot, QuenchConfig(fmax_eV_per_A=0.005, max_steps=2000))
    assert np.allclose(fixed.cell.array, hot.cell.array)
    calc = PotforgeCalculator(ani_al64, uncertainty=False)
    fixed.calc = calc
    assert np.abs(fixed.get_forces()).max() < 0.005
    pressure_GPa = -fixed.get_stress()[:3].mean() * 160.21766
    assert pressure_GPa > 1.0  # 3.9 Å is below ANI-Al's 4.04 Å lattice: compressed
    assert relaxed.get_volume() > 1.05 * hot.get_volume()


def test_both_relaxes_the_cell_of_even_trajectories_and_keeps_that_of_odd_ones(ani_al64, tmp_path, monkeypatch):
    """``cell: both``: trajectory ids 0, 2 are quenched with their cell relaxed, 1, 3 in their own
    cell, which the flagged minima then still have (NVT: the cell the trajectory started in)."""
    import potforge.sample.quench as q

    cfg = sampler_config(replicas=4, max_trajectories=4, max_flagged=4)
    cfg.schedule.t_max_fs = 40
    cfg.uncertainty.energy_eV_per_sqrt_atom = 1.0
    cfg.quench = QuenchConfig(enabled=True, max_steps=100, cell="both")
    real = q.quench
    monkeypatch.setattr(
        q, "quench", lambda *a, **k: (lambda r: (r[0], {n: 1e6 * v for n, v in r[1].items()}))(real(*a, **k))
    )
    sampler = Sampler(ani_al64, cfg, SMALL, tmp_path, seed=2, generation=0)
    starts = [sampler._spawn(k).to_atoms(0).cell.array.copy() for k in range(4)]
    summary = Sampler(ani_al64, cfg, SMALL, tmp_path / "run", seed=2, generation=0).run()
    _, frames = _flagged_frames(tmp_path / "run")
    kept = {int(f.traj[-5:]): np.allclose(f.cell, starts[int(f.traj[-5:])]) for f in frames}
    assert len(summary.flagged_trajectories) == 4 and kept == {0: False, 1: True, 2: False, 3: True}
