"""``potforge table1``: the paper's Table I experiment (active learning vs FCC/Melt data)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from potforge.cli import app
from potforge.errors import ConfigError

console = Console(stderr=True)

STAGES = {"generate": "FCC/Melt MD (steps)", "label": "labelling (frames)", "train": "training (epochs)"}


@app.command("table1")
def table1_cmd(
    campaign_dir: Path = typer.Argument(..., help="Campaign directory (config.yaml, dataset, trained models)."),
    quick: bool = typer.Option(False, "--quick", help="Smaller FCC/Melt set (60 heat–cool + 40 liquid frames)."),
    heatcool_ps: float = typer.Option(None, "--heatcool-ps", help="Length of the heat–cool run, ps (default 100)."),
    heatcool_snapshots: int = typer.Option(None, "--heatcool-snapshots", help="Heat–cool frames (default 300)."),
    liquid_snapshots: int = typer.Option(None, "--liquid-snapshots", help="Liquid frames (default 250)."),
    epochs: int = typer.Option(None, "--epochs", help="Override the campaign's max_epochs for the FCC/Melt model."),
    seed: int = typer.Option(0, "--seed", help="Seed of the FCC/Melt MD."),
    threads: int = typer.Option(None, "--threads", min=1, help="torch threads (default: the campaign's)."),
) -> None:
    """Build the FCC/Melt dataset (heat–cool + liquid snapshots labelled by the campaign's oracle),
    train an ensemble on it with the campaign's training settings, and tabulate MAE/RMSE of both
    models on held-out FCC/Melt and active-learning frames (paper Table I). Files go to
    CAMPAIGN_DIR/table1/; run the same command again to resume."""
    from potforge.fccmelt import FccMeltSettings
    from potforge.table1 import run_table1, table_rows

    overrides = {"seed": seed}
    if heatcool_ps is not None:
        overrides["heatcool_duration_fs"] = heatcool_ps * 1000.0
    if heatcool_snapshots is not None:
        overrides["heatcool_snapshots"] = heatcool_snapshots
    if liquid_snapshots is not None:
        overrides["liquid_snapshots"] = liquid_snapshots
    try:
        settings = FccMeltSettings.quick(**overrides) if quick else FccMeltSettings(**overrides)
    except ValueError as exc:
        raise ConfigError(f"invalid table1 settings: {' '.join(str(exc).split())}") from None
    train = {"max_epochs": epochs} if epochs is not None else {}
    if threads is not None:
        import torch

        train["threads"] = threads
        torch.set_num_threads(threads)  # the FCC/Melt MD too, not only training

    with Progress(
        TextColumn("[bold]table1"), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console,
    ) as bar:  # fmt: skip
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(STAGES.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        res = run_table1(campaign_dir, settings=settings, train_overrides=train, progress=progress)

    from rich.table import Table

    table = Table(title="Table I: MAE/RMSE of the ensemble mean")
    for col in ("Model type", "FCC/Melt test", "AL test"):
        table.add_column(col, justify="left" if col == "Model type" else "right")
    for row in table_rows(res):
        table.add_row(*(f"[bold]{row[0]}[/bold]", "", "") if not row[1] else row)
    console.print(table)
    console.print(
        f"FCC/Melt-trained ÷ AL-trained error on the AL test set: energy MAE {res.ratio('energy', 'mae'):.1f}×, "
        f"RMSE {res.ratio('energy', 'rmse'):.1f}×; force MAE {res.ratio('force', 'mae'):.1f}×, "
        f"RMSE {res.ratio('force', 'rmse'):.1f}× (paper: 31×, 58×; 12×, 26×)"
    )
    console.print(f"written: {Path(campaign_dir) / 'table1' / 'table1.md'}")
