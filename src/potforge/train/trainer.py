"""Training an ensemble (paper II.A): all members together, durable, resumable, warm-startable.

Each step evaluates one batch of frames once: neighbour lists, AEVs and the AEV pair terms
are shared by all members, which run as one batched network. Every member has its own Adam
learning rate, halved when its validation loss stalls; a member is finished when its rate
drops below ``lr_min`` and the run ends when all are, or at ``max_epochs``/``max_walltime_s``.
The best validation weights of each member are kept. A checkpoint is written atomically after
every epoch; calling :func:`train_ensemble` again on the same directory resumes from it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from potforge import durable
from potforge.devices import resolve_device
from potforge.errors import DataError, ModelFileError
from potforge.model.aev import AEVParams
from potforge.model.ensemble import ANIEnsemble
from potforge.model.io import save_model
from potforge.train.config import TrainConfig, with_legacy_values
from potforge.train.frames import FrameSet
from potforge.train.loss import frame_losses, geometry_of, member_slices, predict_with_grad
from potforge.train.metrics import ensemble_metrics, write_plots
from potforge.train.optim import MemberAdam
from potforge.train.precondition import FeatureScaling

CHECKPOINT = "checkpoint.pt"
MODEL_FILE = "model.pt"


@dataclass
class TrainResult:
    model_path: Path
    metrics: dict
    epochs: int
    walltime_s: float
    resumed: bool


def fit_self_energies(frames: FrameSet) -> list[float]:
    """Per-element self energies (eV) by linear least squares of energy on element counts."""
    counts = frames.element_counts()
    solution = torch.linalg.lstsq(counts, frames.energies.unsqueeze(1)).solution
    return [float(x) for x in solution.squeeze(1)]


def _dtype(name: str) -> torch.dtype:
    return torch.float32 if name == "float32" else torch.float64


def build_model(elements: tuple[str, ...], config: TrainConfig, self_energies: list[float]):
    """A freshly initialised ensemble of ``config.architecture`` (members drawn independently
    from ``config.seed``)."""
    if config.architecture == "hipnn":
        from potforge.model.hipnn import build_hipnn

        model = build_hipnn(elements, config.n_members, self_energies, config.seed, **config.hipnn.model_dump())
        return model.to(_dtype(config.dtype))
    aev = AEVParams.from_dict({**AEVParams.ani_al().to_dict(), "elements": list(elements)})
    sizes = (aev.n_features, *config.hidden_layers, 1)
    model = ANIEnsemble(aev, sizes, config.n_members, self_energies=self_energies, metadata={"trained_by": "potforge"})
    model.networks.reset_parameters(torch.Generator().manual_seed(config.seed))
    return model.to(_dtype(config.dtype))


def warm_start(previous, elements: tuple[str, ...], config: TrainConfig, sae: list[float]):
    """A copy of ``previous`` with refitted self energies; each element's output bias absorbs the
    change, so the warm-started model predicts exactly what ``previous`` did."""
    if tuple(previous.elements) != tuple(elements):
        raise ModelFileError(f"warm start needs a model for {elements}, got one for {previous.elements}")
    kind = getattr(previous, "architecture", "ani")
    if kind != config.architecture:
        raise ModelFileError(f"warm start needs a {config.architecture} model, got a {kind} one")
    if kind == "hipnn":
        return _warm_start_hipnn(previous, elements, config, sae)
    if previous.n_members != config.n_members or list(previous.networks.layer_sizes[1:-1]) != config.hidden_layers:
        raise ModelFileError("warm start needs the same members and layer sizes as the training config")
    model = build_model(elements, config, sae)
    model.networks.load_state_dict(previous.networks.state_dict())
    with torch.no_grad():
        for k, el in enumerate(elements):
            _, b = model.networks.layer(el, model.networks.n_layers - 1)
            b += previous.self_energies_eV[k] - sae[k]
    return model


def _warm_start_hipnn(previous, elements: tuple[str, ...], config: TrainConfig, sae: list[float]):
    """HIP-NN: the non-interacting read-out (a weight per element on the one-hot species)
    absorbs the change of self energies."""
    model = build_model(elements, config, sae)
    if previous.n_members != config.n_members or previous.params != model.params:
        raise ModelFileError("warm start needs the same members and HIP-NN settings as the training config")
    model.networks.load_state_dict(previous.networks.state_dict())
    with torch.no_grad():
        w = model.networks.energy__layers__0__weight  # (M, 1, n_elements)
        w += torch.tensor([p - s for p, s in zip(previous.self_energies_eV, sae, strict=True)], dtype=w.dtype)
    return model


class _State:
    """Everything a checkpoint holds beyond the weights."""

    def __init__(self, m: int) -> None:
        self.epoch = 0
        self.best_loss = torch.full((m,), math.inf, dtype=torch.float64)
        self.bad_epochs = torch.zeros(m, dtype=torch.long)
        self.best_weights: dict[str, torch.Tensor] = {}
        self.history: list[dict] = []
        self.walltime_s = 0.0


def _split_val(train: FrameSet, val: FrameSet, fraction: float, seed: int) -> tuple[FrameSet, FrameSet]:
    if len(val) > 0 or len(train) < 2:
        return train, val
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 7919))
    n_val = max(1, round(fraction * len(train)))
    return _subset(train, perm[n_val:].sort().values), _subset(train, perm[:n_val].sort().values)


def _subset(frames: FrameSet, idx: torch.Tensor) -> FrameSet:
    atoms = frames.atom_index(idx)
    n = frames.n_atoms[idx]
    return FrameSet(
        frames.elements,
        frames.positions[atoms],
        frames.species[atoms],
        frames.cells[idx],
        frames.pbc[idx],
        frames.energies[idx],
        frames.forces[atoms],
        torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(n, 0)]),
        [frames.frame_ids[i] for i in idx.tolist()],
        None if frames.stresses is None else frames.stresses[idx],
    )


def evaluate_losses(
    model: ANIEnsemble, frames: FrameSet, config: TrainConfig, chunk: int = 64
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean Eq. 1 loss per member over ``frames`` (M,), and the ensemble mean's energy RMSE
    (meV/atom) and force-component RMSE (eV/Å); no gradients."""
    total = torch.zeros(model.n_members, dtype=torch.float64)
    se_e = se_f = 0.0
    n_f = 0
    for start in range(0, len(frames), chunk):
        idx = torch.arange(start, min(start + chunk, len(frames)))
        batch, e_ref, f_ref, n = frames.batch(idx, model.dtype, model.device)
        with_stress = config.stress_weight > 0
        pred = model.evaluate(batch, forces=True, member_forces=config.l0_A2 > 0 or with_stress, stress=with_stress)
        member_f = pred.member_forces if config.l0_A2 > 0 else None
        virial = ref_virial = None
        if with_stress:
            volumes = batch.volumes().to(torch.float64)[:, None, None]
            virial = pred.member_stress.to(torch.float64) * volumes[None]
            ref_virial = frames.stress(idx, model.device) * volumes
        losses = frame_losses(
            pred.member_energies, member_f, e_ref, f_ref, batch.system, n, config.l0_A2,
            virial, ref_virial, config.stress_weight,
        )  # fmt: skip
        total += losses.sum(1).double().cpu()
        se_e += float((((pred.energy - e_ref) / n) ** 2).sum())
        se_f += float(((pred.forces.double() - f_ref.double()) ** 2).sum())
        n_f += int(f_ref.numel())
    count = max(1, len(frames))
    errors = {
        "energy_rmse_meV_per_atom": math.sqrt(se_e / count) * 1e3,
        "force_rmse_eV_per_A": math.sqrt(se_f / max(1, n_f)),
    }
    return total / count, errors


