"""Held-out errors of an ensemble (per member and for the ensemble mean) and training plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from potforge import durable
from potforge.model.ensemble import ANIEnsemble
from potforge.train.frames import FrameSet


def predict_frameset(model: ANIEnsemble, frames: FrameSet, chunk: int = 64):
    """Member energies (M, F) eV and member forces (M, N, 3) eV/Å for every frame."""
    energies, forces = [], []
    for start in range(0, len(frames), chunk):
        idx = torch.arange(start, min(start + chunk, len(frames)))
        batch, _, _, _ = frames.batch(idx, model.dtype)
        pred = model.evaluate(batch, forces=True, member_forces=True)
        energies.append(pred.member_energies.double().cpu())
        forces.append(pred.member_forces.double().cpu())
    return torch.cat(energies, 1), torch.cat(forces, 1)


def _errors(e_pred: torch.Tensor, f_pred: torch.Tensor, frames: FrameSet) -> dict[str, float]:
    n = frames.n_atoms.double()
    de = (e_pred - frames.energies) / n * 1e3  # meV/atom
    df = (f_pred - frames.forces).reshape(-1)  # force components, eV/Å
    return {
        "energy_mae_meV_per_atom": float(de.abs().mean()),
        "energy_rmse_meV_per_atom": float(de.pow(2).mean().sqrt()),
        "force_mae_eV_per_A": float(df.abs().mean()),
        "force_rmse_eV_per_A": float(df.pow(2).mean().sqrt()),
    }


#: uncertainty measure -> the true error it predicts, per frame (see :func:`uncertainty_calibration`)
CALIBRATION_PAIRS = {
    "energy_eV_per_sqrt_atom": "energy_error_eV_per_sqrt_atom",
    "force_mean_eV_per_A": "force_rmse_eV_per_A",
    "force_max_eV_per_A": "force_max_error_eV_per_A",
}
QUANTILES = (0.5, 0.9, 0.95, 0.99)


def frame_uncertainty(e: torch.Tensor, f: torch.Tensor, frames: FrameSet) -> dict[str, np.ndarray]:
    """Per frame: the ensemble's uncertainty measures (as the sampler computes them) and the
    ensemble mean's true errors. e (M, B) eV, f (M, N, 3) eV/Å."""
    n = frames.n_atoms.double()
    system = torch.repeat_interleave(torch.arange(len(frames)), frames.n_atoms)
    spread = torch.sqrt(((f - f.mean(0)) ** 2).sum(-1).sum(0) / max(e.shape[0] - 1, 1))  # (N,)
    err = ((f.mean(0) - frames.forces) ** 2).sum(-1)  # (N,) squared error of each atom's force
    zeros = torch.zeros(len(frames), dtype=torch.float64)
    return {
        "energy_eV_per_sqrt_atom": (e.std(0) / n.sqrt()).numpy(),
        "force_mean_eV_per_A": (zeros.index_add(0, system, spread) / n).numpy(),
        "force_max_eV_per_A": zeros.scatter_reduce(0, system, spread, "amax").numpy(),
        "energy_error_eV_per_sqrt_atom": ((e.mean(0) - frames.energies).abs() / n.sqrt()).numpy(),
        "force_rmse_eV_per_A": (zeros.index_add(0, system, err) / (3 * n)).sqrt().numpy(),
        "force_max_error_eV_per_A": zeros.scatter_reduce(0, system, err.sqrt(), "amax").numpy(),
    }


def _spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def uncertainty_calibration(per_frame: dict[str, np.ndarray]) -> dict:
    """For each uncertainty measure: its quantiles over the frames, the Spearman rank
    correlation with the true error it predicts, and the calibration slope a of
    true ≈ a × predicted (least squares through the origin: a > 1 means overconfident)."""
    out = {}
    for measure, truth in CALIBRATION_PAIRS.items():
        x, y = per_frame[measure], per_frame[truth]
        out[measure] = {
            "quantiles": {str(q): float(np.quantile(x, q)) for q in QUANTILES},
            "spearman": _spearman(x, y),
            "slope": float((x * y).sum() / (x * x).sum()) if (x * x).sum() > 0 else None,
        }
    return out


