"""The full default protocol, ANI-Al vs EMT (its cost is in docs/validate.md, not asserted here).
Slow: run with ``pytest -m slow tests/validate``."""

from __future__ import annotations

import pytest

from potforge.validate import run_validation


@pytest.mark.slow
def test_full_static_suite_ani_al_vs_emt(tmp_path, ani_al64):
    report = run_validation(ani_al64, "emt", tmp_path)
    assert all(r.status == "ok" for r in report.results), [r.error for r in report.results]
    model = report.model["label"]
    elastic = report.result("elastic").data[model]
    # the strain dependence the cutoffs cause: C11 by stress grows with the strain amplitude
    assert elastic["0.02"]["C11_stress"] > elastic["0.0025"]["C11_stress"] + 3
    for res in report.results:
        for row in res.summary:
            assert row.model is not None, (res.name, row.property)
    gsfe = report.result("gsfe").data[model]
    assert gsfe["info"]["unconverged_relaxations"] == 0
    assert abs(gsfe["slip"][-1]) < 1e-6  # a full lattice translation leaves no fault
