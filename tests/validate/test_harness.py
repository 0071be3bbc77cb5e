"""The harness itself: the same method on both sides gives zero error in every benchmark, each
structure is computed once per run, results resume from the on-disk cache, failures are
reported per benchmark, and bad user input is a one-line PotforgeError."""

from __future__ import annotations

import math

import numpy as np
import pytest

from potforge.errors import PotforgeError
from potforge.validate import ValidationSettings, benchmarks, run_validation, select

STATIC = {"crystal", "eos", "elastic", "vacancy", "surfaces", "bain", "gsfe"}


def test_registry_has_every_static_benchmark():
    assert set(benchmarks()) >= STATIC
    assert {b.name for b in select("static")} >= STATIC
    assert [b.name for b in select("bain,eos")] == ["eos", "bain"]  # report order, not argument order


def test_unknown_benchmark_is_a_user_error():
    with pytest.raises(PotforgeError, match="unknown benchmark"):
        select(["eos", "melting-point-of-cheese"])


@pytest.mark.parametrize("name", sorted(STATIC))
def test_same_method_on_both_sides_gives_zero_error(emt_report, name):
    res = emt_report.result(name)
    assert res.status == "ok", res.error
    assert res.summary, "every benchmark reports summary rows"
    for row in res.summary:
        assert row.model is not None and math.isfinite(row.model), row.property
        assert row.error == pytest.approx(0.0, abs=1e-9), row.property
    for curve in res.curves:
        assert curve.common.sum() >= 2, curve.name
        assert curve.rmse == pytest.approx(0.0, abs=1e-9) and curve.mae == pytest.approx(0.0, abs=1e-9), curve.name


def test_each_reference_structure_is_computed_once(tmp_path, quick_settings):
    """The single-point benchmarks share structures (fcc at V0 appears in EOS, elastic and Bain):
    every reference structure must reach the oracle exactly once."""
    counter = tmp_path / "calls.txt"
    report = run_validation(
        "oracle:emt",
        "python:potforge.oracle.fake:FaultyEMT",
        tmp_path / "out",
        only=["eos", "crystal", "elastic", "bain"],
        settings=quick_settings,
        reference_settings={"counter_file": str(counter)},
    )
    assert all(r.status == "ok" for r in report.results)
    calls = counter.read_text().split()
    assert len(calls) == len(set(calls)) > 50
    # the Bain path's c/a = 1 cell is the elastic benchmark's unstrained cell: not recomputed
    bain = report.result("bain")
    assert bain.calculations[report.reference["label"]] == len(bain.curves[0].x) - 1


def test_rerun_resumes_from_the_reference_cache(tmp_path, quick_settings):
    first = run_validation("oracle:emt", "emt", tmp_path, only="bain", settings=quick_settings)
    second = run_validation("oracle:emt", "emt", tmp_path, only="bain", settings=quick_settings)
    ref = first.reference["label"]
    assert first.result("bain").calculations[ref] > 10
    assert second.result("bain").calculations[ref] == 0
    np.testing.assert_array_equal(first.result("bain").curves[0].reference, second.result("bain").curves[0].reference)


def test_failed_reference_is_reported_not_raised(tmp_path, quick_settings):
    report = run_validation(
        "oracle:emt",
        "python:potforge.oracle.fake:FaultyEMT",
        tmp_path,
        only=["eos", "bain"],
        settings=quick_settings,
        reference_settings={"mode": "crash"},
    )
    assert [r.status for r in report.results] == ["failed", "failed"]
    assert "crash" in report.results[0].error
    assert "FAILED" in (tmp_path / "report.html").read_text()


def test_settings_are_validated():
    with pytest.raises(ValueError, match="multiple of 3"):
        ValidationSettings(gsfe_layers=10)
    with pytest.raises(ValueError, match="headline"):
        ValidationSettings(elastic_headline_strain=0.003)
    with pytest.raises(ValueError, match="fcc"):
        ValidationSettings(crystal_structures=("bcc",))


def test_reference_cells_are_small_and_fully_periodic(tmp_path, quick_settings):
    """Plane-wave DFT needs periodic cells and small ones: primitive cells (≤ 2 atoms) for the
    crystal, EOS, elastic and Bain benchmarks, a fresh calculator for every structure."""
    from ase.calculators.emt import EMT

    seen: dict[str, list[int]] = {}
    current = {"name": ""}

    def recording(atoms, directory):
        assert atoms.pbc.all(), "every reference cell must be periodic in 3D"
        seen.setdefault(current["name"], []).append(len(atoms))
        return EMT()

    def progress(event, bench, index, total):
        current["name"] = bench.name

    run_validation("oracle:emt", recording, tmp_path, settings=quick_settings, progress=progress)
    for name in ("eos", "crystal", "elastic", "bain"):
        assert max(seen.get(name, [1])) <= 2, name
    assert max(seen["vacancy"]) == 4 * quick_settings.vacancy_supercell**3
    assert max(seen["gsfe"]) == quick_settings.gsfe_layers
