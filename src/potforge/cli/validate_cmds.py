"""``potforge validate``: property benchmarks of a model against a reference oracle (paper III)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from potforge.cli import app
from potforge.errors import ConfigError

console = Console(stderr=True)


def _load_mapping(text: str | None, what: str) -> dict:
    """A JSON object given inline or as a .json/.yaml file path (None: empty)."""
    if text is None:
        return {}
    path = Path(text)
    if path.suffix.lower() in (".json", ".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"{what} file {path} does not exist")
        text = path.read_text()
        if path.suffix.lower() != ".json":
            import yaml

            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ConfigError(f"{what}: invalid YAML in {path}: {exc}") from None
            return _mapping(value, what)
    try:
        return _mapping(json.loads(text), what)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what} must be a JSON object or a .json/.yaml file: {exc}") from None


def _mapping(value, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a mapping, not {type(value).__name__}")
    return value


@app.command("validate")
def validate_cmd(
    model: str = typer.Argument(
        None, help="Model file (.pt), NeuroChem .info, 'ani-al', or oracle:NAME to validate a reference method."
    ),
    reference: str = typer.Option(
        None, "--reference", "-r", help="Reference oracle (required): emt, eam, gpaw, python:mod:Cls."
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="Output directory (required) for the report, figures and results.json."
    ),
    only: list[str] = typer.Option(
        None, "--only", help="Benchmarks or groups to run (comma-separated or repeated); default: all."
    ),
    reference_settings: str = typer.Option(
        None, "--reference-settings", help="Oracle settings: a JSON object or a .json/.yaml file."
    ),
    settings_file: str = typer.Option(
        None, "--settings", help="Protocol settings (ValidationSettings fields): JSON object or .json/.yaml file."
    ),
    quick: bool = typer.Option(False, "--quick", help="Trimmed protocol (fewer points, smaller cells)."),
    dtype: str = typer.Option("float64", help="Model precision: float64 (default; small strains need it) or float32."),
    threads: int = typer.Option(
        1, "--threads", min=1, help="torch threads; the cells here are tiny, so 1 is fastest (more only contend)."
    ),
    list_benchmarks: bool = typer.Option(False, "--list", help="List the benchmarks and exit."),
) -> None:
    """Benchmark MODEL against a reference oracle: crystal energies (Fig. 2), EOS, elastic constants,
    vacancy and surface energies, Bain path and stacking-fault paths (Fig. 3), computed with the
    same protocol on both sides. Writes OUT/report.html, OUT/report.md, OUT/results.json and
    OUT/figures/*.png; reference calculations are cached in OUT/calculations (rerun to resume).
    """
    from potforge.validate import ValidationSettings, benchmarks, select

    if list_benchmarks:
        for b in benchmarks().values():
            typer.echo(f"{b.name:10s} {b.group:8s} {b.section:6s} {b.title}")
        raise typer.Exit()
    missing = [n for n, v in (("MODEL", model), ("--reference", reference), ("--out", out)) if v is None]
    if missing:
        raise ConfigError(f"validate needs {', '.join(missing)} (see potforge validate --help)")
    chosen = select(only or None)  # fail on unknown names before loading anything
    overrides = _load_mapping(settings_file, "--settings")
    try:
        settings = ValidationSettings.quick(**overrides) if quick else ValidationSettings(**overrides)
    except ValueError as exc:  # pydantic's ValidationError
        raise ConfigError(f"invalid --settings: {' '.join(str(exc).split())}") from None
    ref_settings = _load_mapping(reference_settings, "--reference-settings")

    import torch

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        report = _run(model, reference, out, chosen, settings, ref_settings, dtype)
    finally:
        torch.set_num_threads(previous_threads)  # matters when called in-process (tests, notebooks)
    console.print(_summary(report))
    failed = [r.name for r in report.results if r.status != "ok"]
    console.print(f"report: {report.files['html']} ({report.wall_time_s:.1f} s)")
    if failed:
        console.print(f"[red]failed benchmarks: {', '.join(failed)}[/red] (see the report)")
        raise typer.Exit(1)


def _run(model, reference, out, chosen, settings, reference_settings, dtype):
    from potforge.cli.model_cmds import parse_dtype
    from potforge.validate import run_validation

    with Progress(
        TextColumn("[bold]validate"), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console,
    ) as bar:  # fmt: skip
        task = bar.add_task("", total=len(chosen))

        def progress(event, bench, index, total):
            if event == "start":
                bar.update(task, description=bench.name)
            else:
                bar.advance(task)

        return run_validation(
            model, reference, out, [b.name for b in chosen], settings,
            reference_settings=reference_settings, dtype=parse_dtype(dtype), progress=progress,
        )  # fmt: skip


def _summary(report):
    from rich.table import Table

    from potforge.validate.report import summary_rows

    table = Table(title=f"{report.model['label']} vs {report.reference['label']} (error = model − reference)")
    for col in ("property", "model", "reference", "error", "unit"):
        table.add_column(col, justify="left" if col in ("property", "unit") else "right")
    for title, rows in summary_rows(report):
        table.add_row(f"[bold]{title}[/bold]", "", "", "", "")
        for row in rows:
            table.add_row(*row)
    return table
