"""A campaign at a glance: per-generation summary and the plots ``potforge status`` writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from potforge import durable
from potforge.campaign import CampaignState, generation_dir


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def campaign_summary(directory: Path, state: CampaignState) -> dict:
    """Per generation: dataset size, training epochs and held-out errors, sampling outcomes."""
    directory = Path(directory)
    gens = []
    for g in range(state.generation + 1):
        row: dict = {"generation": g}
        for rec in state.history:
            stage = rec.get("stage", "")
            if not stage.startswith(f"g{g:03d}:"):
                continue
            if stage.endswith(":label"):
                row["dataset_size"] = rec.get("dataset_size")
            elif stage.endswith(":train"):
                row["epochs"] = rec.get("epochs")
                row["n_train"] = rec.get("n_train")
                row["test_energy_rmse_meV_per_atom"] = rec.get("test", {}).get("energy_rmse_meV_per_atom")
                row["test_force_rmse_eV_per_A"] = rec.get("test", {}).get("force_rmse_eV_per_A")
            elif stage.endswith(":sample"):
                row.update({k: rec.get(k) for k in ("flagged", "total_steps", "median_time_to_flag_fs", "stop_reason")})
            elif stage.endswith(":queue"):
                row["queued"] = rec.get("queued")
        sampling = _read(generation_dir(directory, g) / "sampling" / "summary.json")
        row["times_to_flag_fs"] = [o["time_fs"] for o in sampling.get("outcomes", []) if o["outcome"] != "running"]
        row["flag_uncertainty"] = [
            o["uncertainty"] for o in sampling.get("outcomes", []) if o["outcome"] == "flagged" and o["uncertainty"]
        ]
        gens.append(row)
    return {
        "directory": str(directory),
        "finished": state.finished,
        "stop_reason": state.stop_reason,
        "generation": state.generation,
        "generations": gens,
    }


def write_campaign_plots(directory: Path, summary: dict) -> list[Path]:
    """dataset_growth.png, time_to_flag.png, uncertainty.png, heldout_errors.png in DIR/plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(directory) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    gens = summary["generations"]
    g = [r["generation"] for r in gens]
    paths = []

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(g, [r.get("dataset_size") or 0 for r in gens], "o-")
    ax.set(xlabel="generation", ylabel="labelled frames", title="dataset growth")
    paths.append(_save(fig, out / "dataset_growth.png"))

    fig, ax = plt.subplots(figsize=(5, 3.5))
    data = [np.array(r["times_to_flag_fs"]) / 1000 for r in gens]
    if any(len(d) for d in data):
        ax.boxplot([d if len(d) else [np.nan] for d in data], positions=g, widths=0.5)
    ax.plot(g, [(r.get("median_time_to_flag_fs") or 0) / 1000 for r in gens], "r.-", label="median (incl. running)")
    ax.set(xlabel="generation", ylabel="time to flag (ps)", title="trajectory length before a weakness")
    ax.legend()
    paths.append(_save(fig, out / "time_to_flag.png"))

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    keys = [
        ("energy_eV_per_sqrt_atom", "σ_E/√N (eV)"),
        ("force_mean_eV_per_A", "mean atomic σ_F (eV/Å)"),
        ("force_max_eV_per_A", "max atomic σ_F (eV/Å)"),
    ]
    for ax, (key, label) in zip(axes, keys, strict=True):
        for r in gens:
            vals = [u[key] for u in r["flag_uncertainty"] if key in u]
            if vals:
                ax.hist(vals, bins=15, histtype="step", label=f"g{r['generation']}")
        ax.set(xlabel=label, ylabel="flagged frames")
    axes[0].legend()
    fig.suptitle("uncertainty of flagged frames")
    paths.append(_save(fig, out / "uncertainty.png"))

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax1.plot(g, [r.get("test_energy_rmse_meV_per_atom") or np.nan for r in gens], "o-")
    ax1.set(xlabel="generation", ylabel="energy RMSE (meV/atom)", title="held-out (test split)")
    ax2.plot(g, [r.get("test_force_rmse_eV_per_A") or np.nan for r in gens], "o-")
    ax2.set(xlabel="generation", ylabel="force RMSE (eV/Å)", title="held-out (test split)")
    paths.append(_save(fig, out / "heldout_errors.png"))
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    durable.save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