def member_losses_backward(
    model: ANIEnsemble,
    batch,
    ref_stress: torch.Tensor | None,
    e_ref: torch.Tensor,
    f_ref: torch.Tensor,
    n: torch.Tensor,
    weights: torch.Tensor,
    config: TrainConfig,
) -> torch.Tensor:
    """Every member's loss on one batch (M, B), detached, with the weighted sum's gradients
    accumulated in the weights; ``config.member_chunk`` members at a time (members have
    disjoint parameters, so chunking changes the peak memory, not the gradients). ``ref_stress``
    (B, 3, 3) eV/Å³ is read only with ``config.stress_weight`` > 0."""
    geometry = geometry_of(model, batch)
    with_stress = config.stress_weight > 0
    ref_virial = ref_stress * batch.volumes().to(torch.float64)[:, None, None] if with_stress else None
    chunks = member_slices(model.n_members, config.member_chunk)
    parts = []
    for k, members in enumerate(chunks):
        out = predict_with_grad(model, batch, want_forces=config.l0_A2 > 0 or with_stress, want_stress=with_stress,
                                members=members, geometry=geometry)  # fmt: skip
        energies, forces, virial = out if with_stress else (*out, None)
        losses = frame_losses(
            energies, forces if config.l0_A2 > 0 else None, e_ref, f_ref, batch.system, n, config.l0_A2,
            virial, ref_virial, config.stress_weight,
        )  # fmt: skip
        # the members share the AEV's graph where PyTorch computes it (GPUs): keep it for the next chunk
        (losses * weights[members].to(losses.dtype)).sum().backward(retain_graph=k < len(chunks) - 1)
        parts.append(losses.detach())
    return torch.cat(parts)


