"""A tiny campaign with ``training: {architecture: hipnn}``: random cells -> EMT -> HIP-NN
ensemble -> MD until the HIP-NN ensemble disagrees -> label -> warm-started retraining, with
the stop thresholds calibrated on the HIP-NN model's own held-out spread."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.integration.test_campaign import tiny_config

from potforge.campaign import held_out_uncertainty, model_path, run_campaign
from potforge.config import parse_config
from potforge.data import DatasetStore
from potforge.model import load_model
from potforge.model.hipnn import HipnnEnsemble


@pytest.mark.slow  # about 35 s on 2 cores
def test_tiny_hipnn_campaign(tmp_path):
    cfg = tiny_config(
        training={"architecture": "hipnn", "hipnn": {"n_features": 6, "n_sensitivities": 8, "n_atom_layers": 1},
                  "n_members": 3, "max_epochs": 4, "batch_size": 2, "l0_A2": 1.0, "threads": 1},
        loop={"max_generations": 2, "later_max_epochs": 3, "target_median_time_to_flag_fs": 300},
    )  # fmt: skip
    cfg["sampler"]["uncertainty"] = {"energy_eV_per_sqrt_atom": 1e-4, "relative_quantile": 0.5}
    cfg["sampler"]["max_trajectories"] = 4
    config = parse_config(cfg)
    assert config.training.architecture == "hipnn"
    state = run_campaign(config, tmp_path / "c")
    assert state.finished
    assert [s for s in state.done if s.endswith(":train")] == ["g000:train", "g001:train", "g002:train"]
    models = [load_model(model_path(tmp_path / "c", g), dtype=torch.float64) for g in range(3)]
    assert all(isinstance(m, HipnnEnsemble) and m.n_members == 3 for m in models)
    assert all(m.metadata["train_config"]["architecture"] == "hipnn" for m in models)
    # the sampler ran the HIP-NN ensemble and stopped trajectories where it disagreed: the
    # flagged frames were labelled and trained on by the next generation
    store = DatasetStore(tmp_path / "c" / "campaign.db")
    assert store.count(status="ok", source="active_learning") >= 1
    assert models[2].metadata["n_train_frames"] > models[0].metadata["n_train_frames"]
    # thresholds calibrated for this architecture: the energy threshold of generation 0's
    # sampling is the median of the HIP-NN model's own held-out ρ = σ_E/√N (above the 1e-4 floor)
    held_out = held_out_uncertainty(model_path(tmp_path / "c", 0).parent)
    expected = float(np.quantile(held_out["energy_eV_per_sqrt_atom"], 0.5))
    assert expected > 1e-4  # the calibration, not the absolute floor, sets it
    sample0 = next(h for h in state.history if h["stage"] == "g000:sample")
    assert sample0["thresholds"]["energy_eV_per_sqrt_atom"] == pytest.approx(expected)
    assert sample0["flagged"] >= 1
