"""``potforge compare-architectures`` and ``potforge train --architecture hipnn``: both
architectures trained on one campaign's dataset, their held-out errors on its AL test set
recomputed independently from the saved models, and the side-by-side validation table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from potforge.compare import Comparison, error_rows, render_markdown, validation_rows


def test_side_by_side_rows_pair_the_same_property():
    res = Comparison(
        errors={
            "ani": {
                "energy_mae_meV_per_atom": 1.234,
                "energy_rmse_meV_per_atom": 2.0,
                "force_mae_eV_per_A": 0.05,
                "force_rmse_eV_per_A": 0.07,
            },
            "hipnn": {
                "energy_mae_meV_per_atom": 1.5,
                "energy_rmse_meV_per_atom": 2.5,
                "force_mae_eV_per_A": 0.06,
                "force_rmse_eV_per_A": 0.08,
            },
        },
        validation={
            "ani": [["EOS", "a0", 4.02, 4.05, "Å", 3], ["EOS", "B", 70.0, 76.0, "GPa", 1]],
            "hipnn": [["EOS", "B", 80.5, 76.0, "GPa", 1], ["EOS", "a0", 4.10, 4.05, "Å", 3]],
        },
        counts={"train": 10, "val": 2, "test": 3},
    )
    assert error_rows(res)[0] == ["energy MAE", "meV/atom", "1.23", "1.50"]
    rows = {r[1]: r for r in validation_rows(res)}
    assert rows["a0"] == ["EOS", "a0", "Å", "4.050", "4.020 (-0.030)", "4.100 (+0.050)"]
    assert rows["B"] == ["EOS", "B", "GPa", "76.0", "70.0 (-6.0)", "80.5 (+4.5)"]
    md = render_markdown(res)
    assert "| force RMSE | eV/Å | 0.070 | 0.080 |" in md and "test (AL test set) 3" in md


@pytest.mark.slow  # a one-generation campaign, two trainings and two quick validations: about 70 s
def test_compare_architectures_on_a_tiny_campaign(tmp_path):
    from tests.integration.test_campaign import tiny_config

    from potforge.campaign import run_campaign
    from potforge.cli import app
    from potforge.config import parse_config
    from potforge.data import DatasetStore
    from potforge.model import load_model
    from potforge.model.hipnn import HipnnEnsemble
    from potforge.model.neighbors import AtomsBatch
    from potforge.train import dataset_elements, load_split

    cfg = tiny_config(loop={"max_generations": 1, "later_max_epochs": 3, "target_median_time_to_flag_fs": 300})
    cfg["initial"]["n_cells"] = 16
    run_campaign(parse_config(cfg), tmp_path / "c")
    runner = CliRunner()
    result = runner.invoke(app, ["compare-architectures", str(tmp_path / "c"), "--epochs", "3", "--threads", "1"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "c" / "compare"
    saved = json.loads((out / "compare.json").read_text())
    store = DatasetStore(tmp_path / "c" / "campaign.db")
    test = load_split(store, "test", dataset_elements(store))
    assert saved["counts"]["test"] == len(test) > 0
    for arch in ("ani", "hipnn"):
        model = load_model(out / arch / "model.pt", dtype=torch.float64)
        assert getattr(model, "architecture", "ani") == arch
        assert saved["training"][arch]["settings"]["architecture"] == arch
        # the reported AL-test errors are the saved model's, recomputed here
        batch = AtomsBatch(test.positions, test.species, torch.repeat_interleave(torch.arange(len(test)), test.n_atoms),
                           test.cells, test.pbc)  # fmt: skip
        pred = model.evaluate(batch)
        de = ((pred.energy - test.energies) / test.n_atoms).abs().mean() * 1e3
        df = (pred.forces - test.forces).pow(2).mean().sqrt()
        assert saved["errors"][arch]["energy_mae_meV_per_atom"] == pytest.approx(float(de), rel=1e-6)
        assert saved["errors"][arch]["force_rmse_eV_per_A"] == pytest.approx(float(df), rel=1e-6)
        # the uncertainty quantiles reported are those of the model's own held-out frames
        metrics = json.loads((out / arch / "metrics.json").read_text())
        rho = metrics["test"]["per_frame"]["energy_eV_per_sqrt_atom"]
        assert saved["uncertainty"][arch]["energy_eV_per_sqrt_atom"]["q90"] == pytest.approx(np.quantile(rho, 0.9))
        props = {r[1] for r in saved["validation"][arch]}
        assert any(p.startswith("a0") for p in props)
    assert "HIP-NN" in (out / "compare.md").read_text()
    # potforge train --architecture hipnn on the same dataset
    result = runner.invoke(app, ["train", "--db", str(tmp_path / "c" / "campaign.db"), "--out", str(tmp_path / "t"),
                                 "--architecture", "hipnn", "--epochs", "1", "--members", "2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    model = load_model(tmp_path / "t" / "model.pt")
    assert isinstance(model, HipnnEnsemble) and model.n_members == 2
