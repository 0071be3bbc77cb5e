"""Training: Eq. 1 by hand, exact gradients through the force term, overfitting, resume,
independent members, warm starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from potforge.errors import DataError
from potforge.model import load_model
from potforge.train import TrainConfig, build_model, fit_self_energies, frame_losses, predict_with_grad, train_ensemble
from potforge.train.precondition import FeatureScaling
from potforge.train.trainer import CHECKPOINT, warm_start


def test_loss_matches_hand_computation():
    energies = torch.tensor([[1.0, 2.0]], dtype=torch.float64)  # one member, two frames
    ref_e = torch.tensor([0.5, 2.5], dtype=torch.float64)
    forces = torch.tensor([[[1.0, 0, 0], [0, 0, 0], [0, 2.0, 0]]], dtype=torch.float64)
    ref_f = torch.zeros(3, 3, dtype=torch.float64)
    system = torch.tensor([0, 0, 1])
    n = torch.tensor([2, 1])
    loss = frame_losses(energies, forces, ref_e, ref_f, system, n, l0_A2=0.01)
    # frame 0: 0.5² + 0.01/2 * 1² ; frame 1: 0.5² + 0.01/1 * 2²
    assert loss[0].tolist() == pytest.approx([0.25 + 0.005, 0.25 + 0.04])


def test_gradient_through_force_term_matches_finite_differences(tiny_train):
    cfg = TrainConfig(n_members=2, hidden_layers=[12, 8], dtype="float64", seed=3)
    model = build_model(("Al",), cfg, fit_self_energies(tiny_train))
    batch, e, f, n = tiny_train.batch(torch.arange(2), torch.float64)

    def loss(l0):
        energies, forces = predict_with_grad(model, batch)
        return frame_losses(energies, forces, e, f, batch.system, n, l0).sum()

    for l0 in (0.01, 10.0):  # energy-dominated and force-dominated
        model.zero_grad()
        loss(l0).backward()
        for name in ("w_Al_0", "b_Al_1", "w_Al_2"):
            p = getattr(model.networks, name)
            for idx in [(0, 0, 0), (1, p.shape[1] - 1, p.shape[2] - 1)]:
                h = 1e-6
                with torch.no_grad():
                    old = p[idx].item()
                    p[idx] = old + h
                    up = loss(l0).item()
                    p[idx] = old - h
                    down = loss(l0).item()
                    p[idx] = old
                assert p.grad[idx].item() == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-6)


def test_virial_term_by_hand_skips_frames_without_a_stress():
    energies = torch.zeros(1, 2, dtype=torch.float64)
    virial = torch.zeros(1, 2, 3, 3, dtype=torch.float64)
    virial[0, 0, 0, 0] = 3.0
    ref = torch.zeros(2, 3, 3, dtype=torch.float64)
    ref[1] = float("nan")  # a cluster: no stress, no term, no NaN
    n = torch.tensor([2, 1])
    loss = frame_losses(energies, None, energies[0], torch.zeros(3, 3), torch.tensor([0, 0, 1]), n, 0.0,
                        virial, ref, stress_weight=0.5)  # fmt: skip
    assert loss[0].tolist() == pytest.approx([0.5 * 9.0 / 2, 0.0])


def test_virial_is_the_strain_derivative_of_each_members_energy(tiny_train):
    """The training path's virial against central differences of the energy under a strain."""
    cfg = TrainConfig(n_members=2, hidden_layers=[12, 8], dtype="float64", seed=3)
    model = build_model(("Al",), cfg, fit_self_energies(tiny_train))
    batch, _, _, _ = tiny_train.batch(torch.arange(2), torch.float64)
    _, _, virial = predict_with_grad(model, batch, want_stress=True)
    h = 1e-5
    for a, b in [(0, 0), (1, 2), (2, 1)]:
        strain = torch.eye(3, dtype=torch.float64)
        eps = torch.zeros(3, 3, dtype=torch.float64)
        eps[a, b] = eps[b, a] = h / 2 if a != b else h
        energies = []
        for sign in (1, -1):
            deformed = strain + sign * eps
            moved = type(batch)(batch.positions @ deformed, batch.species, batch.system, batch.cells @ deformed,
                                batch.pbc)  # fmt: skip
            energies.append(model.evaluate(moved, forces=False).member_energies)
        fd = (energies[0] - energies[1]) / (2 * h)  # (M, B): dE/dε_ab for a symmetric strain
        assert virial[:, :, a, b].detach() == pytest.approx(fd, rel=1e-5, abs=1e-7)


