"""The exported KIM model in LAMMPS against potforge's own calculator (float64): energies,
forces, per-atom energies and the virial stress, on the published ANI-Al and a random
two-element ensemble of another AEV shape; small periodic cells (box below twice the cutoff), a
triclinic cell, a 500-atom disordered cell; 1 and 2 MPI ranks."""

from __future__ import annotations

import gc
import importlib.util
import os

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from tests.export.conftest import Installed, disordered_cell

from potforge.export.kim import KimExportError, default_model_name, export_kim, install_kim
from potforge.export.lammps import single_point
from potforge.model import Calculator
from potforge.model.calculator import atoms_to_batch

E_TOL_EV_PER_ATOM = 1e-6
F_TOL_EV_A = 1e-5
STRESS_TOL_EV_A3 = 1e-8  # 0.016 bar; the virial is a sum of the same pair terms as the forces


def fcc(reps: int, rattle_A: float, seed: int) -> Atoms:
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat(reps)
    atoms.rattle(rattle_A, seed=seed)
    return atoms


def triclinic(seed: int) -> Atoms:
    """A rattled fcc block sheared into a general triclinic cell (LAMMPS orientation)."""
    atoms = fcc(2, 0.08, seed)
    cell = np.array([[8.1, 0.0, 0.0], [1.7, 7.9, 0.0], [-1.3, 2.2, 8.4]])
    atoms.set_cell(cell, scale_atoms=True)
    return atoms


STRUCTURES = {
    "fcc4_box_4A": lambda: fcc(1, 0.1, 1),
    "fcc32_box_8A": lambda: fcc(2, 0.12, 2),
    "triclinic32": lambda: triclinic(3),
    "disordered500": lambda: disordered_cell(500, 2.6, seed=4),
}


def with_species(atoms: Atoms, elements: tuple[str, ...], seed: int) -> Atoms:
    if len(elements) > 1:
        atoms = atoms.copy()
        atoms.set_chemical_symbols(list(np.random.default_rng(seed).choice(elements, len(atoms))))
    return atoms


def potforge_reference(installed: Installed, atoms: Atoms) -> dict[str, np.ndarray | float]:
    """Energy, forces, stress from potforge's ASE calculator; per-atom energies (member mean
    plus self energy) from the ensemble's atomic terms."""
    model = installed.model
    calc = Calculator(model, dtype=torch.float64, uncertainty=False)
    atoms = atoms.copy()
    atoms.calc = calc
    batch = atoms_to_batch([atoms], model)
    with torch.no_grad():
        _, _, op = model.aev_operator(batch)
        atomic, _ = model.atomic_terms(op.forward(), batch.species, want_grad=False)
    per_atom = atomic.mean(0).double() + model.self_energies[batch.species]
    return {
        "energy": atoms.get_potential_energy(),
        "forces": atoms.get_forces(),
        "stress": atoms.get_stress(voigt=False),
        "energies": per_atom.numpy(),
    }


def voigt(s: np.ndarray) -> np.ndarray:
    """xx yy zz xy xz yz, LAMMPS' order."""
    return np.array([s[0, 0], s[1, 1], s[2, 2], s[0, 1], s[0, 2], s[1, 2]])


def compare(installed: Installed, atoms: Atoms, workdir, n_ranks: int = 1, style: str = "kim init") -> dict:
    elements = installed.model.elements
    lmp = single_point(atoms, installed.name, elements, workdir, n_ranks=n_ranks, env=installed.env, style=style)
    ref = potforge_reference(installed, atoms)
    n = len(atoms)
    return {
        "dE_per_atom": abs(lmp.energy_eV - ref["energy"]) / n,
        "dF": float(np.abs(lmp.forces_eV_A - ref["forces"]).max()),
        "dE_atoms": float(np.abs(lmp.energies_eV - ref["energies"]).max()),
        "dstress": float(np.abs(lmp.stress_eV_A3 - ref["stress"]).max()),
        # the per-atom virials (the pair terms split between the pair's atoms) add up to it
        "datom_virials": float(np.abs(lmp.atom_virials_eV.sum(0) / atoms.get_volume() - voigt(ref["stress"])).max()),
        "F_scale": float(np.abs(ref["forces"]).max()),
        "lmp": lmp,
    }


def assert_agrees(d: dict) -> None:
    print(  # the figures docs/lammps.md quotes (pytest tests/export -s)
        f"\n  |dE|/atom {d['dE_per_atom']:.1e} eV, per-atom |dE| {d['dE_atoms']:.1e} eV, |dF| {d['dF']:.1e} eV/A, "
        f"|d stress| {d['dstress']:.1e} eV/A^3, per-atom virial sum {d['datom_virials']:.1e} eV/A^3"
    )
    assert d["F_scale"] > 0.1  # a structure with real forces, not a trivially symmetric one
    assert d["dE_per_atom"] < E_TOL_EV_PER_ATOM, d
    assert d["dE_atoms"] < E_TOL_EV_PER_ATOM, d
    assert d["dF"] < F_TOL_EV_A, d
    assert d["dstress"] < STRESS_TOL_EV_A3, d
    assert d["datom_virials"] < STRESS_TOL_EV_A3, d


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_ani_al_in_lammps_matches_potforge(name, ani_al_kim, tmp_path):
    assert_agrees(compare(ani_al_kim, STRUCTURES[name](), tmp_path))


