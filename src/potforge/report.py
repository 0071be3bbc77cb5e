"""A campaign at a glance: per-generation summary and the plots ``potforge status`` writes.

Per generation: dataset size and how much of it is crystalline, held-out errors, sampling
outcomes with the Kaplan–Meier time to flag, the structure census of what the sampler explored,
and — where the campaign computes it — the property learning curve against the oracle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from potforge import durable
from potforge.campaign import CampaignState, generation_dir
from potforge.properties import LABELS, PropertyPoint
from potforge.records import SampleSummary
from potforge.sample.survival import kaplan_meier


def _legend(ax: Any, **kwargs: Any) -> None:
    """A legend where something is labelled (an early generation may have nothing to show yet)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _sampling(directory: Path, g: int) -> SampleSummary | None:
    path = generation_dir(directory, g) / "sampling" / "summary.json"
    try:
        return SampleSummary.read(path)
    except (OSError, ValueError):
        return None


def campaign_summary(directory: Path, state: CampaignState) -> dict:
    """Per generation: dataset size, training epochs and held-out errors, sampling outcomes,
    census, property errors."""
    directory = Path(directory)
    gens = []
    for g in range(state.generation + 1):
        row: dict = {"generation": g}
        for rec in state.history:
            stage = rec.get("stage", "")
            if not stage.startswith(f"g{g:03d}:"):
                continue
            kind = stage.split(":", 1)[1]
            if kind == "label":
                for k in ("dataset_size", "oracle_calls", "labelled_frames", "crystalline_frames", "implausible"):
                    row[k] = rec.get(k)
                row.setdefault("warnings", []).extend(rec.get("warnings") or [])
            elif kind == "train":
                row["epochs"] = rec.get("epochs")
                row["n_train"] = rec.get("n_train")
                row["test_energy_rmse_meV_per_atom"] = rec.get("test", {}).get("energy_rmse_meV_per_atom")
                row["test_force_rmse_eV_per_A"] = rec.get("test", {}).get("force_rmse_eV_per_A")
            elif kind == "sample":
                keys = ("flagged", "trajectories", "censored", "total_steps", "median_time_to_flag_fs",
                        "survival_at_target", "stop_reason", "census")  # fmt: skip
                row.update({k: rec.get(k) for k in keys})
                row.setdefault("warnings", []).extend(rec.get("warnings") or [])
            elif kind == "queue":
                row["queued"] = rec.get("queued")
            elif kind == "properties":
                row["properties"] = {k: v for k, v in rec.items() if k != "stage"}
        sampling = _sampling(directory, g)
        outcomes = [o for o in sampling.outcomes if o.outcome != "unused"] if sampling else []
        row["events_fs"] = [o.time_fs for o in outcomes if o.is_event]
        row["censored_fs"] = [o.time_fs for o in outcomes if not o.is_event]
        row["flag_uncertainty"] = [o.uncertainty for o in outcomes if o.outcome == "flagged" and o.uncertainty]
        gens.append(row)
    return {
        "directory": str(directory),
        "finished": state.finished,
        "stop_reason": state.stop_reason,
        "generation": state.generation,
        "generations": gens,
    }


