"""Standardised-input training of the first layer: an exact reparametrisation that changes only
the optimiser's geometry."""

from __future__ import annotations

import copy

import torch

from potforge.train import TrainConfig, build_model, train_ensemble
from potforge.train.loss import frame_losses, predict_with_grad
from potforge.train.trainer import CHECKPOINT, _fit_scaling


def _model_and_scaling(frames):
    cfg = TrainConfig(n_members=2, hidden_layers=[16, 8], dtype="float64", seed=3)
    model = build_model(("Al",), cfg, [0.0])
    return model, _fit_scaling(model, frames)


def test_round_trip_leaves_the_model_unchanged(tiny_train):
    model, scaling = _model_and_scaling(tiny_train)
    before = {k: v.clone() for k, v in model.networks.state_dict().items()}
    batch, *_ = tiny_train.batch(torch.arange(3), torch.float64)
    e0 = model.evaluate(batch).energy
    scaling.to_standardised(model)
    assert not torch.allclose(model.networks.w_Al_0, before["w_Al_0"])
    scaling.to_model(model)
    for k, v in model.networks.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.evaluate(batch).energy, e0, rtol=0, atol=1e-10)


def test_gradients_map_by_the_chain_rule(tiny_train):
    """dL/dV and dL/dc from the mapped gradients equal autograd's through W = V/σ, b = c − μW."""
    model, scaling = _model_and_scaling(tiny_train)
    batch, e_ref, f_ref, n = tiny_train.batch(torch.arange(4), torch.float64)

    def loss_of(m):
        energies, forces = predict_with_grad(m, batch)
        return frame_losses(energies, forces, e_ref, f_ref, batch.system, n, 1.0).sum()

    model.networks.zero_grad()
    loss_of(model).backward()
    scaling.to_standardised(model)
    w, b = model.networks.layer("Al", 0)
    mapped_v, mapped_c = w.grad.clone(), b.grad.clone()

    # reference: make (V, c) leaves and rebuild (W, b) from them
    v_leaf = w.detach().clone().requires_grad_(True)
    c_leaf = b.detach().clone().requires_grad_(True)
    mu, sd = scaling.mean["Al"], scaling.std["Al"]
    ref_model = copy.deepcopy(model)
    w_new = v_leaf / sd[:, None]
    b_new = c_leaf - torch.einsum("i,mio->mo", mu, w_new)[:, None, :]
    del ref_model.networks._parameters["w_Al_0"], ref_model.networks._parameters["b_Al_0"]
    ref_model.networks.w_Al_0, ref_model.networks.b_Al_0 = w_new, b_new
    gv, gc = torch.autograd.grad(loss_of(ref_model), (v_leaf, c_leaf))
    torch.testing.assert_close(mapped_v, gv, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(mapped_c, gc, rtol=1e-9, atol=1e-10)


def test_standardised_inputs_train_faster(tiny_train, tmp_path):
    """Same data, seed and epochs: the preconditioned run fits the forces better (the raw AEV's
    small short-range features learn slowly under plain Adam)."""
    errors = {}
    for flag in (False, True):
        cfg = TrainConfig(
            n_members=2, hidden_layers=[32, 16], max_epochs=30, batch_size=2, l0_A2=4.0, seed=6, standardize_inputs=flag
        )
        result = train_ensemble(tiny_train, tiny_train, tiny_train, tmp_path / str(flag), cfg)
        errors[flag] = result.metrics["test"]["ensemble"]["force_rmse_eV_per_A"]
    assert errors[True] < 0.8 * errors[False], errors  # measured: 0.66 vs 0.96 eV/Å


STANDARDISED = {"max_epochs": 3, "standardize_inputs": True}


def test_runs_recorded_before_the_setting_existed_resume_as_they_were_trained(tiny_train, tmp_path):
    """A checkpoint or campaign written without ``standardize_inputs`` was trained without it:
    it resumes with false, whatever the default, and true is refused rather than mixed in."""
    import json

    import pytest
    import yaml

    from potforge.campaign import prepare_directory
    from potforge.config import CampaignConfig
    from potforge.errors import ConfigError, DataError

    old = TrainConfig(n_members=2, hidden_layers=[8], max_epochs=2, batch_size=2, seed=1, standardize_inputs=False)
    train_ensemble(tiny_train, tiny_train, tiny_train, tmp_path / "m", old)
    ckpt = torch.load(tmp_path / "m" / CHECKPOINT, weights_only=True)
    settings = json.loads(ckpt["config"])
    del settings["standardize_inputs"]
    ckpt["config"] = json.dumps(settings)
    torch.save(ckpt, tmp_path / "m" / CHECKPOINT)
    with pytest.raises(DataError, match="other training settings"):
        train_ensemble(tiny_train, tiny_train, tiny_train, tmp_path / "m", old.model_copy(update=STANDARDISED))
    more = old.model_copy(update={"max_epochs": 3})
    resumed = train_ensemble(tiny_train, tiny_train, tiny_train, tmp_path / "m", more)
    assert resumed.resumed and resumed.epochs == 3

    prepare_directory(CampaignConfig(), tmp_path / "c")
    record = yaml.safe_load((tmp_path / "c" / "config.yaml").read_text())
    del record["config"]["training"]["standardize_inputs"]
    (tmp_path / "c" / "config.yaml").write_text(yaml.safe_dump(record))
    standardised = CampaignConfig()
    standardised.training.standardize_inputs = True
    with pytest.raises(ConfigError, match="differs in: training"):
        prepare_directory(standardised, tmp_path / "c")
    legacy = CampaignConfig()
    legacy.training.standardize_inputs = False
    prepare_directory(legacy, tmp_path / "c")
