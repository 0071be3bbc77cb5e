"""Fixtures of the KIM/LAMMPS tests: a private KIM collection (the ``environment`` collection in
a temporary directory, so the user's own collection is never touched), the published ANI-Al
and a small random two-element ensemble of another AEV shape, both exported and installed.

Without LAMMPS or the KIM API the tests skip, saying what to install; under CI (``$CI`` set),
which installs them (.ci/lammps.sh), they fail instead, so they cannot silently stop running.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

from potforge.export.kim import export_kim, install_kim
from potforge.model.aev import AEVParams
from potforge.model.ensemble import ANIEnsemble
from potforge.model.io import save_model

MISSING = [tool for tool in ("lmp", "kim-api-collections-management", "cmake") if shutil.which(tool) is None]
REASON = f"{', '.join(MISSING)} not installed (apt-get install lammps libkim-api-dev cmake; CI runs .ci/lammps.sh)"


def require_lammps() -> None:
    """Skip without the tools; fail under CI, which installs them."""
    if MISSING:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the LAMMPS tests: {REASON}")
        pytest.skip(REASON)


@dataclass(frozen=True)
class Installed:
    """An installed KIM model: its name, the potforge model it came from, the run environment."""

    name: str
    model: ANIEnsemble
    source: str
    env: dict[str, str]


@pytest.fixture(scope="session")
def kim_env(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("kim-collection")
    env = dict(os.environ)
    env["KIM_API_MODEL_DRIVERS_DIR"] = str(root / "model-drivers")
    env["KIM_API_PORTABLE_MODELS_DIR"] = str(root / "portable-models")
    env["OMP_NUM_THREADS"] = "1"
    for key in ("KIM_API_MODEL_DRIVERS_DIR", "KIM_API_PORTABLE_MODELS_DIR"):
        Path(env[key]).mkdir()
    return env


def tiny_model(seed: int = 7) -> ANIEnsemble:
    """A random two-element ensemble (Al, Ni) with an AEV shape other than ANI-Al's, so that its
    driver is compiled for another shape and the species map and pair blocks are exercised."""
    aev = AEVParams(
        elements=("Al", "Ni"),
        radial_cutoff=5.2,
        radial_eta=16.0,
        radial_shifts=tuple(0.9 + 0.5 * k for k in range(8)),
        angular_cutoff=3.5,
        angular_eta=8.0,
        angular_zeta=32.0,
        angular_shifts=(0.9, 1.55, 2.2, 2.85),
        angular_sections=tuple((2 * k + 1) * np.pi / 8 for k in range(4)),
    )
    model = ANIEnsemble(aev, (aev.n_features, 24, 16, 1), 3, self_energies=[-1.3, -2.1], celu_alpha=0.1)
    model = model.to(torch.float64)
    model.networks.reset_parameters(torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for el in aev.elements:
            for k in range(model.networks.n_layers):
                w, b = model.networks.layer(el, k)
                b.uniform_(-0.2, 0.2, generator=gen)  # non-zero biases: every term of the networks is checked
            w.mul_(20.0)  # output layer: eV-sized energy differences, forces of order 1 eV/Å
    return model


@pytest.fixture(scope="session")
def ani_al_kim(kim_env, tmp_path_factory) -> Installed:
    require_lammps()
    from potforge.model import load_model

    export = export_kim("ani-al", tmp_path_factory.mktemp("export-ani-al"))
    install_kim(export, "environment", kim_env)
    return Installed(export.model_name, load_model("ani-al", dtype=torch.float64), "ani-al", kim_env)


@pytest.fixture(scope="session")
def tiny_kim(kim_env, tmp_path_factory) -> Installed:
    require_lammps()
    out = tmp_path_factory.mktemp("export-tiny")
    model = tiny_model()
    path = save_model(model, out / "tiny.pt")
    export = export_kim(path, out / "kim", name="potforge_test_tiny")
    install_kim(export, "environment", kim_env)
    from potforge.model import load_model

    return Installed(export.model_name, load_model(path, dtype=torch.float64), str(path), kim_env)


def disordered_cell(n_atoms: int, density_g_cm3: float, seed: int, symbols: tuple[str, ...] = ("Al",)) -> Atoms:
    """A random cubic cell of ``n_atoms`` at ``density_g_cm3``, atoms at least 1.9 Å apart."""
    from potforge.structures import place_atoms
    from potforge.units import volume_for_density_A3

    rng = np.random.default_rng(seed)
    side = (n_atoms * volume_for_density_A3(26.98, density_g_cm3)) ** (1 / 3)
    positions = place_atoms(np.full(3, side), n_atoms, 1.9, rng)
    return Atoms(list(rng.choice(symbols, n_atoms)), positions=positions, cell=np.eye(3) * side, pbc=True)
