"""``potforge compare-architectures``: ANI vs HIP-NN on a campaign's dataset (the paper's
comparison of its two architectures)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from potforge.cli import app

console = Console(stderr=True)


@app.command("compare-architectures")
def compare_cmd(
    campaign_dir: Path = typer.Argument(..., help="Campaign directory (config.yaml, dataset)."),
    epochs: int = typer.Option(None, "--epochs", help="Maximum epochs of each training (default: the campaign's)."),
    max_walltime_s: float = typer.Option(None, "--max-walltime-s", help="Training time budget of each model."),
    validate: bool = typer.Option(True, "--validate/--no-validate", help="Static validation against the oracle."),
    quick: bool = typer.Option(True, "--quick/--full", help="Quick (default) or full static validation protocol."),
    threads: int = typer.Option(None, "--threads", min=1, help="torch threads (default: the campaign's)."),
    device: str = typer.Option(
        None, "--device", help="Where both train: cpu, cuda, cuda:N, auto (default: the campaign's)."
    ),
) -> None:
    """Train an ANI and a HIP-NN ensemble on the campaign's dataset with its training settings,
    and report side by side their held-out energy and force MAE/RMSE on the AL test set and their
    static validation summaries against the campaign's oracle. Files go to CAMPAIGN_DIR/compare/;
    run the same command again to resume."""
    from rich.table import Table

    from potforge.compare import error_rows, run_comparison, uncertainty_rows, validation_rows

    overrides: dict = {}
    if epochs is not None:
        overrides["max_epochs"] = epochs
    if max_walltime_s is not None:
        overrides["max_walltime_s"] = max_walltime_s
    if device is not None:
        overrides["device"] = device
    if threads is not None:
        import torch

        overrides["threads"] = threads
        torch.set_num_threads(threads)
    with Progress(
        TextColumn("[bold]compare"), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console,
    ) as bar:  # fmt: skip
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        res = run_comparison(campaign_dir, train_overrides=overrides, validate=validate, quick=quick,
                             progress=progress)  # fmt: skip
    table = Table(title=f"held-out errors of the ensemble mean, AL test set ({res.counts['test']} frames)")
    for col in ("quantity", "unit", "ANI", "HIP-NN"):
        table.add_column(col, justify="left" if col in ("quantity", "unit") else "right")
    for row in error_rows(res):
        table.add_row(*row)
    console.print(table)
    table = Table(title="ensemble uncertainty on the AL test frames: median / 90 % quantile (Spearman with the error)")
    for col in ("measure", "unit", "ANI", "HIP-NN"):
        table.add_column(col, justify="left" if col in ("measure", "unit") else "right")
    for row in uncertainty_rows(res):
        table.add_row(*row)
    console.print(table)
    rows = validation_rows(res)
    if rows:
        table = Table(title="static validation vs the campaign's oracle: model value (model − reference)")
        for col in ("benchmark", "property", "unit", "reference", "ANI", "HIP-NN"):
            table.add_column(col, justify="left" if col in ("benchmark", "property", "unit") else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    console.print(f"written: {Path(campaign_dir) / 'compare' / 'compare.md'}")
