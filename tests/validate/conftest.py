"""Fixtures of the validation tests: EMT on both sides (the harness must give zero error), with
the trimmed protocol so the whole suite runs in seconds."""

from __future__ import annotations

import pytest
from ase.calculators.emt import EMT

from potforge.validate import ValidationSettings


def emt_factory(atoms, directory):
    """EMT as a plain ASE calculator factory: the 'model' side through the generic path."""
    return EMT()


@pytest.fixture(scope="session")
def quick_settings() -> ValidationSettings:
    return ValidationSettings.quick()


@pytest.fixture(scope="session")
def emt_report(tmp_path_factory, quick_settings):
    """Every benchmark, EMT (calculator factory) as model vs the EMT oracle as reference."""
    from potforge.validate import run_validation

    out = tmp_path_factory.mktemp("emt_vs_emt")
    return run_validation(emt_factory, "emt", out, settings=quick_settings)


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread():
    """The cells here are tiny: one torch thread is fastest, and on a shared 2-core machine more
    threads only spin against each other. Restored afterwards for the rest of the test run."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def ani_vs_emt_quick(tmp_path_factory, ani_al64, quick_settings):
    """Every benchmark, the published ANI-Al ensemble vs EMT, trimmed protocol."""
    from potforge.validate import run_validation

    return run_validation(ani_al64, "emt", tmp_path_factory.mktemp("ani_vs_emt"), settings=quick_settings)
