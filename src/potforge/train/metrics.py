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


def ensemble_metrics(model: ANIEnsemble, frames: FrameSet) -> dict:
    """Energy MAE/RMSE (meV/atom) and force-component MAE/RMSE (eV/Å) of the ensemble mean and
    of every member on ``frames``; empty dict for no frames."""
    if len(frames) == 0:
        return {"n_frames": 0}
    e, f = predict_frameset(model, frames)
    return {
        "n_frames": len(frames),
        "n_atoms": int(frames.n_atoms.sum()),
        "ensemble": _errors(e.mean(0), f.mean(0), frames),
        "members": [_errors(e[k], f[k], frames) for k in range(e.shape[0])],
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
    return paths
