"""Oracles: typed failures from deliberately broken calculators, real timeouts, setup errors."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

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


def test_the_oracle_hash_covers_what_is_computed_not_how_it_is_launched(tmp_path):
    from potforge.oracle.builtin import EspressoOracle

    one, two = tmp_path / "one", tmp_path / "two"
    for d in (one, two):
        d.mkdir()
        (d / "Al.upf").write_text("<UPF version='2.0.1'> pseudopotential A </UPF>")

    def qe(command: str, pseudo_dir: Path, cutoff_eV: float = 540.0) -> str:
        settings = {"command": command, "pseudo_dir": str(pseudo_dir), "pseudopotentials": {"Al": "Al.upf"},
                    "cutoff_eV": cutoff_eV}  # fmt: skip
        return EspressoOracle(settings).settings_hash()

    base = qe("pw.x", one)
    assert qe("mpirun -np 16 pw.x", two) == base  # other ranks, a copy of the file elsewhere
    assert qe("pw.x", one, cutoff_eV=600.0) != base
    (two / "Al.upf").write_text("<UPF version='2.0.1'> pseudopotential B </UPF>")
    assert qe("pw.x", two) != base  # an edited pseudopotential is another method

    table = tmp_path / "Al.eam.alloy"
    table.write_text("a potential table\n")
    eam = get_oracle("eam", {"potential": str(table)})
    before = eam.settings_hash()
    table.write_text("another potential table\n")
    assert get_oracle("eam", {"potential": str(table)}).settings_hash() != before
    # an oracle without launch settings or files keeps the hash its datasets were stored under
    assert get_oracle("emt").settings_hash() == "o94440543966c3581" and get_oracle("emt").legacy_hashes() == []


LD1_AL = """&input
   title='Al', zed=13.0, rel=0, config='[Ne] 3s2 3p1 3d-2', iswitch=3, dft='PBE'
/
&inputp
   pseudotype=1, file_pseudopw='Al.pbe-nc.UPF', author='potforge test', lloc=-1, rcloc=2.4, tm=.true.
/
2
3S  1  0  2.00  0.00  2.30  2.30  0.0
3P  2  1  1.00  0.00  2.30  2.30  0.0
"""


@pytest.mark.skipif(shutil.which("pw.x") is None or shutil.which("ld1.x") is None,
                    reason="Quantum ESPRESSO not installed (CI installs Debian's quantum-espresso)")  # fmt: skip
def test_quantum_espresso_labels_for_real_through_the_isolated_runner(tmp_path):
    """The real DFT path end to end: a norm-conserving Al pseudopotential made by QE's own ld1.x,
    pw.x run by the oracle worker process, the label in the inbox; its force is the finite
    difference of its own energies (to 1e-3 eV/Å, the SCF's noise)."""
    from ase.build import bulk

    from potforge.oracle.runner import label_many, result_path

    subprocess.run(["ld1.x"], input=LD1_AL, text=True, cwd=tmp_path, check=True, capture_output=True, timeout=120)
    settings = {"pseudo_dir": str(tmp_path), "pseudopotentials": {"Al": "Al.pbe-nc.UPF"}, "cutoff_eV": 200.0,
                "density_cutoff_factor": 4.0, "kpts": (3, 3, 3)}  # fmt: skip
    qe = get_oracle("espresso", settings)
    qe.check()
    cell = bulk("Al", "fcc", a=4.05, cubic=True)
    cell.rattle(0.05, seed=1)
    step = 2e-3
    plus, minus = cell.copy(), cell.copy()
    plus.positions[0, 0] += step
    minus.positions[0, 0] -= step
    tasks = [("tcell", cell), ("tplus", plus), ("tminus", minus)]
    counts = label_many(qe.spec(), tasks, tmp_path / "inbox", tmp_path / "work", timeout_s=300)
    assert counts.get("ok") == 3, counts
    results = {t: json.loads(result_path(tmp_path / "inbox", t).read_text()) for t, _ in tasks}
    assert all(r["status"] == "ok" and r["oracle_hash"] == qe.settings_hash() for r in results.values())
    finite_difference = -(results["tplus"]["energy"] - results["tminus"]["energy"]) / (2 * step)
    assert abs(results["tcell"]["forces"][0][0] - finite_difference) < 1e-3
    assert -60.0 < results["tcell"]["energy"] / 4 < -50.0  # an Al atom's valence energy with this PP (eV)


def _kept_oracle_process() -> int | None:
    """Pid of the oracle process this thread keeps between calls (None: none kept), if it runs."""
    import psutil

    from potforge.oracle import runner

    worker = getattr(runner._kept, "worker", None)
    if worker is None:
        return None
    try:
        running = psutil.Process(worker.proc.pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        running = False
    return worker.proc.pid if running else None


def test_one_oracle_process_serves_successive_calls_and_a_crash_costs_only_its_own(tmp_path):
    ok = get_oracle(FAULTY, {"mode": "ok"}).spec()
    inbox, work = tmp_path / "inbox", tmp_path / "work"
    assert label_many(ok, [("a", cell(0))], inbox, work)["ok"] == 1
    first = _kept_oracle_process()
    assert first is not None  # kept after the call, idle
    assert label_many(ok, [("b", cell(1))], inbox, work)["ok"] == 1
    assert _kept_oracle_process() == first  # the same process took the second call
    # a call whose oracle kills its process: recorded as crashed, and the next call gets a fresh one
    died = label_many(get_oracle(FAULTY, {"mode": "exit"}).spec(), [("c", cell(2))], inbox, work)
    assert died["failed"] == 1 and json.loads((inbox / "c.json").read_text())["kind"] == "crashed"
    assert label_many(ok, [("d", cell(3))], inbox, work)["ok"] == 1
    assert _kept_oracle_process() not in (None, first)
    # the labels are the oracle's, whichever process computed them
    reference = get_oracle("emt").compute(cell(3), tmp_path / "ref")
    assert json.loads((inbox / "d.json").read_text())["energy"] == pytest.approx(reference.energy, abs=1e-10)


def test_a_changed_environment_gets_a_fresh_oracle_process(tmp_path, monkeypatch):
    import psutil

    ok = get_oracle(FAULTY, {"mode": "ok"}).spec()
    label_many(ok, [("a", cell(0))], tmp_path / "inbox", tmp_path / "work")
    first = _kept_oracle_process()
    monkeypatch.setenv("POTFORGE_TEST_MARKER", "1")  # e.g. a PATH that now finds another pw.x
    label_many(ok, [("b", cell(1))], tmp_path / "inbox", tmp_path / "work")
    assert _kept_oracle_process() not in (None, first)
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE  # retired


def test_an_oracle_process_that_cannot_start_is_one_error_not_an_endless_retry(tmp_path, monkeypatch):
    import sys

    from potforge.oracle import OracleCrashed

    monkeypatch.setattr(sys, "executable", "/bin/false")  # an interpreter that exits at once, silently
    with pytest.raises(OracleCrashed, match=r"exited \(code 1\) before any task"):
        label_many(get_oracle("emt").spec(), [("a", cell(0))], tmp_path / "inbox", tmp_path / "work", timeout_s=30)
    assert not (tmp_path / "inbox" / "a.json").exists()  # nothing recorded against the frame itself
