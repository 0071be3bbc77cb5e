"""Commands on models: ``potforge eval`` and ``potforge info``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from potforge import durable
from potforge.cli import app
from potforge.errors import PotforgeError, StructureError

console = Console(stderr=True)


def parse_dtype(name: str):
    import torch

    table = {"float32": torch.float32, "float64": torch.float64}
    if name not in table:
        raise PotforgeError(f"--dtype must be float32 or float64, not {name!r}")
    return table[name]


def read_structures(paths: list[Path]):
    """Every frame of every file (anything ASE reads), or a StructureError naming the file."""
    from ase.io import read

    frames = []
    for path in paths:
        if not path.exists():
            raise StructureError(f"structure file {path} does not exist")
        try:
            frames.extend(read(path, index=":"))
        except Exception as exc:  # ASE raises many types for unreadable files
            raise StructureError(f"cannot read {path} with ASE: {type(exc).__name__}: {exc}") from None
    if not frames:
        raise StructureError("no structures in the given files")
    return frames


@app.command("eval")
def eval_cmd(
    model: str = typer.Argument(..., help="Model file (.pt), NeuroChem .info file, or 'ani-al'."),
    structures: list[Path] = typer.Argument(..., help="Structure files, any format ASE reads (all frames)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output extended-XYZ file."),
    dtype: str = typer.Option("float32", help="float32 (fast) or float64."),
    batch_atoms: int = typer.Option(4000, help="Atoms per batched model call."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N, or auto (a GPU when PyTorch sees one)."),
) -> None:
    """Evaluate a model on structures: energy, forces, stress and ensemble uncertainty.

    Each output frame carries energy (eV), forces (eV/Å), stress (eV/Å³, periodic cells),
    info['energy_std'] and info['member_energies'] (eV), arrays['force_std'] (eV/Å);
    read it back with ase.io.read(OUT, ':').
    """
    from ase.io import write

    from potforge.devices import resolve_device
    from potforge.model import load_model, predict_frames

    ensemble = load_model(model, dtype=parse_dtype(dtype), device=resolve_device(device))
    frames = read_structures(structures)
    with Progress(
        TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
    ) as bar:
        task = bar.add_task("eval", total=len(frames))
        results = predict_frames(ensemble, frames, batch_atoms, progress=lambda n: bar.advance(task, n))
    buffer = io.StringIO()
    write(buffer, results, format="extxyz")
    durable.write_text(out, buffer.getvalue())
    n_atoms = sum(len(a) for a in results)
    if len(results) <= 50:
        console.print(summary_table(results))
    console.print(f"wrote {len(results)} frames ({n_atoms} atoms) to {out}")


def summary_table(frames):
    """Per-frame energy and ensemble disagreement, for a quick look."""
    from rich.table import Table

    table = Table(title="model predictions")
    for col in ("#", "structure", "atoms", "E/atom (eV)", "σ_E/√N (meV)", "max σ_F (eV/Å)"):
        table.add_column(col, justify="right" if col != "structure" else "left")
    for k, atoms in enumerate(frames):
        n = len(atoms)
        label = str(atoms.info.get("label", atoms.get_chemical_formula()))
        table.add_row(
            str(k),
            label,
            str(n),
            f"{atoms.get_potential_energy() / n:.4f}",
            f"{atoms.info['energy_std'] / n**0.5 * 1e3:.2f}",
            f"{atoms.arrays['force_std'].max():.3f}",
        )
    return table


@app.command("info")
def info_cmd(model: str = typer.Argument(..., help="Model file (.pt), NeuroChem .info file, or 'ani-al'.")) -> None:
    """Print a model's elements, AEV, network layout, members and provenance as JSON."""
    from potforge.model import load_model

    ensemble = load_model(model, dtype=parse_dtype("float64"))
    summary = {"architecture": getattr(ensemble, "architecture", "ani"), "elements": list(ensemble.elements),
               "members": ensemble.n_members}  # fmt: skip
    if summary["architecture"] == "hipnn":
        summary["hipnn"] = ensemble.params.to_dict()
    else:
        summary["layer_sizes"] = list(ensemble.networks.layer_sizes)
        summary["aev"] = ensemble.aev_params.to_dict()
    summary["self_energies_eV"] = ensemble.self_energies_eV
    summary["metadata"] = ensemble.metadata
    typer.echo(json.dumps(summary, indent=2))