def ensemble_metrics(model: ANIEnsemble, frames: FrameSet) -> dict:
    """Energy MAE/RMSE (meV/atom) and force-component MAE/RMSE (eV/Å) of the ensemble mean and
    of every member on ``frames``, and how well the ensemble's spread predicts its error
    (:func:`uncertainty_calibration`); empty dict for no frames."""
    if len(frames) == 0:
        return {"n_frames": 0}
    e, f = predict_frameset(model, frames)
    per_frame = frame_uncertainty(e, f, frames)
    return {
        "n_frames": len(frames),
        "n_atoms": int(frames.n_atoms.sum()),
        "ensemble": _errors(e.mean(0), f.mean(0), frames),
        "members": [_errors(e[k], f[k], frames) for k in range(e.shape[0])],
        "calibration": uncertainty_calibration(per_frame),
        "per_frame": {k: v.tolist() for k, v in per_frame.items()},
    }


def write_plots(model: ANIEnsemble, history: list[dict], frames: FrameSet, out_dir: Path) -> list[Path]:
    """learning_curves.png (losses and learning rates per epoch) and parity.png (held-out
    energies and force components, ensemble mean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    if history:
        epochs = [h["epoch"] for h in history]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        tr = np.array([h["train_loss"] for h in history])
        va = np.array([h["val_loss"] for h in history])
        ax1.semilogy(epochs, tr, color="tab:blue", alpha=0.25, lw=0.8)
        ax1.semilogy(epochs, va, color="tab:orange", alpha=0.25, lw=0.8)
        ax1.semilogy(epochs, tr.mean(1), color="tab:blue", lw=2, label="train (member mean)")
        ax1.semilogy(epochs, va.mean(1), color="tab:orange", lw=2, label="validation (member mean)")
        ax1.set_xlabel("epoch")
        ax1.set_ylabel("loss, Eq. 1 (eV²)")
        ax1.legend()
        ax2.semilogy(epochs, np.array([h["lr"] for h in history]).clip(min=1e-12), lw=1)
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("learning rate (each member)")
        fig.tight_layout()
        path = out_dir / "learning_curves.png"
        durable.save_figure(fig, path, dpi=110)
        plt.close(fig)
        paths.append(path)
    if len(frames):
        e, f = predict_frameset(model, frames)
        n = frames.n_atoms.double()
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.5))
        ref_e, pred_e = (frames.energies / n).numpy(), (e.mean(0) / n).numpy()
        ax1.scatter(ref_e, pred_e, s=8)
        lo, hi = min(ref_e.min(), pred_e.min()), max(ref_e.max(), pred_e.max())
        ax1.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        rmse_e = float(np.sqrt(np.mean((pred_e - ref_e) ** 2)) * 1e3)
        ax1.set(
            xlabel="reference energy (eV/atom)", ylabel="model energy (eV/atom)", title=f"RMSE {rmse_e:.2f} meV/atom"
        )
        ref_f, pred_f = frames.forces.reshape(-1).numpy(), f.mean(0).reshape(-1).numpy()
        ax2.scatter(ref_f, pred_f, s=2, alpha=0.4)
        lo, hi = min(ref_f.min(), pred_f.min()), max(ref_f.max(), pred_f.max())
        ax2.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        rmse_f = float(np.sqrt(np.mean((pred_f - ref_f) ** 2)))
        ax2.set(xlabel="reference force component (eV/Å)", ylabel="model (eV/Å)", title=f"RMSE {rmse_f:.3f} eV/Å")
        fig.tight_layout()
        path = out_dir / "parity.png"
        durable.save_figure(fig, path, dpi=110)
        plt.close(fig)
        paths.append(path)
        per_frame = frame_uncertainty(e, f, frames)
        cal = uncertainty_calibration(per_frame)
        fig, axes = plt.subplots(1, 3, figsize=(13, 4))
        for ax, (measure, truth) in zip(axes, CALIBRATION_PAIRS.items(), strict=True):
            x, y = per_frame[measure], per_frame[truth]
            ax.loglog(x, y, "o", ms=3, alpha=0.6)
            lo, hi = max(min(x.min(), y.min()), 1e-6), max(x.max(), y.max())
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="true = predicted")
            c = cal[measure]
            if c["slope"]:
                ax.plot([lo, hi], [c["slope"] * lo, c["slope"] * hi], "r-", lw=0.8, label=f"fit: × {c['slope']:.2f}")
            rho = "—" if c["spearman"] is None else f"{c['spearman']:.2f}"
            ax.set(xlabel=f"predicted: {measure}", ylabel=f"true: {truth}", title=f"Spearman ρ = {rho}")
            ax.legend(fontsize=7)
        fig.suptitle("uncertainty calibration on held-out frames (one point per frame)")
        fig.tight_layout()
        path = out_dir / "calibration.png"
        durable.save_figure(fig, path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
