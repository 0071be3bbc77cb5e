"""The dynamic group end to end on tiny settings: EMT as a calculator-factory 'model' against the
EMT oracle. Both sides run the same MD with the same seeds, so every error must vanish."""

from __future__ import annotations

import pytest
from ase.calculators.emt import EMT

from potforge.validate import ValidationSettings, run_validation

TINY = dict(
    liquid_supercell=2, liquid_premelt_fs=300.0, liquid_npt_equilibrate_fs=100.0, liquid_npt_average_fs=200.0,
    liquid_nvt_equilibrate_fs=100.0, rdf_frames=4, rdf_frame_interval_fs=20.0, rdf_r_max_A=5.0,
    density_temperatures_K=(1123.0, 1400.0), melting_supercell=(2, 2, 6), melting_guess_K=(900.0, 0.0, 0.0),
    melting_grid_half_width_K=450.0, melting_grid_points=2, melting_extend_rounds=0, melting_prepare_fs=300.0,
    melting_run_fs=800.0, melting_sample_fs=100.0, heatcool_supercell=2, heatcool_duration_fs=1000.0,
    heatcool_reference_every_fs=100.0,
)  # fmt: skip


@pytest.mark.slow
def test_dynamic_group_emt_vs_emt(tmp_path):
    settings = ValidationSettings.quick(**TINY)
    report = run_validation(lambda atoms, d: EMT(), "emt", tmp_path, only="dynamic", settings=settings)
    assert [r.name for r in report.results] == ["rdf", "density", "melting", "heatcool"]
    for res in report.results:
        assert res.status == "ok", res.error
        assert res.figures and all(f.is_file() for f in res.figures)
        for row in res.summary:
            if row.error is not None:
                assert row.error == pytest.approx(0.0, abs=1e-9), row.property
        for curve in res.curves:
            assert curve.rmse == pytest.approx(0.0, abs=1e-9), curve.name
    melting = report.result("melting")
    assert 450 <= melting.summary[0].model <= 1350  # between the grid points: one grew, one melted
    assert (tmp_path / "report.html").is_file()


def test_dynamic_reference_md_is_skipped_for_expensive_references():
    from potforge.oracle import get_oracle
    from potforge.validate.core import OracleEvaluator
    from potforge.validate.trajectories import md_is_cheap

    emt = OracleEvaluator(get_oracle("emt"))
    assert md_is_cheap(emt, "auto") and not md_is_cheap(emt, "never")

    class Expensive:  # stands in for a DFT oracle without constructing one
        name = "gpaw"

    fake = OracleEvaluator.__new__(OracleEvaluator)
    fake.oracle = Expensive()
    assert not md_is_cheap(fake, "auto") and md_is_cheap(fake, "always")
