"""Figures in the style of the paper: model as a solid line (ensemble spread as error bars),
reference as open circles. matplotlib's object API with the Agg canvas: no pyplot, no global
backend switch, safe in threads and on machines without a display."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from potforge import durable

#: One colour per series (matplotlib's tab10, colour-blind friendlier than the default cycle).
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
DPI = 130


def new_figure(ncols: int = 1, width_in: float = 6.4, height_in: float = 4.2) -> tuple[Figure, list]:
    """A figure with ``ncols`` axes side by side; sizes in inches (≈ 830×550 px per panel at DPI)."""
    fig = Figure(figsize=(width_in * ncols, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, k + 1) for k in range(ncols)]
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return fig, axes


def plot_pair(
    ax,
    x: np.ndarray,
    model: np.ndarray,
    reference: np.ndarray,
    *,
    color: str,
    label: str,
    model_label: str,
    reference_label: str,
    model_std: np.ndarray | None = None,
    scale: float = 1.0,
) -> None:
    """Model line (with ± ensemble spread bars) and reference circles of one series; ``label``
    names the series ('fcc', 'slip'), the legend reads 'label model_label' / 'label reference_label'."""
    x = np.asarray(x, float)
    m = np.asarray(model, float) * scale
    r = np.asarray(reference, float) * scale
    prefix = f"{label} " if label else ""
    ok = np.isfinite(m)
    ax.plot(x[ok], m[ok], "-", color=color, lw=1.8, label=f"{prefix}{model_label}")
    if model_std is not None:
        s = np.asarray(model_std, float) * scale
        good = ok & np.isfinite(s)
        ax.errorbar(x[good], m[good], yerr=s[good], fmt="none", ecolor=color, elinewidth=1.0, capsize=2, alpha=0.8)
    ok = np.isfinite(r)
    ax.plot(
        x[ok], r[ok], "o", mfc="none", mec=color, mew=1.3, ms=5, label=f"{prefix}{reference_label}", linestyle="none"
    )


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (parents created) and return the path."""
    return durable.save_figure(fig, path, dpi=DPI)


def figure_path(out_dir: Path, name: str) -> Path:
    """Where a benchmark's figure ``name`` (without extension) goes: out_dir/figures/name.png."""
    return Path(out_dir) / "figures" / f"{name}.png"
