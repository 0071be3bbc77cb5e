"""What a benchmark returns: summary rows, curves (with RMSE/MAE), tables, figures, raw data.

The report renders these generically, so a new benchmark (issue #7: liquid RDF, melting, ...)
needs no report code. Errors are always model − reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class SummaryRow:
    """One property of the summary table. ``model``/``reference`` may be None (not computed)."""

    property: str
    model: float | None
    reference: float | None
    unit: str
    decimals: int = 2
    note: str = ""

    @property
    def error(self) -> float | None:
        """model − reference, or None when either is missing or not finite."""
        if self.model is None or self.reference is None:
            return None
        err = float(self.model) - float(self.reference)
        return err if math.isfinite(err) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "property": self.property,
            "model": _num(self.model),
            "reference": _num(self.reference),
            "error": _num(self.error),
            "unit": self.unit,
            "note": self.note,
        }


@dataclass
class Curve:
    """A model curve and a reference curve on common abscissae ``x`` (shape (n,) each).

    ``model_std`` is the ensemble spread of the model value at each point (same unit), when the
    model has members. Points where either side is not finite are left out of RMSE/MAE.
    """

    name: str
    x_label: str
    y_unit: str
    x: np.ndarray
    model: np.ndarray
    reference: np.ndarray
    model_std: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.x = np.asarray(self.x, dtype=float)
        self.model = np.asarray(self.model, dtype=float)
        self.reference = np.asarray(self.reference, dtype=float)
        if self.model_std is not None:
            self.model_std = np.asarray(self.model_std, dtype=float)
        if not (self.x.shape == self.model.shape == self.reference.shape):
            raise ValueError(f"curve {self.name}: x, model, reference shapes differ")

    @property
    def common(self) -> np.ndarray:
        """Boolean mask (n,) of points where both sides are finite."""
        return np.isfinite(self.model) & np.isfinite(self.reference)

    @property
    def rmse(self) -> float:
        d = (self.model - self.reference)[self.common]
        return float(np.sqrt(np.mean(d**2))) if d.size else math.nan

    @property
    def mae(self) -> float:
        d = (self.model - self.reference)[self.common]
        return float(np.mean(np.abs(d))) if d.size else math.nan

    @property
    def max_abs_error(self) -> float:
        d = (self.model - self.reference)[self.common]
        return float(np.max(np.abs(d))) if d.size else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "x_label": self.x_label,
            "y_unit": self.y_unit,
            "x": _list(self.x),
            "model": _list(self.model),
            "reference": _list(self.reference),
            "model_std": None if self.model_std is None else _list(self.model_std),
            "rmse": _num(self.rmse),
            "mae": _num(self.mae),
            "max_abs_error": _num(self.max_abs_error),
            "n_points": int(self.common.sum()),
        }


@dataclass
class Table:
    """A detail table for the report: ``rows`` of cells (numbers are formatted with ``decimals``)."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    decimals: int = 2

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "columns": self.columns, "rows": [[_cell(c) for c in r] for r in self.rows]}


@dataclass
class BenchmarkResult:
    """Everything one benchmark produced. ``figures`` are PNG paths; ``data`` is JSON-able raw data."""

    name: str
    title: str
    section: str = ""
    summary: list[SummaryRow] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"  # "ok" or "failed"
    error: str | None = None
    wall_time_s: float = 0.0
    calculations: dict[str, int] = field(default_factory=dict)  # new calculations per side

    def curve(self, name: str) -> Curve:
        for c in self.curves:
            if c.name == name:
                return c
        raise KeyError(name)

    def row(self, prop: str) -> SummaryRow:
        for r in self.summary:
            if r.property == prop:
                return r
        raise KeyError(prop)

    def to_dict(self, root: Path | None = None) -> dict[str, Any]:
        def rel(p: Path) -> str:
            return str(p.relative_to(root)) if root is not None and p.is_relative_to(root) else str(p)

        return {
            "name": self.name,
            "title": self.title,
            "section": self.section,
            "status": self.status,
            "error": self.error,
            "wall_time_s": round(self.wall_time_s, 3),
            "calculations": dict(self.calculations),
            "summary": [r.to_dict() for r in self.summary],
            "curves": [c.to_dict() for c in self.curves],
            "tables": [t.to_dict() for t in self.tables],
            "figures": [rel(p) for p in self.figures],
            "notes": list(self.notes),
            "data": jsonable(self.data),
        }


def _num(x: Any) -> float | None:
    """A float for JSON, None for missing or non-finite values."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _list(a: np.ndarray) -> list[float | None]:
    return [_num(v) for v in np.asarray(a, dtype=float).ravel()]


def _cell(c: Any) -> Any:
    if isinstance(c, (float, np.floating)):
        return _num(c)
    if isinstance(c, np.integer):
        return int(c)
    return c


def jsonable(obj: Any) -> Any:
    """Convert numpy arrays/scalars and paths inside ``obj`` to JSON types (NaN becomes None)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return _num(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj
