"""Which properties a campaign's model gets right: the values the static validation measured
(model vs the campaign's own oracle), the gates they are judged by, and the property learning
curve (one quick static validation per generation, against the oracle calls spent so far).

Gates are physics, not fits: relative errors of the lattice constant, bulk modulus and elastic
constants; absolute errors of crystal-structure energy differences (meV/atom), the Bain path and
the slip GSFE; and the ordering itself — a model whose lowest-energy crystal is not the oracle's
fails whatever its other numbers. Two sets: ``quick`` (the demo's) and ``strict`` (a discovery
campaign's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from potforge.records import Record

#: the static benchmarks of the learning curve
LEARNING_CURVE_BENCHMARKS = ("eos", "crystal", "elastic", "bain", "gsfe")
#: property keys, what the report's summary calls them, and their units
_ROWS = {
    "a0_A": ("eos", "a0 (fcc)", "Å"),
    "B_GPa": ("eos", "B (EOS)", "GPa"),
    "C11_GPa": ("elastic", "C11 (stress, 0.5 %)", "GPa"),
    "C12_GPa": ("elastic", "C12 (stress, 0.5 %)", "GPa"),
    "C44_GPa": ("elastic", "C44 (stress, 0.5 %)", "GPa"),
    "eps_hcp_meV": ("crystal", "E_hcp − E_fcc at minimum (ε_hcp)", "meV/atom"),
    "eps_bcc_meV": ("crystal", "E_bcc − E_fcc at minimum (ε_bcc)", "meV/atom"),
    "bain_bcc_meV": ("bain", "Bain: E(bcc, c/a = 1/√2) − E(fcc)", "meV/atom"),
    "vacancy_eV": ("vacancy", "E_v (vacancy, relaxed)", "eV"),
}
_CURVES = {
    "bain_rmse_meV": ("bain", "Bain path", "meV/atom"),
    "gsfe_slip_rmse_mJ_m2": ("gsfe", "GSFE slip path", "mJ/m²"),
}
LABELS = {
    "a0_A": "a0",
    "B_GPa": "B",
    "C11_GPa": "C11",
    "C12_GPa": "C12",
    "C44_GPa": "C44",
    "eps_hcp_meV": "ε_hcp",
    "eps_bcc_meV": "ε_bcc",
    "bain_bcc_meV": "Bain bcc point",
    "vacancy_eV": "E_v",
    "bain_rmse_meV": "Bain path RMSE",
    "gsfe_slip_rmse_mJ_m2": "GSFE slip RMSE",
}


class PropertyValue(BaseModel):
    """model and reference (None for curves: ``model`` holds the RMSE), in ``unit``."""

    model_config = ConfigDict(extra="ignore")
    model: float | None
    reference: float | None
    unit: str


def measured(report: Any) -> dict[str, PropertyValue]:
    """The gate properties a :class:`~potforge.validate.report.ValidationReport` measured."""
    out: dict[str, PropertyValue] = {}
    by_name = {r.name: r for r in report.results if r.status == "ok"}
    for key, (bench, prop, unit) in _ROWS.items():
        res = by_name.get(bench)
        for row in res.summary if res else []:
            if row.property == prop:
                out[key] = PropertyValue(model=_f(row.model), reference=_f(row.reference), unit=unit)
    for key, (bench, curve, unit) in _CURVES.items():
        res = by_name.get(bench)
        for c in res.curves if res else []:
            if c.name == curve:
                out[key] = PropertyValue(model=_f(c.rmse), reference=None, unit=unit)
    return out


def _f(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if v == v and abs(v) != float("inf") else None


@dataclass(frozen=True)
class Gate:
    """``kind``: ``relative`` (|model − ref| ≤ limit·|ref|), ``absolute`` (|model − ref| ≤ limit),
    ``rmse`` (the curve's RMSE ≤ limit) or ``above_fcc`` (the model's value is > 0 where the
    reference's is, i.e. that structure lies above fcc in both)."""

    key: str
    kind: Literal["relative", "absolute", "rmse", "above_fcc"]
    limit: float = 0.0

    def describe(self, unit: str) -> str:
        if self.kind == "relative":
            return f"within {self.limit:.1%}"
        if self.kind == "above_fcc":
            return "above fcc where the oracle has it above"
        return f"≤ {self.limit:g} {unit}"


GATES: dict[str, tuple[Gate, ...]] = {
    "quick": (
        Gate("eps_bcc_meV", "above_fcc"),
        Gate("bain_bcc_meV", "above_fcc"),
        Gate("eps_hcp_meV", "absolute", 3.0),
        Gate("a0_A", "relative", 0.01),
        Gate("B_GPa", "relative", 0.15),
    ),
    "strict": (
        Gate("a0_A", "relative", 0.003),
        Gate("B_GPa", "relative", 0.05),
        Gate("C11_GPa", "relative", 0.10),
        Gate("C12_GPa", "relative", 0.10),
        Gate("C44_GPa", "relative", 0.10),
        Gate("eps_hcp_meV", "absolute", 3.0),
        Gate("eps_bcc_meV", "absolute", 3.0),
        Gate("bain_rmse_meV", "rmse", 3.0),
        Gate("gsfe_slip_rmse_mJ_m2", "rmse", 15.0),
        Gate("vacancy_eV", "absolute", 0.05),
    ),
}


class GateResult(BaseModel):
    model_config = ConfigDict(extra="ignore")
    property: str
    model: float | None
    reference: float | None
    error: float | None
    unit: str
    gate: str
    passed: bool | None  # None: not measured


def judge(values: dict[str, PropertyValue], gates: str | tuple[Gate, ...]) -> list[GateResult]:
    """Each gate of the set against the measured values."""
    out = []
    for g in GATES[gates] if isinstance(gates, str) else gates:
        v = values.get(g.key)
        unit = v.unit if v else ""
        if v is None or v.model is None or (g.kind != "rmse" and v.reference is None):
            out.append(GateResult(property=LABELS[g.key], model=None, reference=None, error=None, unit=unit,
                                  gate=g.describe(unit), passed=None))  # fmt: skip
            continue
        error = v.model if g.kind == "rmse" else v.model - v.reference
        if g.kind == "relative":
            passed = abs(error) <= g.limit * abs(v.reference)
        elif g.kind == "absolute" or g.kind == "rmse":
            passed = abs(error) <= g.limit
        else:  # the model has the structure above fcc wherever the reference does
            passed = v.model > 0 or v.reference <= 0
        out.append(GateResult(property=LABELS[g.key], model=v.model, reference=v.reference, error=error, unit=unit,
                              gate=g.describe(unit), passed=bool(passed)))  # fmt: skip
    return out


def lowest_crystal(values: dict[str, PropertyValue], side: Literal["model", "reference"]) -> str | None:
    """fcc, hcp or bcc: the lowest-energy crystal of one side (from ε_hcp and ε_bcc, both relative
    to fcc), or None when they were not measured."""
    eps = {}
    for name, key in (("hcp", "eps_hcp_meV"), ("bcc", "eps_bcc_meV")):
        v = values.get(key)
        x = None if v is None else getattr(v, side)
        if x is None:
            return None
        eps[name] = x
    name, low = min(eps.items(), key=lambda kv: kv[1])
    return name if low < 0 else "fcc"


#: structures whose energies lie within this (meV/atom) count as degenerate (EMT's fcc and hcp)
DEGENERATE_MEV = 1.0


def verdict(values: dict[str, PropertyValue], results: list[GateResult]) -> list[str]:
    """Plain sentences: whether the gates pass, and whether the model's ground state is the oracle's."""
    lines = []
    failed = [r.property for r in results if r.passed is False]
    missing = [r.property for r in results if r.passed is None]
    if not failed and not missing:
        lines.append(f"All {len(results)} gates pass.")
    else:
        if failed:
            lines.append(f"Outside the gates: {', '.join(failed)}.")
        if missing:
            lines.append(f"Not measured: {', '.join(missing)}.")
    m, r = lowest_crystal(values, "model"), lowest_crystal(values, "reference")
    if m is not None and r is not None:
        tie = abs(values["eps_hcp_meV"].reference) < DEGENERATE_MEV  # e.g. EMT: fcc and hcp degenerate
        ok = m in ("fcc", "hcp") if tie else m == r
        oracle = f"close-packed (fcc and hcp within {DEGENERATE_MEV:g} meV/atom)" if tie else r
        if ok:
            lines.append(f"The model's lowest-energy crystal ({m}) is the oracle's: {oracle}.")
        else:
            lines.append(f"The model's lowest-energy crystal is {m}, but the oracle's is {oracle}: the model gets "
                         "the ground state wrong.")  # fmt: skip
    return lines


class PropertyPoint(Record):
    """One point of the property learning curve: generation g's model against the oracle, after
    ``oracle_calls`` labels."""

    generation: int
    oracle_calls: int
    values: dict[str, PropertyValue]
    wall_time_s: float = 0.0


def learning_curve_point(
    model_path: str | Path,
    oracle: Any,
    out_dir: Path,
    reference_dir: Path,
    generation: int,
    oracle_calls: int,
    threads: int = 1,
) -> PropertyPoint:
    """The quick static validation of one generation's model against ``oracle``, computed once:
    a finished point is read back from ``out_dir``. The oracle's own calculations are cached in
    ``reference_dir``, shared by every generation (its structures do not depend on the model)."""
    import time

    import torch

    from potforge import durable
    from potforge.validate import run_validation
    from potforge.validate.core import OracleEvaluator
    from potforge.validate.settings import ValidationSettings

    done = durable.read_done(out_dir)
    if done is not None:
        return PropertyPoint.model_validate(done)
    t0 = time.time()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)  # the validation's cells are tiny: one thread is fastest
    try:
        reference = OracleEvaluator(oracle, workdir=reference_dir, persist=True)
        report = run_validation(str(model_path), reference, out_dir, settings=ValidationSettings.quick(),
                                only=list(LEARNING_CURVE_BENCHMARKS), write=False)  # fmt: skip
    finally:
        torch.set_num_threads(previous)
    point = PropertyPoint(generation=generation, oracle_calls=oracle_calls, values=measured(report),
                          wall_time_s=time.time() - t0)  # fmt: skip
    durable.mark_done(out_dir, point.model_dump(mode="json"))
    return point
