"""``run_validation``: run the selected benchmarks of a model against a reference and write the
report. A benchmark that fails with a user-level error (a reference calculation that does not
converge, a missing minimum) is recorded as failed and the others still run."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from potforge.errors import PotforgeError
from potforge.validate.core import Evaluator, model_evaluator, reference_evaluator
from potforge.validate.registry import Benchmark, select
from potforge.validate.report import ValidationReport, write_report
from potforge.validate.results import BenchmarkResult
from potforge.validate.settings import ValidationSettings

#: progress(event, benchmark, index, total) with event 'start' or 'done'.
ProgressFn = Callable[[str, Benchmark, int, int], None]


def run_validation(
    model: Any,
    reference: Any,
    out_dir: str | Path,
    only: Iterable[str] | str | None = None,
    settings: ValidationSettings | None = None,
    *,
    reference_settings: dict[str, Any] | None = None,
    dtype=None,
    progress: ProgressFn | None = None,
    write: bool = True,
    gates: str | None = None,
) -> ValidationReport:
    """Compare ``model`` with ``reference`` on the selected benchmarks and write the report.

    model: a model spec (file, NeuroChem .info, ``"ani-al"``), an ``ANIEnsemble``,
    ``"oracle:NAME"``/an ``Oracle``, an ASE calculator factory ``(atoms, dir) -> Calculator`` or an
    :class:`Evaluator`. reference: an oracle name (``"emt"``, ``"gpaw"``, ...) with
    ``reference_settings``, an ``Oracle``, a factory or an :class:`Evaluator`. only: benchmark or
    group names (None: all). Files go to ``out_dir``: report.html, report.md, results.json,
    figures/*.png, and calculations/ (reference calculator files and a resumable cache). ``gates``
    (``quick`` or ``strict``, :mod:`potforge.properties`) adds a verdict: each gate property
    inside or outside its gate, and whether the model's lowest-energy crystal is the reference's.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    settings = settings or ValidationSettings()
    chosen = select(only)
    out_dir.mkdir(parents=True, exist_ok=True)
    calc_dir = out_dir / "calculations"
    model_ev = model_evaluator(model, dtype=dtype, workdir=calc_dir / "model")
    ref_ev = reference_evaluator(reference, workdir=calc_dir / "reference", settings=reference_settings)
    if model_ev is ref_ev:
        raise PotforgeError("model and reference must be different evaluators (caches are per side)")
    if model_ev.label == ref_ev.label:  # results are keyed by label
        model_ev.label, ref_ev.label = f"{model_ev.label} (model)", f"{ref_ev.label} (reference)"
    try:
        results = [_run_one(b, k, len(chosen), model_ev, ref_ev, settings, out_dir, progress)
                   for k, b in enumerate(chosen)]  # fmt: skip
    finally:
        model_ev.close()
        ref_ev.close()
    report = ValidationReport(
        results=results,
        model=model_ev.describe(),
        reference=ref_ev.describe(),
        settings=settings.model_dump(mode="json"),
        wall_time_s=time.perf_counter() - t0,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    if gates is not None:
        from potforge.properties import judge, measured, verdict

        values = measured(report)
        report.gates = judge(values, gates)
        report.verdict = verdict(values, report.gates)
    _prune_empty_dirs(calc_dir)
    if write:
        write_report(report, out_dir)
    return report


def _run_one(
    bench: Benchmark,
    index: int,
    total: int,
    model: Evaluator,
    reference: Evaluator,
    settings: ValidationSettings,
    out_dir: Path,
    progress: ProgressFn | None,
) -> BenchmarkResult:
    if progress:
        progress("start", bench, index, total)
    before = (model.n_calculations, reference.n_calculations)
    t = time.perf_counter()
    try:
        result = bench.fn(model, reference, settings, out_dir)
    except PotforgeError as exc:
        result = BenchmarkResult(bench.name, bench.title, bench.section, status="failed", error=str(exc))
    result.name, result.title, result.section = bench.name, bench.title, bench.section
    result.wall_time_s = time.perf_counter() - t
    result.calculations = {
        model.label: model.n_calculations - before[0],
        reference.label: reference.n_calculations - before[1],
    }
    if progress:
        progress("done", bench, index, total)
    return result


def _prune_empty_dirs(root: Path) -> None:
    """Remove empty calculation folders (calculators such as EMT write nothing)."""
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    if not any(root.iterdir()):
        root.rmdir()