def _batches(n: int, config: TrainConfig, gen: torch.Generator, m: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of (frames, member mask (M, B)) steps."""
    b = config.batch_size
    if not config.independent_shuffles:
        perm = torch.randperm(n, generator=gen)
        return [(perm[k : k + b], torch.ones(m, len(perm[k : k + b]), dtype=torch.bool)) for k in range(0, n, b)]
    perms = torch.stack([torch.randperm(n, generator=gen) for _ in range(m)])
    steps = []
    for k in range(0, n, b):
        chosen = perms[:, k : k + b]  # (M, b) frames of each member at this step
        union = torch.unique(chosen)
        mask = (chosen.unsqueeze(-1) == union).any(1)  # (M, U)
        steps.append((union, mask))
    return steps


def train_ensemble(
    train: FrameSet,
    val: FrameSet,
    test: FrameSet,
    out_dir: str | Path,
    config: TrainConfig,
    init_model: ANIEnsemble | None = None,
    progress: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train (or resume training) an ensemble; write ``model.pt``, ``metrics.json``, plots.

    progress(record) is called after every epoch with epoch, lr, losses and validation errors.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(train) == 0:
        raise DataError("no training frames")
    if config.threads:
        torch.set_num_threads(config.threads)
    train, val = _split_val(train, val, config.val_fraction_if_missing, config.seed)
    sae = fit_self_energies(train)
    device = resolve_device(config.device)
    if init_model is not None:
        model = warm_start(init_model.to(dtype=_dtype(config.dtype), device="cpu"), train.elements, config, sae)
    else:
        model = build_model(train.elements, config, sae)
    model = model.to(device)
    m = config.n_members
    params = list(model.networks.parameters())
    opt = MemberAdam(params, torch.full((m,), config.lr))
    gen = torch.Generator().manual_seed(config.seed + 1)
    state = _State(m)
    ckpt_path = out_dir / CHECKPOINT
    resumed = False
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if _trajectory_settings(ckpt["config"]) != _trajectory_settings(config.model_dump_json()):
            raise DataError(f"{ckpt_path} was written with other training settings; remove it to start over")
        model.networks.load_state_dict(ckpt["weights"])
        model.self_energies_eV = list(ckpt["self_energies_eV"])
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["rng"])
        state.epoch, state.walltime_s = int(ckpt["epoch"]), float(ckpt["walltime_s"])
        state.best_loss, state.bad_epochs = ckpt["best_loss"], ckpt["bad_epochs"]
        state.best_weights = ckpt["best_weights"]
        state.history = json.loads(ckpt["history"])
        resumed = True
    scaling = None
    if config.standardize_inputs:
        if resumed:
            scaling = FeatureScaling.from_state_dict(ckpt["feature_scaling"])
        else:
            scaling = _fit_scaling(model, train)
            if init_model is None:
                scaling.to_model(model)  # the random initial weights are drawn for standardised inputs
    dtype = model.dtype
    start_wall = time.time() - state.walltime_s
    while state.epoch < config.max_epochs and bool((opt.lr >= config.lr_min).any()):
        if config.max_walltime_s is not None and time.time() - start_wall > config.max_walltime_s:
            break
        train_loss = torch.zeros(m, dtype=torch.float64)
        seen = torch.zeros(m, dtype=torch.float64)
        for frames_idx, mask in _batches(len(train), config, gen, m):
            batch, e_ref, f_ref, n = train.batch(frames_idx, dtype, device)
            mask = mask.to(device)
            weights = mask.to(torch.float64) / mask.sum(1, keepdim=True).clamp(min=1).to(torch.float64)
            opt.zero_grad()
            losses = member_losses_backward(model, batch, train.stress(frames_idx, device), e_ref, f_ref, n,
                                             weights, config)  # fmt: skip
            if scaling is not None:
                scaling.to_standardised(model)  # Adam steps in standardised-input coordinates
            opt.step()
            if scaling is not None:
                scaling.to_model(model)
            train_loss += (losses.detach() * mask).sum(1).double().cpu()
            seen += mask.sum(1).double().cpu()
        state.epoch += 1
        val_loss, val_errors = evaluate_losses(model, val, config)
        improved = val_loss < state.best_loss
        state.best_loss = torch.where(improved, val_loss, state.best_loss)
        state.bad_epochs = torch.where(improved, torch.zeros_like(state.bad_epochs), state.bad_epochs + 1)
        for name, p in model.networks.state_dict().items():
            best = state.best_weights.get(name)
            p = p.detach().cpu()  # best weights live on the CPU, like the checkpoint
            sel = improved.view(-1, *([1] * (p.dim() - 1)))
            state.best_weights[name] = p.clone() if best is None else torch.where(sel, p, best)
        stalled = state.bad_epochs >= config.lr_patience_epochs
        opt.lr = torch.where(stalled, opt.lr * config.lr_factor, opt.lr)
        state.bad_epochs = torch.where(stalled, torch.zeros_like(state.bad_epochs), state.bad_epochs)
        # finished members stop moving
        opt.lr = torch.where(opt.lr < config.lr_min, torch.zeros_like(opt.lr), opt.lr)
        state.walltime_s = time.time() - start_wall
        record = {
            "epoch": state.epoch,
            "train_loss": (train_loss / seen.clamp(min=1)).tolist(),
            "val_loss": val_loss.tolist(),
            "lr": opt.lr.tolist(),
            "walltime_s": state.walltime_s,
            **{f"val_{k}": v for k, v in val_errors.items()},
        }
        state.history.append(record)
        _save_checkpoint(ckpt_path, model, opt, gen, state, config, scaling)
        if progress:
            progress(record)
    # the best validation weights of each member make the final model
    if state.best_weights:
        model.networks.load_state_dict(state.best_weights)
    model.metadata.update(
        {
            "trained_by": "potforge",
            "train_config": config.model_dump(),
            "epochs": state.epoch,
            "n_train_frames": len(train),
            "best_val_loss": state.best_loss.tolist(),
        }
    )
    model_path = save_model(model, out_dir / MODEL_FILE)
    metrics = {"val": ensemble_metrics(model, val), "test": ensemble_metrics(model, test)}
    metrics["walltime_s"] = state.walltime_s
    metrics["epochs"] = state.epoch
    durable.write_json(out_dir / "metrics.json", metrics, indent=2)
    write_plots(model, state.history, test if len(test) else val, out_dir)
    return TrainResult(model_path, metrics, state.epoch, state.walltime_s, resumed)


#: Budgets only say when to stop: raising them continues a finished or stopped run; the device
#: only says where it runs: a run started on a CPU may go on on a GPU and back.
_BUDGETS = ("max_epochs", "max_walltime_s", "device", "member_chunk")  # how far or where, not which path


def _trajectory_settings(config_json: str) -> dict:
    """The settings that determine the optimisation path (a resumed run must share them)."""
    settings = with_legacy_values(json.loads(config_json))
    try:  # other settings added since the checkpoint was written take their defaults
        settings = TrainConfig.model_validate(settings).model_dump(mode="json")
    except ValueError:
        pass
    if settings.get("architecture", "ani") == "ani":
        settings.pop("hipnn", None)  # HIP-NN's settings do not touch an ANI run
    return {k: v for k, v in settings.items() if k not in _BUDGETS}


def _fit_scaling(model: ANIEnsemble, frames: FrameSet, chunk: int = 64) -> FeatureScaling:
    """AEV statistics of the training atoms (one forward pass over the training frames)."""
    aevs, species = [], []
    with torch.no_grad():
        for start in range(0, len(frames), chunk):
            idx = torch.arange(start, min(start + chunk, len(frames)))
            batch, _, _, _ = frames.batch(idx, model.dtype, model.device)
            aevs.append(model.aev_operator(batch)[2].forward().cpu())
            species.append(batch.species.cpu())
    return FeatureScaling.fit(model, torch.cat(aevs), torch.cat(species))


def _save_checkpoint(
    path: Path,
    model: ANIEnsemble,
    opt: MemberAdam,
    gen,
    state: _State,
    config: TrainConfig,
    scaling: FeatureScaling | None = None,
) -> None:
    durable.write_torch(
        path,
        {
            "feature_scaling": scaling.state_dict() if scaling is not None else {},
            "config": config.model_dump_json(),
            "weights": model.networks.state_dict(),
            "self_energies_eV": list(model.self_energies_eV),
            "optimizer": opt.state_dict(),
            "rng": gen.get_state(),
            "epoch": state.epoch,
            "walltime_s": state.walltime_s,
            "best_loss": state.best_loss,
            "bad_epochs": state.bad_epochs,
            "best_weights": state.best_weights,
            "history": json.dumps(state.history),
        },
    )
