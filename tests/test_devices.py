"""Where stages compute: device settings, and (on a machine with a GPU) that the GPU computes
what the CPU does. The GPU tests are skipped where PyTorch sees no GPU (CI has none); they run
on the GPU machines that some tasks are lent."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from potforge.devices import resolve_device
from potforge.errors import ConfigError
from potforge.sample import SamplerConfig
from potforge.train import TrainConfig, train_ensemble

HAS_GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="PyTorch sees no GPU here")


def test_device_names_are_checked():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if HAS_GPU else "cpu")
    with pytest.raises(ConfigError, match="use cpu, cuda"):
        resolve_device("gpu")
    with pytest.raises(ValidationError):
        TrainConfig(device="tpu")
    with pytest.raises(ValidationError):
        SamplerConfig(device="cuda0")


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU")
def test_asking_for_a_missing_gpu_is_one_clear_error():
    with pytest.raises(ConfigError, match="sees no GPU"):
        resolve_device("cuda")


def test_campaign_may_move_between_devices(tmp_path):
    """device says where a stage runs, not what it computes: a campaign started on one machine
    resumes on another; any other change is still refused."""
    from potforge.campaign import prepare_directory
    from potforge.config import CampaignConfig

    cfg = CampaignConfig()
    prepare_directory(cfg, tmp_path)
    moved = cfg.model_copy(deep=True)
    moved.training.device = "auto"
    moved.sampler.device = "cuda:1"
    prepare_directory(moved, tmp_path)
    other = cfg.model_copy(update={"seed": 1})
    with pytest.raises(ConfigError, match="differs in: seed"):
        prepare_directory(other, tmp_path)


def test_training_resumes_on_another_device(tmp_path):
    """A checkpoint written on the CPU continues under device 'auto' (the GPU where there is one)."""
    from tests.train.conftest import emt_frames

    frames = emt_frames(4, seed=3)
    cfg = TrainConfig(n_members=2, hidden_layers=[8], max_epochs=2, batch_size=2, l0_A2=1.0, seed=1)
    train_ensemble(frames, frames, frames, tmp_path, cfg)
    more = cfg.model_copy(update={"max_epochs": 3, "device": "auto"})
    result = train_ensemble(frames, frames, frames, tmp_path, more)
    assert result.resumed and result.epochs == 3


# --- on a GPU: the same numbers as on the CPU -------------------------------------------------


@needs_gpu
def test_gpu_model_matches_cpu(ani_al64):
    from tests.conftest import random_al_cell, sheared_cell

    from potforge.model import atoms_to_batch, load_model

    gpu = load_model("ani-al", dtype=torch.float64, device="cuda")
    frames = [random_al_cell(1), random_al_cell(2), sheared_cell()]
    want = ani_al64.evaluate(atoms_to_batch(frames, ani_al64), member_forces=True, stress=True)
    got = gpu.evaluate(atoms_to_batch(frames, gpu), member_forces=True, stress=True)
    assert got.energy.device.type == "cuda"
    for name in ("member_energies", "member_forces", "force_std", "stress"):
        torch.testing.assert_close(getattr(got, name).cpu(), getattr(want, name), rtol=1e-9, atol=1e-9)


@needs_gpu
def test_gpu_training_follows_the_cpu(tmp_path):
    """Same data, settings and seed: the GPU run's weights and errors match the CPU run's (float64,
    so that the different order of floating-point sums stays invisible), and the saved model
    loads on a CPU."""
    from tests.train.conftest import emt_frames

    from potforge.model import load_model

    frames = emt_frames(4, seed=4)
    cfg = TrainConfig(
        n_members=2, hidden_layers=[16, 8], max_epochs=3, batch_size=2, l0_A2=1.0, seed=2, dtype="float64"
    )
    cpu = train_ensemble(frames, frames, frames, tmp_path / "cpu", cfg)
    gpu = train_ensemble(frames, frames, frames, tmp_path / "gpu", cfg.model_copy(update={"device": "cuda"}))
    a = load_model(cpu.model_path, dtype=torch.float64).networks.state_dict()
    b = load_model(gpu.model_path, dtype=torch.float64).networks.state_dict()
    assert all(t.device.type == "cpu" for t in b.values())
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-7, atol=1e-9)
    assert gpu.metrics["test"]["ensemble"] == pytest.approx(cpu.metrics["test"]["ensemble"], rel=1e-6)


@needs_gpu
def test_gpu_sampler_follows_the_cpu(ani_al64, tmp_path):
    """With the model on the GPU, the batched MD integrates the same trajectories (float64) and
    the sampler stops the same trajectories at the same times."""
    from tests.md.test_engine import INTEG, _drives, _frames
    from tests.sample.test_sampler import SMALL, sampler_config

    from potforge import md
    from potforge.model import load_model
    from potforge.records import SampleSummary
    from potforge.sample import Sampler

    gpu_model = load_model("ani-al", dtype=torch.float64, device="cuda")
    ends = {}
    for name, model in (("cpu", ani_al64), ("gpu", gpu_model)):
        prov = md.EnsembleForces(model)
        state = md.init(_frames(3), _drives(), [1, 2, 3], prov)
        ends[name] = md.run(state, prov, INTEG, 30)
    assert ends["gpu"].positions.device.type == "cpu"  # the MD state stays on the CPU
    np.testing.assert_allclose(ends["gpu"].positions, ends["cpu"].positions, atol=1e-8)
    np.testing.assert_allclose(ends["gpu"].momenta, ends["cpu"].momenta, atol=1e-8)

    cfg = sampler_config(dtype="float64")
    outcomes = {}
    for name, model in (("cpu", ani_al64), ("gpu", gpu_model)):
        Sampler(model, cfg, SMALL, tmp_path / name, seed=1, generation=0).run()
        summary = SampleSummary.read(tmp_path / name / "summary.json")
        outcomes[name] = [(o.traj, o.outcome, o.time_fs) for o in summary.outcomes]
    assert outcomes["gpu"] == outcomes["cpu"] and any(o[1] == "flagged" for o in outcomes["cpu"])
