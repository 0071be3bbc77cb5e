"""Oracles: typed failures from deliberately broken calculators, real timeouts, setup errors."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from ase.calculators.fd import calculate_numerical_forces

from potforge.data import DatasetStore, Provenance
from potforge.oracle import (
    InvalidResult,
    OracleSetupError,
    get_oracle,
    oracle_from_spec,
)
from potforge.oracle.runner import label_many
from potforge.structures import crystal

FAULTY = "python:potforge.oracle.fake:FaultyEMT"


def cell(k=0):
    atoms = crystal("fcc", 16.5 + 0.1 * k).repeat(2)
    atoms.rattle(0.03, seed=k)
    return atoms


def test_emt_label_is_consistent(tmp_path):
    oracle = get_oracle("emt")
    atoms = cell()
    label = oracle.compute(atoms, tmp_path)
    assert label.forces.shape == (8, 3) and label.stress.shape == (6,)
    ref = atoms.copy()
    ref.calc = oracle.make_calculator(ref, tmp_path)
    assert label.energy == pytest.approx(ref.get_potential_energy(), abs=1e-12)
    assert oracle_from_spec(oracle.spec()).settings_hash() == oracle.settings_hash()


def test_every_settings_hash_can_be_stored(tmp_path):
    # a bare hex digest such as 70e0235559946268 reads as a float, and ASE refuses to store it
    hashes = [get_oracle(FAULTY, {"counter_file": f"/c/{k}"}).settings_hash() for k in range(3000)]
    assert len(set(hashes)) == 3000
    for h in hashes:
        with pytest.raises(ValueError):
            float(h)
    store = DatasetStore(tmp_path / "d.db")
    assert store.add_pending(cell(), Provenance(source="t"), "faulty", hashes[0]) is not None


@pytest.mark.parametrize(
    "mode,kind",
    [("crash", "crashed"), ("scf", "scf"), ("nan", "invalid"), ("shape", "invalid"), ("exit", "crashed")],
)
def test_each_failure_kind_is_recorded(tmp_path, mode, kind):
    oracle = get_oracle(FAULTY, {"mode": mode})
    counts = label_many(oracle.spec(), [("t1", cell())], tmp_path / "inbox", tmp_path / "work", timeout_s=30)
    assert counts["failed"] == 1
    result = json.loads((tmp_path / "inbox" / "t1.json").read_text())
    assert result["status"] == "failed" and result["kind"] == kind
    assert not (tmp_path / "inbox" / "t1.claim").exists()


def test_hung_calculation_is_killed_by_the_timeout(tmp_path):
    import psutil

    oracle = get_oracle(FAULTY, {"mode": "hang"})
    counts = label_many(oracle.spec(), [("h1", cell())], tmp_path / "inbox", tmp_path / "work", timeout_s=2)
    assert counts["failed"] == 1
    result = json.loads((tmp_path / "inbox" / "h1.json").read_text())
    assert result["kind"] == "timeout" and result["message"] == "killed after 2 s"
    # nothing of the hung worker survives: no process runs this test's job file
    mine = [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert not [p for p in mine if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_a_failure_does_not_stop_the_others(tmp_path):
    counter = tmp_path / "count"
    oracle = get_oracle(FAULTY, {"mode": "ok", "counter_file": str(counter)})
    tasks = [(f"t{k}", cell(k)) for k in range(4)]
    label_many(oracle.spec(), tasks, tmp_path / "inbox", tmp_path / "work")
    assert len(counter.read_text().split()) == 4
    # already-done tasks are skipped: nothing is computed twice
    counts = label_many(oracle.spec(), tasks, tmp_path / "inbox", tmp_path / "work")
    assert counts["skipped"] == 4 and len(counter.read_text().split()) == 4


def test_invalid_results_are_caught():
    from potforge.oracle import Label, validate_label

    with pytest.raises(InvalidResult, match="finite"):
        validate_label(Label(energy=float("inf"), forces=np.zeros((2, 3)), stress=np.zeros(6)), 2, True)
    with pytest.raises(InvalidResult, match="shape"):
        validate_label(Label(energy=1.0, forces=np.zeros((3, 3)), stress=np.zeros(6)), 2, True)
    with pytest.warns(RuntimeWarning, match="sum"):
        validate_label(Label(energy=1.0, forces=np.ones((2, 3)), stress=np.zeros(6)), 2, True)


def test_setup_errors_name_the_problem(tmp_path, monkeypatch):
    with pytest.raises(OracleSetupError, match="unknown oracle 'vasp'"):
        get_oracle("vasp")
    with pytest.raises(OracleSetupError, match="cutoff_eV"):
        get_oracle("gpaw", {"cutoff_eV": -1})
    with pytest.raises(OracleSetupError, match=r"nosuch\.eam\.alloy"):
        get_oracle("eam", {"potential": str(tmp_path / "nosuch.eam.alloy")}).check()
    with pytest.raises(OracleSetupError, match="cannot import"):
        get_oracle("python:nosuchmodule:Calc").check()
    # a pw.x that exists, with a pseudopotential that does not
    fake = tmp_path / "bin" / "pw.x"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    qe = get_oracle("espresso", {"pseudo_dir": str(tmp_path), "pseudopotentials": {"Al": "Al.pbe-n-kjpaw.UPF"}})
    with pytest.raises(OracleSetupError, match=r"Al\.pbe-n-kjpaw\.UPF"):
        qe.check()


def gpaw_available() -> bool:
    try:
        import gpaw  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not gpaw_available() and not os.environ.get("CI"), reason="GPAW not installed (CI installs it)")
def test_gpaw_forces_match_finite_differences(tmp_path):
    """Real PBE DFT on a 4-atom cell; forces are -dE/dr of the (free) energy we label with."""
    from ase.build import bulk

    settings = {"cutoff_eV": 250, "kpoint_density_per_A": 1.5, "energy_convergence_eV": 1e-8}
    oracle = get_oracle("gpaw", settings)
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    atoms.rattle(0.05, seed=2)
    label = oracle.compute(atoms, tmp_path)
    probe = atoms.copy()
    probe.calc = oracle.make_calculator(probe, tmp_path)
    numeric = calculate_numerical_forces(probe, eps=5e-3, iatoms=[1], icarts=[0], force_consistent=True)
    assert abs(label.forces[1, 0] - numeric[0, 0]) <= 1e-3
    assert np.abs(label.forces.sum(0)).max() < 1e-3