def test_gradient_through_virial_term_matches_finite_differences(tiny_train):
    cfg = TrainConfig(n_members=2, hidden_layers=[12, 8], dtype="float64", seed=3)
    model = build_model(("Al",), cfg, fit_self_energies(tiny_train))
    batch, e, f, n = tiny_train.batch(torch.arange(2), torch.float64)
    ref_virial = tiny_train.stress(torch.arange(2)) * batch.volumes()[:, None, None]
    assert torch.isfinite(ref_virial).all()

    def loss():
        energies, forces, virial = predict_with_grad(model, batch, want_stress=True)
        return frame_losses(energies, forces, e, f, batch.system, n, 0.01, virial, ref_virial, 10.0).sum()

    model.zero_grad()
    loss().backward()
    p = model.networks.w_Al_0
    for idx in [(0, 0, 0), (1, 3, 5)]:
        h = 1e-6
        with torch.no_grad():
            old = p[idx].item()
            p[idx] = old + h
            up = loss().item()
            p[idx] = old - h
            down = loss().item()
            p[idx] = old
        assert p.grad[idx].item() == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("stress_weight", [0.0, 1.0], ids=["eq1", "with_virial"])
def test_members_trained_a_few_at_a_time_get_the_same_gradients(tiny_train, stress_weight):
    """Chunking the members through the loss bounds memory and changes nothing else."""
    from potforge.train.trainer import member_losses_backward

    idx = torch.arange(3)
    grads, losses = [], []
    for chunk in (None, 3, 1):
        cfg = TrainConfig(n_members=5, hidden_layers=[12, 8], dtype="float64", seed=3, l0_A2=2.0,
                          stress_weight=stress_weight, member_chunk=chunk)  # fmt: skip
        model = build_model(("Al",), cfg, fit_self_energies(tiny_train))
        batch, e, f, n = tiny_train.batch(idx, torch.float64)
        weights = torch.rand(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        losses.append(member_losses_backward(model, batch, tiny_train.stress(idx), e, f, n, weights, cfg))
        grads.append([p.grad.clone() for p in model.networks.parameters()])
    for other_losses, other_grads in zip(losses[1:], grads[1:], strict=True):
        assert other_losses == pytest.approx(losses[0], rel=1e-12)
        for a, b in zip(other_grads, grads[0], strict=True):
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)


def test_tiny_ensemble_overfits_a_few_frames(tiny_train, tmp_path):
    frames = tiny_train
    cfg = TrainConfig(n_members=2, hidden_layers=[32, 16], max_epochs=300, batch_size=2, l0_A2=1.0, lr=3e-3, seed=1)
    result = train_ensemble(frames, frames, frames, tmp_path, cfg)
    err = result.metrics["test"]["ensemble"]
    # a few per cent of the frames' own spread of energy per atom (~250 meV/atom): the rounding of
    # 300 float32 epochs differs between CPUs (5.2 meV/atom on an AMD EPYC, below 5 on an Intel Xeon)
    spread_meV = 1000 * float((frames.energies / frames.n_atoms).std())
    assert err["energy_rmse_meV_per_atom"] < 0.03 * spread_meV
    start_force_std = float(frames.forces.std())
    assert err["force_rmse_eV_per_A"] < 0.15 * start_force_std
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test"]["ensemble"] == pytest.approx(err)
    assert (tmp_path / "learning_curves.png").stat().st_size > 1000 and (tmp_path / "parity.png").stat().st_size > 1000