@pytest.mark.parametrize("name", ["fcc4_box_4A", "triclinic32", "disordered500"])
def test_trained_two_element_model_in_lammps_matches_potforge(name, tiny_kim, tmp_path):
    atoms = with_species(STRUCTURES[name](), tiny_kim.model.elements, seed=5)
    assert set(atoms.get_chemical_symbols()) == {"Al", "Ni"}
    assert_agrees(compare(tiny_kim, atoms, tmp_path))


def test_pair_style_kim_gives_the_same_numbers(ani_al_kim, tmp_path):
    """``pair_style kim`` + ``pair_coeff`` (the older route) and ``kim init`` agree bit for bit."""
    atoms = STRUCTURES["fcc32_box_8A"]()
    a = single_point(atoms, ani_al_kim.name, ("Al",), tmp_path / "a", env=ani_al_kim.env, style="pair_style")
    b = single_point(atoms, ani_al_kim.name, ("Al",), tmp_path / "b", env=ani_al_kim.env)
    assert a.energy_eV == b.energy_eV
    np.testing.assert_array_equal(a.forces_eV_A, b.forces_eV_A)


@pytest.mark.parametrize("fixture", ["ani_al_kim", "tiny_kim"])
def test_one_and_two_mpi_ranks_agree(fixture, request, tmp_path):
    installed: Installed = request.getfixturevalue(fixture)
    atoms = with_species(STRUCTURES["disordered500"](), installed.model.elements, seed=6)
    one = single_point(atoms, installed.name, installed.model.elements, tmp_path / "np1", env=installed.env)
    two = compare(installed, atoms, tmp_path / "np2", n_ranks=2)
    print(f"\n  1 vs 2 ranks: |dF| {np.abs(two['lmp'].forces_eV_A - one.forces_eV_A).max():.1e} eV/A")
    assert np.abs(two["lmp"].forces_eV_A - one.forces_eV_A).max() < 1e-8
    assert abs(two["lmp"].energy_eV - one.energy_eV) / len(atoms) < 1e-10
    assert_agrees(two)


def test_model_names_and_missing_tools(tmp_path, monkeypatch):
    assert default_model_name("ani-al") == "potforge_ani_al"
    assert default_model_name("runs/x/model-gen3.pt") == "potforge_model_gen3"
    with pytest.raises(KimExportError, match="C identifier"):
        export_kim("ani-al", tmp_path, name="3bad-name")
    from potforge.model.aev import AEVParams
    from potforge.model.ensemble import ANIEnsemble

    deep = ANIEnsemble(AEVParams.ani_al(), (96, *[4] * 9, 1), 2)
    with pytest.raises(KimExportError, match="at most 16 elements, 8 layers"):
        export_kim(deep, tmp_path / "deep")
    export = export_kim("ani-al", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    with pytest.raises(KimExportError, match="apt-get install libkim-api-dev cmake"):
        install_kim(export)


def test_cli_writes_both_items(tmp_path):
    from typer.testing import CliRunner

    from potforge.cli import app

    result = CliRunner().invoke(app, ["export", "kim", "ani-al", "--out", str(tmp_path), "--name", "pf_cli"])
    assert result.exit_code == 0, result.output
    params = (tmp_path / "pf_cli" / "pf_cli.params").read_bytes()
    assert params.startswith(b"potforge-kim-params 1\nn_species 1\nspecies Al\naev_shape 32 8 8\n")
    assert params.endswith(b"\nend\n")
    (driver,) = [p for p in tmp_path.iterdir() if p.name.startswith("potforge_ani_32x8x8_")]
    # the driver compiles potforge's own kernel sources, byte for byte
    from potforge.export.kim import KERNEL_SOURCES

    for src in KERNEL_SOURCES:
        assert (driver / src.name).read_bytes() == src.read_bytes()
    assert f'DRIVER_NAME "{driver.name}"' in (tmp_path / "pf_cli" / "CMakeLists.txt").read_text()


def test_ase_kim_calculator_matches_potforge(ani_al_kim, monkeypatch, tmp_path):
    """The same exported model through ASE's KIM calculator (kimpy), on a non-orthogonal cell
    that ASE hands to KIM as it is (no LAMMPS orientation needed)."""
    if importlib.util.find_spec("kimpy") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the ASE KIM test: pip install -e '.[lammps]' (kimpy)")
        pytest.skip("kimpy not installed (pip install -e '.[lammps]')")
    from ase.calculators.kim import KIM

    for key in ("KIM_API_MODEL_DRIVERS_DIR", "KIM_API_PORTABLE_MODELS_DIR"):
        monkeypatch.setenv(key, ani_al_kim.env[key])
    monkeypatch.chdir(tmp_path)  # the KIM API writes its kim.log into the working directory
    atoms = bulk("Al", "fcc", a=4.05).repeat(3)  # primitive cell: 60° between the cell vectors
    atoms.rattle(0.1, seed=8)
    atoms.calc = KIM(ani_al_kim.name)
    ref = potforge_reference(ani_al_kim, atoms)
    assert abs(atoms.get_potential_energy() - ref["energy"]) / len(atoms) < E_TOL_EV_PER_ATOM
    assert np.abs(atoms.get_forces() - ref["forces"]).max() < F_TOL_EV_A
    assert np.abs(atoms.get_stress(voigt=False) - ref["stress"]).max() < STRESS_TOL_EV_A3
    atoms.calc = None
    gc.collect()  # KIM logs when its objects are destroyed: here, not later in the repository
