"""``potforge train``: train an ensemble on a dataset (paper II.A)."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from potforge.cli import app
from potforge.data.store import redact
from potforge.errors import ConfigError, DataError

console = Console(stderr=True)


def load_train_config(path: Path | None, overrides: dict):
    from pydantic import ValidationError

    from potforge.train import TrainConfig

    raw = {}
    if path is not None:
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
        raw = raw.get("training", raw)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig(**raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"training setting {field!r}: {first['msg']}") from None


@app.command("train")
def train_cmd(
    db: str = typer.Option(..., "--db", help="Dataset (SQLite file or postgresql:// URL)."),
    out: Path = typer.Option(..., "--out", help="Model directory: model.pt, metrics.json, plots, checkpoint."),
    init: str = typer.Option(None, "--init", help="Warm start from this model (file, or 'ani-al')."),
    architecture: str = typer.Option(
        None, "--architecture", help="ani (default) or hipnn (HIP-NN through hippynn; docs/hipnn.md)."
    ),
    config: Path = typer.Option(None, "--config", help="YAML with training settings (or a campaign config)."),
    epochs: int = typer.Option(None, "--epochs", help="Maximum epochs."),
    members: int = typer.Option(None, "--members", help="Ensemble size (default 8)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Frames per step."),
    l0: float = typer.Option(None, "--l0", help="ℓ0 of Eq. 1 in Å² (default 0.01)."),
    lr: float = typer.Option(None, "--lr", help="Initial learning rate."),
    max_walltime_s: float = typer.Option(None, "--max-walltime-s", help="Stop training after this long."),
    dtype: str = typer.Option(None, "--dtype", help="float32 or float64."),
    seed: int = typer.Option(None, "--seed"),
    device: str = typer.Option(None, "--device", help="cpu (default), cuda, cuda:N, or auto (a GPU if any)."),
) -> None:
    """Train an ensemble on the train split, select on val, report val and test errors.

    A checkpoint is written every epoch: run the same command again to resume a killed run.
    """
    from potforge.data import DatasetStore
    from potforge.model import load_model
    from potforge.train import dataset_elements, load_split, train_ensemble

    cfg = load_train_config(
        config,
        {
            "architecture": architecture,
            "max_epochs": epochs,
            "n_members": members,
            "batch_size": batch_size,
            "l0_A2": l0,
            "lr": lr,
            "max_walltime_s": max_walltime_s,
            "dtype": dtype,
            "seed": seed,
            "device": device,
        },
    )
    store = DatasetStore(db)
    elements = dataset_elements(store)
    splits = {s: load_split(store, s, elements) for s in ("train", "val", "test")}
    if len(splits["train"]) == 0:
        raise DataError(f"{redact(db)} has no labelled training frames")
    console.print(f"frames: train {len(splits['train'])}, val {len(splits['val'])}, test {len(splits['test'])}")
    previous = load_model(init) if init else None
    with Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("train", total=cfg.max_epochs, status="")

        def show(record: dict) -> None:
            lr = max(record["lr"])
            status = (
                f"epoch {record['epoch']}  lr {lr:.1e}  val E {record['val_energy_rmse_meV_per_atom']:.2f} meV/atom"
                f"  F {record['val_force_rmse_eV_per_A']:.3f} eV/Å"
            )
            bar.update(task, completed=record["epoch"], status=status)

        result = train_ensemble(
            splits["train"], splits["val"], splits["test"], out, cfg, init_model=previous, progress=show
        )
    test = result.metrics["test"].get("ensemble") or result.metrics["val"].get("ensemble", {})
    console.print(
        f"{'resumed; ' if result.resumed else ''}{result.epochs} epochs in {result.walltime_s:.0f} s; "
        f"held-out ensemble RMSE: energy {test.get('energy_rmse_meV_per_atom', float('nan')):.2f} meV/atom, "
        f"force {test.get('force_rmse_eV_per_A', float('nan')):.3f} eV/Å; model: {result.model_path}"
    )