@pytest.mark.parametrize("standardize", [False, True], ids=["raw", "standardised_inputs"])
def test_resume_continues_exactly(tiny_train, tiny_heldout, tmp_path, standardize):
    cfg = TrainConfig(
        n_members=2, hidden_layers=[16, 8], max_epochs=6, batch_size=2, seed=4, standardize_inputs=standardize
    )
    straight = train_ensemble(tiny_train, tiny_heldout, tiny_heldout, tmp_path / "straight", cfg)
    short = cfg.model_copy(update={"max_epochs": 3})
    train_ensemble(tiny_train, tiny_heldout, tiny_heldout, tmp_path / "resumed", short)
    # a run stopped after epoch 3 (killed, or out of budget) continues from its checkpoint
    # when called again, with the same settings or only a larger budget
    checkpoint = torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=True)
    assert checkpoint["epoch"] == 3
    if standardize:  # the optimiser's coordinates travel with the checkpoint
        assert FeatureScaling.from_state_dict(checkpoint["feature_scaling"]).std["Al"].min() >= 0.01
    resumed = train_ensemble(tiny_train, tiny_heldout, tiny_heldout, tmp_path / "resumed", cfg)
    assert resumed.resumed and resumed.epochs == 6
    a = load_model(straight.model_path, dtype=torch.float64).networks.state_dict()
    b = load_model(resumed.model_path, dtype=torch.float64).networks.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7)
    with pytest.raises(DataError, match="other training settings"):
        train_ensemble(
            tiny_train, tiny_heldout, tiny_heldout, tmp_path / "resumed", cfg.model_copy(update={"lr": 5e-4})
        )


def test_training_learns_and_members_stay_independent(tiny_train, tiny_heldout, tmp_path):
    """Held-out errors fall well below those of the same ensemble untrained, and the members,
    initialised independently, end with different weights and different predictions."""
    from potforge.train.metrics import ensemble_metrics
    from potforge.train.trainer import build_model, fit_self_energies

    cfg = TrainConfig(n_members=4, hidden_layers=[24, 12], max_epochs=40, batch_size=2, l0_A2=1.0, seed=5)
    untrained = build_model(("Al",), cfg, fit_self_energies(tiny_train))
    before = ensemble_metrics(untrained, tiny_heldout)["ensemble"]
    result = train_ensemble(tiny_train, tiny_heldout, tiny_heldout, tmp_path, cfg)
    after = result.metrics["test"]["ensemble"]
    assert after["force_rmse_eV_per_A"] < 0.5 * before["force_rmse_eV_per_A"]
    assert after["energy_rmse_meV_per_atom"] < 0.5 * before["energy_rmse_meV_per_atom"]
    weights = load_model(result.model_path).networks.w_Al_0
    assert not torch.allclose(weights[0], weights[1])
    members = result.metrics["test"]["members"]
    assert len({round(m["force_rmse_eV_per_A"], 9) for m in members}) == len(members)


def test_warm_start_reproduces_the_previous_model(tiny_train, tiny_heldout):
    cfg = TrainConfig(n_members=2, hidden_layers=[16, 8], dtype="float64", seed=6)
    previous = build_model(("Al",), cfg, [-3.0])
    model = warm_start(previous, ("Al",), cfg, fit_self_energies(tiny_heldout))
    batch, _, _, _ = tiny_train.batch(torch.arange(3), torch.float64)
    torch.testing.assert_close(model.evaluate(batch).member_energies, previous.evaluate(batch).member_energies)


