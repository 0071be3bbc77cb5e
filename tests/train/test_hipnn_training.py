"""Training HIP-NN ensembles with the same trainer as ANI: exact gradients through the force
term of Eq. 1 (forces by autograd with create_graph), learning, resume, warm starts, and the
``architecture`` setting."""

from __future__ import annotations

import pytest
import torch

from potforge.errors import DataError, ModelFileError
from potforge.model import load_model
from potforge.model.hipnn import HipnnEnsemble
from potforge.train import TrainConfig, build_model, fit_self_energies, frame_losses, predict_with_grad, train_ensemble
from potforge.train.trainer import CHECKPOINT, warm_start


@pytest.fixture(autouse=True)
def no_plots(monkeypatch):
    """The plots are the ANI tests' business (matplotlib takes seconds a run)."""
    monkeypatch.setattr("potforge.train.trainer.write_plots", lambda *a, **k: [])


SMALL = {"n_features": 6, "n_sensitivities": 8, "n_interaction_layers": 2, "n_atom_layers": 1}


def hip_config(hipnn: dict | None = None, **kw) -> TrainConfig:
    return TrainConfig(architecture="hipnn", hipnn={**SMALL, **(hipnn or {})}, **kw)


def test_architecture_setting_is_validated():
    assert TrainConfig().architecture == "ani"
    with pytest.raises(ValueError, match="architecture"):
        TrainConfig(architecture="schnet")
    with pytest.raises(ValueError, match="standardize_inputs"):
        TrainConfig(architecture="hipnn", standardize_inputs=True)
    with pytest.raises(ValueError, match="soft_min_A"):
        TrainConfig(architecture="hipnn", hipnn={"soft_max_A": 8.0, "cutoff_A": 7.0})


def test_gradient_through_force_term_matches_finite_differences(tiny_train):
    cfg = hip_config(n_members=2, dtype="float64", seed=3, hipnn={"energy_decay": 1.0})
    model = build_model(("Al",), cfg, fit_self_energies(tiny_train))
    assert isinstance(model, HipnnEnsemble)
    batch, e, f, n = tiny_train.batch(torch.arange(2), torch.float64)

    def loss(l0):
        energies, forces = predict_with_grad(model, batch)
        return frame_losses(energies, forces, e, f, batch.system, n, l0).sum()

    names = [
        "net__blocks__0__0__base_layer__int_weights",
        "net__blocks__1__0__base_layer__sensitivity__mu",
        "energy__layers__2__weight",
    ]
    for l0 in (0.01, 10.0):  # energy-dominated and force-dominated
        model.zero_grad()
        loss(l0).backward()
        for name in names:
            p = getattr(model.networks, name)
            for m in (0, 1):
                idx = (m,) + (0,) * (p.dim() - 1)
                h = 1e-6
                with torch.no_grad():
                    old = p[idx].item()
                    p[idx] = old + h
                    up = loss(l0).item()
                    p[idx] = old - h
                    down = loss(l0).item()
                    p[idx] = old
                assert p.grad[idx].item() == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-6)


def test_training_learns_and_members_stay_independent(tiny_train, tiny_heldout, tmp_path):
    cfg = hip_config(n_members=3, max_epochs=12, batch_size=2, l0_A2=1.0, lr=5e-3, seed=5)
    from potforge.train.metrics import ensemble_metrics

    untrained = build_model(("Al",), cfg, fit_self_energies(tiny_train))
    before = ensemble_metrics(untrained, tiny_heldout)["ensemble"]
    result = train_ensemble(tiny_train, tiny_heldout, tiny_heldout, tmp_path, cfg)
    after = result.metrics["test"]["ensemble"]
    assert after["force_rmse_eV_per_A"] < 0.7 * before["force_rmse_eV_per_A"]
    model = load_model(result.model_path)
    assert isinstance(model, HipnnEnsemble) and model.metadata["train_config"]["architecture"] == "hipnn"
    w = model.networks.net__blocks__1__0__base_layer__int_weights
    assert not torch.allclose(w[0], w[1])
    members = result.metrics["test"]["members"]
    assert len({round(x["force_rmse_eV_per_A"], 9) for x in members}) == len(members)
    assert "calibration" in result.metrics["test"]  # the held-out spread the campaign calibrates on


def test_resume_continues_exactly(tiny_train, tiny_heldout, tmp_path):
    cfg = hip_config(n_members=2, max_epochs=4, batch_size=3, seed=4)
    straight = train_ensemble(tiny_train, tiny_heldout, tiny_heldout, tmp_path / "straight", cfg)
    short = cfg.model_copy(update={"max_epochs": 2})
    train_ensemble(tiny_train, tiny_heldout, tiny_heldout, tmp_path / "resumed", short)
    assert torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=True)["epoch"] == 2
    resumed = train_ensemble(tiny_train, tiny_heldout, tiny_heldout, tmp_path / "resumed", cfg)
    assert resumed.resumed and resumed.epochs == 4
    a = load_model(straight.model_path, dtype=torch.float64).networks.state_dict()
    b = load_model(resumed.model_path, dtype=torch.float64).networks.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7)
    other = cfg.model_copy(update={"architecture": "ani"})
    with pytest.raises(DataError, match="other training settings"):
        train_ensemble(tiny_train, tiny_heldout, tiny_heldout, tmp_path / "resumed", other)


def test_warm_start_reproduces_the_previous_model(tiny_train, tiny_heldout):
    cfg = hip_config(n_members=2, dtype="float64", seed=6, hipnn={"energy_decay": 1.0})
    previous = build_model(("Al",), cfg, [-3.0])
    model = warm_start(previous, ("Al",), cfg, fit_self_energies(tiny_heldout))
    assert model.self_energies_eV != previous.self_energies_eV
    batch, _, _, _ = tiny_train.batch(torch.arange(3), torch.float64)
    torch.testing.assert_close(model.evaluate(batch).member_energies, previous.evaluate(batch).member_energies)
    with pytest.raises(ModelFileError, match="ani model"):
        warm_start(previous, ("Al",), TrainConfig(), [-3.0])
