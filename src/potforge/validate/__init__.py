"""Property benchmarks of a model against a reference oracle (paper section III) and the report.

Python API::

    from potforge.validate import run_validation, ValidationSettings
    report = run_validation("ani-al", "emt", "out/", only=["eos", "bain"], settings=ValidationSettings.quick())
    report.result("eos").row("B (EOS)").error  # GPa, model − reference

Each benchmark is a function ``fn(model, reference, settings, out_dir) -> BenchmarkResult`` over two
:class:`Evaluator` objects, registered by name in :mod:`potforge.validate.registry`.
"""

from potforge.validate.core import (
    BenchmarkError,
    CalculatorEvaluator,
    Evaluation,
    Evaluator,
    ModelEvaluator,
    OracleEvaluator,
    model_evaluator,
    reference_evaluator,
)
from potforge.validate.registry import Benchmark, benchmarks, register, select
from potforge.validate.report import ValidationReport, render_html, render_markdown, write_report
from potforge.validate.results import BenchmarkResult, Curve, SummaryRow, Table
from potforge.validate.runner import run_validation
from potforge.validate.settings import ValidationSettings

__all__ = [
    "Benchmark",
    "BenchmarkError",
    "BenchmarkResult",
    "CalculatorEvaluator",
    "Curve",
    "Evaluation",
    "Evaluator",
    "ModelEvaluator",
    "OracleEvaluator",
    "SummaryRow",
    "Table",
    "ValidationReport",
    "ValidationSettings",
    "benchmarks",
    "model_evaluator",
    "reference_evaluator",
    "register",
    "render_html",
    "render_markdown",
    "run_validation",
    "select",
    "write_report",
]
