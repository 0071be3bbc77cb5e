"""Commands on datasets: ``potforge label`` and ``potforge data info|import|export``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from potforge.cli import app
from potforge.data.store import redact
from potforge.errors import ConfigError, DataError

console = Console(stderr=True)
data_app = typer.Typer(help="Inspect, import and export datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def parse_settings(text: str | None) -> dict:
    """Oracle settings from inline JSON/YAML or from a YAML/JSON file path."""
    if not text:
        return {}
    path = Path(text)
    try:
        raw = path.read_text() if path.is_file() else text
        value = yaml.safe_load(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot parse oracle settings {text!r}: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"oracle settings must be a mapping, got {value!r}")
    return value


def default_workdir(db: str) -> Path:
    if db.startswith(("postgresql://", "postgres://")):
        return Path("potforge-work")
    return Path(db).with_name(Path(db).name + ".work")


@app.command("label")
def label_cmd(
    db: str = typer.Option(..., "--db", help="Dataset: SQLite file path or postgresql:// URL."),
    oracle: str = typer.Option("emt", "--oracle", help="emt | eam | gpaw | espresso | python:pkg.mod:Class"),
    oracle_settings: str = typer.Option(None, "--oracle-settings", help="JSON/YAML text or file with oracle settings."),
    random: int = typer.Option(0, "--random", help="Add this many random disordered cells (paper II.B.2)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random cells (cell k uses stream (seed, k))."),
    box_min_A: float = typer.Option(10.5, help="Shortest random box side, Å."),
    box_max_A: float = typer.Option(17.0, help="Longest random box side, Å."),
    density_min: float = typer.Option(1.80, help="Lowest target density, g/cm³."),
    density_max: float = typer.Option(4.05, help="Highest target density, g/cm³."),
    r_min_A: float = typer.Option(1.8, help="Minimum interatomic distance, Å."),
    element: str = typer.Option("Al", help="Element of the random cells."),
    workers: int = typer.Option(None, help="Parallel oracle workers (default: one per core)."),
    engine: str = typer.Option("local", help="local (worker processes) or threads."),
    timeout_s: float = typer.Option(3600.0, help="Wall-time limit per calculation, s."),
    max_attempts: int = typer.Option(3, help="Attempts before a failing frame is quarantined."),
    max_energy_above_reference: float = typer.Option(
        3.0, help="Plausibility: eV/atom above the 5th percentile of the oracle's labels (0: off)."
    ),
    max_force: float = typer.Option(50.0, help="Plausibility: largest force component, eV/Å (0: off)."),
    chunk: int = typer.Option(8, help="Frames per oracle process."),
    workdir: Path = typer.Option(None, help="Inbox and scratch directory (default: next to the database)."),
) -> None:
    """Label frames with a reference oracle, in parallel; add random cells first if asked.

    Every label is committed as it arrives: kill this command at any moment and run it again;
    finished labels are kept and never recomputed. Failures are stored with their kind,
    retried, then quarantined (see `potforge data info`).
    """
    from potforge.data import DatasetStore, Provenance
    from potforge.engine import Engine, EngineConfig
    from potforge.labeling import label_pending
    from potforge.oracle import get_oracle
    from potforge.structures import RandomCellSpec, random_cells

    if engine not in ("local", "threads"):
        raise ConfigError(f"--engine must be local or threads, not {engine!r}")
    the_oracle = get_oracle(oracle, parse_settings(oracle_settings))
    the_oracle.check()
    store = DatasetStore(db)
    store.adopt_labels(the_oracle.settings_hash(), the_oracle.legacy_hashes())
    if random:
        try:
            spec = RandomCellSpec(
                box_min_A=box_min_A,
                box_max_A=box_max_A,
                density_min_g_cm3=density_min,
                density_max_g_cm3=density_max,
                r_min_A=r_min_A,
                composition={element: 1.0},
            )
        except ValueError as exc:
            raise ConfigError(str(exc).replace("\n", " ")) from None
        with console.status(f"generating {random} random cells"):
            cells = random_cells(spec, random, seed)
        added = 0
        with store.db:
            for k, atoms in enumerate(cells):
                prov = Provenance(source="random", trajectory=f"random:{seed}:{k}")
                added += store.add_pending(atoms, prov, the_oracle.name, the_oracle.settings_hash()) is not None
        console.print(f"{added} new random cells queued ({random - added} already in {store.name})")
    work = workdir or default_workdir(db)
    with (
        Progress(
            TextColumn(f"[bold]label ({oracle})"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as bar,
        Engine(EngineConfig(kind=engine, max_workers=workers), run_dir=work / "parsl") as eng,
    ):
        task = bar.add_task("label", total=None)
        report = label_pending(
            store,
            the_oracle,
            eng,
            work,
            chunk_size=chunk,
            timeout_s=timeout_s,
            max_attempts=max_attempts,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    from potforge.data.plausibility import PlausibilityPolicy, apply_policy

    policy = PlausibilityPolicy(
        max_energy_above_reference_eV_per_atom=max_energy_above_reference or None, max_force_eV_per_A=max_force or None
    )
    checked = apply_policy(store, the_oracle.settings_hash(), policy)
    console.print(
        f"labelled {report.labelled}; {report.failed} failed attempts were retried; "
        f"{report.quarantined} frames quarantined"
        + (f"; failures by kind: {report.failure_kinds}" if report.failure_kinds else "")
        + f"; {checked.implausible} of {checked.labels} labels implausible (kept, not trained on)"
    )
    if checked.fraction > policy.warn_fraction:
        console.print(f"[yellow]warning: {checked.fraction:.0%} of the labels are implausible: check the oracle[/]")


@data_app.command("info")
def info_cmd(
    db: str = typer.Argument(..., help="Dataset: SQLite file or postgresql:// URL."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Counts per source and split, atoms, density and energy ranges, failures."""
    from potforge.data import DatasetStore

    if not db.startswith(("postgresql://", "postgres://")) and not Path(db).exists():
        raise DataError(f"dataset {db} does not exist")
    info = DatasetStore(db).info()
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    out = Console()
    table = Table(title=f"labelled frames in {redact(db)}")
    for col in ("source", "train", "val", "test", "total"):
        table.add_column(col, justify="right" if col != "source" else "left")
    for source, splits in sorted(info["sources"].items()):
        table.add_row(source, *(str(splits.get(s, 0)) for s in ("train", "val", "test")), str(sum(splits.values())))
    out.print(table)
    s = info["status"]
    out.print(
        f"status: {s['ok']} labelled, {s['pending']} pending, {s['failed']} failed (to retry), "
        f"{s['quarantined']} quarantined"
    )

    def span(v, unit, fmt="{:.3f}"):
        return "—" if v is None else f"{fmt.format(v[0])} – {fmt.format(v[1])} {unit}"

    out.print(f"atoms per frame: {span(info['atoms_per_frame'], '', '{:.0f}')}   total atoms: {info['total_atoms']}")
    out.print(
        f"density: {span(info['density_g_cm3'], 'g/cm³')}   energy: {span(info['energy_per_atom_eV'], 'eV/atom')}"
    )
    if info["failures"]:
        out.print(f"failures: {info['failures']}")
        for line in info["failure_examples"]:
            out.print(f"  {line}")