def write_campaign_plots(directory: Path, summary: dict) -> list[Path]:
    """dataset_growth, time_to_flag (Kaplan–Meier), uncertainty, heldout_errors, census and —
    when computed — property_learning_curve, as PNG files in DIR/plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(directory) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    gens = summary["generations"]
    g = [r["generation"] for r in gens]
    paths = []

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(g, [r.get("dataset_size") or 0 for r in gens], "o-", label="labelled frames")
    ax.plot(g, [r.get("crystalline_frames") or 0 for r in gens], "s-", label="of them > 30 % crystalline")
    ax.set(xlabel="generation", ylabel="frames", title="dataset growth")
    _legend(ax, fontsize=8)
    paths.append(_save(fig, out / "dataset_growth.png"))

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    cmap = plt.get_cmap("viridis")
    for k, r in enumerate(gens):
        from potforge.records import TrajectoryOutcome

        outcomes = [TrajectoryOutcome(traj="", outcome="flagged", time_fs=t) for t in r["events_fs"]]
        outcomes += [TrajectoryOutcome(traj="", outcome="survived", time_fs=t) for t in r["censored_fs"]]
        if not outcomes:
            continue
        t, s = kaplan_meier(outcomes)
        end = max(r["events_fs"] + r["censored_fs"])
        ax1.step(np.r_[0, t, end] / 1000, np.r_[1, s, s[-1] if len(s) else 1], where="post",
                 color=cmap(k / max(len(gens) - 1, 1)), label=f"g{r['generation']}")  # fmt: skip
    ax1.axhline(0.5, color="0.5", lw=0.8, ls="--")
    ax1.set(xlabel="simulated time (ps)", ylabel="trajectories not yet flagged",
            title="Kaplan–Meier survival (censored runs count as far as they went)", ylim=(0, 1.02))  # fmt: skip
    ax1.title.set_fontsize(9)
    _legend(ax1, fontsize=7, ncol=2)
    med = [(r.get("median_time_to_flag_fs") or np.nan) / 1000 for r in gens]
    ax2.plot(g, med, "r.-", label="KM median (— : above every observed time)")
    ax2.plot(g, [np.median(r["censored_fs"]) / 1000 if r["censored_fs"] else np.nan for r in gens], "x",
             color="0.4", label="censored runs (median time)")  # fmt: skip
    ax2.set(xlabel="generation", ylabel="time to flag (ps)", title="time to flag")
    _legend(ax2, fontsize=7)
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
    _legend(axes[0], fontsize=7)
    fig.suptitle("uncertainty of flagged frames")
    paths.append(_save(fig, out / "uncertainty.png"))

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax1.plot(g, [r.get("test_energy_rmse_meV_per_atom") or np.nan for r in gens], "o-")
    ax1.set(xlabel="generation", ylabel="energy RMSE (meV/atom)", title="held-out (test split)")
    ax2.plot(g, [r.get("test_force_rmse_eV_per_A") or np.nan for r in gens], "o-")
    ax2.set(xlabel="generation", ylabel="force RMSE (eV/Å)", title="held-out (test split)")
    paths.append(_save(fig, out / "heldout_errors.png"))

    paths.append(_census_plot(plt, gens, out / "census.png"))
    if any(r.get("properties") for r in gens):
        paths.append(_learning_curve_plot(plt, gens, out / "property_learning_curve.png"))
    return paths


COLORS = {"fcc": "#2ca02c", "hcp": "#d62728", "bcc": "#1f77b4", "ico": "#9467bd", "other": "0.75"}


def _census_plot(plt, gens: list[dict], path: Path) -> Path:
    """Stacked CNA fractions of the flagged frames and of the running trajectories' snapshots per
    generation, and when trajectories first became crystalline."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    g = np.array([r["generation"] for r in gens])
    for ax, key, title in ((axes[0], "flagged_mean", "flagged frames"),
                           (axes[1], "snapshot_mean", "trajectory snapshots")):  # fmt: skip
        bottom = np.zeros(len(gens))
        for kind, color in COLORS.items():
            vals = np.array([((r.get("census") or {}).get(key) or {}).get(kind, 0.0) for r in gens])
            ax.bar(g, vals, bottom=bottom, color=color, label=kind, width=0.8)
            bottom += vals
        ax.set(xlabel="generation", ylabel="mean fraction of atoms (CNA)", ylim=(0, 1), title=title)
    _legend(axes[0], fontsize=7, loc="lower right")
    for r in gens:
        times = np.array((r.get("census") or {}).get("first_crystalline_fs") or []) / 1000
        if len(times):
            axes[2].plot(np.full(len(times), r["generation"]), times, "o", color=COLORS["fcc"], ms=4)
    n_cryst = [(r.get("census") or {}).get("flagged_crystalline", 0) for r in gens]
    n_flag = [(r.get("census") or {}).get("flagged", 0) for r in gens]
    axes[2].set_xticks(g)
    axes[2].set_xlim(g.min() - 0.5, g.max() + 0.5)
    axes[2].set(xlabel="generation", ylabel="time first > 30 % crystalline (ps)",
                title=f"crystallisation ({sum(n_cryst)} of {sum(n_flag)} flagged frames crystalline)")  # fmt: skip
    axes[2].title.set_fontsize(9)
    fig.suptitle("structure census (adaptive common-neighbour analysis)")
    return _save(fig, path)


def _learning_curve_plot(plt, gens: list[dict], path: Path) -> Path:
    """|model − oracle| of each gate property against the oracle calls spent so far."""
    points = [PropertyPoint.model_validate(r["properties"]) for r in gens if r.get("properties")]
    calls = [p.oracle_calls for p in points]
    groups = [
        ("relative error", ["a0_A", "B_GPa", "C11_GPa", "C12_GPa", "C44_GPa"], "%"),
        ("energy differences", ["eps_hcp_meV", "eps_bcc_meV", "bain_bcc_meV", "bain_rmse_meV"], "meV/atom"),
        ("stacking faults", ["gsfe_slip_rmse_mJ_m2"], "mJ/m²"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (title, keys, unit) in zip(axes, groups, strict=True):
        for key in keys:
            ys = []
            for p in points:
                v = p.values.get(key)
                if v is None or v.model is None:
                    ys.append(np.nan)
                elif v.reference is None:
                    ys.append(v.model)  # an RMSE
                elif unit == "%":
                    ys.append(100 * abs(v.model - v.reference) / abs(v.reference))
                else:
                    ys.append(abs(v.model - v.reference))
            ax.plot(calls, ys, "o-", label=LABELS[key])
        ax.set(xlabel="oracle calls", ylabel=f"|model − oracle| ({unit})", title=title)
        ax.set_yscale("log")
        _legend(ax, fontsize=7)
    fig.suptitle("property learning curve: each generation's model against the campaign's oracle")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    durable.save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
