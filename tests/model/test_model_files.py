"""Model files: exact round trip of potforge's format, clear errors for bad files and inputs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import read, write

from potforge.errors import ModelFileError, UnknownElementError
from potforge.model import atoms_to_batch, load_model, save_model


def test_save_load_round_trip_is_exact(tmp_path, ani_al64, structures):
    path = save_model(ani_al64, tmp_path / "m.pt")
    again = load_model(path, dtype=torch.float64)
    for k, v in ani_al64.networks.state_dict().items():
        assert torch.equal(v, again.networks.state_dict()[k])
    assert again.self_energies_eV == ani_al64.self_energies_eV
    assert again.aev_params == ani_al64.aev_params
    batch = atoms_to_batch([structures["random_cell_a"]], ani_al64)
    assert torch.equal(ani_al64.evaluate(batch).energy, again.evaluate(batch).energy)


def test_truncated_and_corrupt_files_raise_clear_errors(tmp_path, ani_al64):
    good = save_model(ani_al64, tmp_path / "m.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model at all" * 10)
    for path in (truncated, garbage):
        with pytest.raises(ModelFileError, match=path.name):
            load_model(path)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


def test_pickled_objects_are_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"hyperparameters": "{}", "tensors": Evil()}, path)
    with pytest.raises(ModelFileError):
        load_model(path)


def test_truncated_neurochem_weights_raise(tmp_path):
    import shutil

    from potforge.model.io import PUBLISHED_MODELS

    src = PUBLISHED_MODELS["ani-al"].parent
    dst = tmp_path / "ani-al"
    shutil.copytree(src, dst)
    w = dst / "model-Al-75/train3/networks/ANN-Al.nnf-l2.wparam"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(ModelFileError, match=r"l2\.wparam"):
        load_model(dst / "model-Al-75.info")


def test_unknown_element_names_it_and_the_models_elements(ani_al64):
    atoms = Atoms("AlCuAl", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0]])
    with pytest.raises(UnknownElementError, match=r"Cu.*knows only Al"):
        atoms_to_batch([atoms], ani_al64)


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "potforge", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_eval_writes_readable_extxyz(tmp_path, structures):
    frames = [structures["fcc4_smaller_than_cutoff"], structures["cluster_nonperiodic"]]
    write(tmp_path / "in.extxyz", frames)
    write(tmp_path / "in.cif", structures["sheared_triclinic"])
    out = tmp_path / "out.extxyz"
    res = run_cli("eval", "ani-al", str(tmp_path / "in.extxyz"), str(tmp_path / "in.cif"), "--out", str(out))
    assert res.returncode == 0, res.stderr
    got = read(out, ":")
    assert len(got) == 3
    for atoms in got:
        assert np.isfinite(atoms.get_potential_energy())
        assert atoms.get_forces().shape == (len(atoms), 3)
        assert len(atoms.info["member_energies"]) == 8
        assert atoms.info["energy_std"] == pytest.approx(np.std(atoms.info["member_energies"], ddof=1), rel=1e-9)
        assert atoms.arrays["force_std"].shape == (len(atoms),)
    assert got[0].get_stress().shape == (6,)
    assert "stress" not in got[1].calc.results  # a cluster has no stress


def test_cli_errors_are_one_line(tmp_path):
    write(tmp_path / "cu.xyz", Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]]))
    res = run_cli("eval", "ani-al", str(tmp_path / "cu.xyz"), "--out", str(tmp_path / "o.xyz"))
    assert res.returncode == 2
    assert "Cu" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("eval", str(tmp_path / "nope.pt"), str(tmp_path / "cu.xyz"), "--out", str(tmp_path / "o.xyz"))
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("eval", "ani-al", str(tmp_path / "missing.xyz"), "--out", str(tmp_path / "o.xyz"))
    assert res.returncode == 2 and "missing.xyz" in res.stderr


def test_non_finite_input_is_one_line_not_undefined_behaviour(tmp_path, ani_al64):
    """A NaN position never reaches the C cell list (casting NaN to an integer cell index is
    undefined behaviour): a StructureError from the model, exit code 2 from the CLI."""
    from potforge.errors import StructureError
    from potforge.model import atoms_to_batch

    atoms = Atoms("Al2", positions=[[0, 0, 0], [np.nan, 2, 2]], cell=[4.05] * 3, pbc=True)
    with pytest.raises(StructureError, match="non-finite positions"):
        ani_al64.evaluate(atoms_to_batch([atoms], ani_al64))
    bad_cell = Atoms(
        "Al2", positions=[[0, 0, 0], [2, 2, 2]], cell=[[4.05, 0, 0], [0, np.inf, 0], [0, 0, 4.05]], pbc=True
    )
    with pytest.raises(StructureError, match="non-finite vectors"):
        ani_al64.evaluate(atoms_to_batch([bad_cell], ani_al64))
    write(tmp_path / "nan.extxyz", atoms)
    res = run_cli("eval", "ani-al", str(tmp_path / "nan.extxyz"), "--out", str(tmp_path / "o.xyz"))
    assert res.returncode == 2 and "non-finite positions" in res.stderr and "Traceback" not in res.stderr