@data_app.command("import")
def import_cmd(
    files: list[Path] = typer.Argument(..., help="extxyz (or any ASE format with energy+forces) or ANI .h5 files."),
    db: str = typer.Option(..., "--db", help="Dataset to add to."),
    source: str = typer.Option("import", help="Provenance tag of the imported frames."),
    oracle: str = typer.Option(None, help="Name of the method that labelled them (default imported:<file>)."),
) -> None:
    """Import labelled frames (identical frames are skipped). ANI HDF5 energies are in Hartree."""
    from potforge.data import DatasetStore
    from potforge.data.io import import_ani_h5, import_extxyz

    store = DatasetStore(db)
    for path in files:
        if not path.exists():
            raise DataError(f"{path} does not exist")
        fn = import_ani_h5 if path.suffix in (".h5", ".hdf5") else import_extxyz
        n = fn(store, path, source=source, oracle=oracle)
        console.print(f"{path}: {n} new frames")


@data_app.command("export")
def export_cmd(
    db: str = typer.Argument(..., help="Dataset to read."),
    out: Path = typer.Option(..., "--out", "-o", help="Output extended-XYZ file."),
    split: str = typer.Option(None, help="Only this split (train, val, test)."),
    source: str = typer.Option(None, help="Only this source (random, active_learning, ...)."),
) -> None:
    """Export labelled frames to extended XYZ (energies, forces, stress, provenance in info)."""
    from potforge.data import DatasetStore
    from potforge.data.io import export_extxyz

    query = {k: v for k, v in {"split": split, "source": source}.items() if v}
    n = export_extxyz(DatasetStore(db), out, **query)
    console.print(f"wrote {n} frames to {out}")