def test_uncertainty_calibration_against_known_relations():
    """Spearman ρ is 1 for any increasing relation and −1 for a decreasing one; the slope of
    true = a × predicted is recovered exactly; quantiles are the measure's own."""
    import numpy as np

    from potforge.train.metrics import uncertainty_calibration

    x = np.linspace(0.01, 1.0, 50)
    per_frame = {
        "energy_eV_per_sqrt_atom": x, "energy_error_eV_per_sqrt_atom": 2.5 * x,
        "force_mean_eV_per_A": x, "force_rmse_eV_per_A": np.exp(3 * x),
        "force_max_eV_per_A": x, "force_max_error_eV_per_A": 1.0 / x,
    }  # fmt: skip
    cal = uncertainty_calibration(per_frame)
    assert cal["energy_eV_per_sqrt_atom"]["slope"] == pytest.approx(2.5)
    assert cal["energy_eV_per_sqrt_atom"]["spearman"] == pytest.approx(1.0)
    assert cal["force_mean_eV_per_A"]["spearman"] == pytest.approx(1.0)
    assert cal["force_max_eV_per_A"]["spearman"] == pytest.approx(-1.0)
    assert cal["force_max_eV_per_A"]["quantiles"]["0.5"] == pytest.approx(np.median(x))


def test_calibrated_thresholds_rise_to_the_held_out_quantile_only():
    from potforge.sample.config import UncertaintyConfig

    u = UncertaintyConfig(energy_eV_per_sqrt_atom=0.01, force_mean_eV_per_A=0.15, force_max_eV_per_A=None,
                          relative_quantile=0.9, relative_factor=2.0)  # fmt: skip
    held_out = {"energy_eV_per_sqrt_atom": [0.001 * k for k in range(1, 101)], "force_mean_eV_per_A": [0.01] * 10,
                "force_max_eV_per_A": [5.0] * 10}  # fmt: skip
    c = u.calibrated(held_out)
    assert c.energy_eV_per_sqrt_atom == pytest.approx(2.0 * 0.0901)  # raised: the model is unsure everywhere
    assert c.force_mean_eV_per_A == 0.15  # the absolute threshold still rules a confident model
    assert c.force_max_eV_per_A is None  # a disabled measure stays disabled
    assert UncertaintyConfig().calibrated(held_out) == UncertaintyConfig()


_PEAK_PROBE = """
import sys, pathlib, torch
sys.path.insert(0, {tests!r})
from conftest import emt_frames
from potforge.train import TrainConfig, build_model, fit_self_energies
from potforge.train.trainer import member_losses_backward
torch.set_num_threads(1)
frames = emt_frames(8, seed=5, box=(12.0, 12.0))
cfg = TrainConfig(l0_A2=0.01, dtype="float32", member_chunk={chunk})
model = build_model(("Al",), cfg, fit_self_energies(frames))
batch, e, f, n = frames.batch(torch.arange(8), torch.float32)
weights = torch.ones(8, 8, dtype=torch.float64)
model.evaluate(batch)  # loads the kernels; a training step here would leave its memory to the allocator
def kib(field):
    line = next(l for l in pathlib.Path("/proc/self/status").read_text().splitlines() if l.startswith(field))
    return int(line.split()[1])
before = kib("VmRSS:")
pathlib.Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) restarts from here
member_losses_backward(model, batch, None, e, f, n, weights, cfg)
print(kib("VmHWM:") - before)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to read a peak RSS")
def test_training_one_member_at_a_time_bounds_the_step_memory():
    """The peak memory of a step with member_chunk 1 is well below all eight members at once."""
    import subprocess
    import sys

    tests = str(Path(__file__).parent)
    peaks = {}
    for chunk in (None, 1):
        out = subprocess.run([sys.executable, "-c", _PEAK_PROBE.format(tests=tests, chunk=chunk)],
                             capture_output=True, text=True, check=True)  # fmt: skip
        peaks[chunk] = int(out.stdout.split()[-1])
    assert peaks[None] > 10_000  # KiB: the all-at-once step does hold tens of MiB here
    assert peaks[1] < 0.6 * peaks[None]
