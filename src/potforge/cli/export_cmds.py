"""``potforge export kim``: a model as an OpenKIM portable model (LAMMPS, ASE, GULP, ...)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from potforge.cli import app

console = Console(stderr=True)
export_app = typer.Typer(help="Export a model for other simulation codes.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("kim")
def kim_cmd(
    model: str = typer.Argument(..., help="Model file (.pt), NeuroChem .info file, or 'ani-al'."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the KIM driver and model items."),
    name: str = typer.Option(None, help="KIM model name (a C identifier); default potforge_<file stem>."),
    install: bool = typer.Option(
        False, "--install", help="Build and install both items with kim-api-collections-management."
    ),
    collection: str = typer.Option("user", help="KIM collection to install into: user, environment, system or CWD."),
) -> None:
    """Write MODEL as a KIM portable model plus its model driver (potforge's own C kernels).

    In LAMMPS: `kim init NAME metal` ... `kim interactions El ...` (or `pair_style kim NAME`,
    `pair_coeff * * El ...`); in ASE: `ase.calculators.kim.KIM(NAME)`. See docs/lammps.md.
    """
    from potforge.export.kim import export_kim, install_kim

    export = export_kim(model, out, name=name)
    console.print(f"wrote KIM model driver {export.driver_name} to {export.driver_dir}")
    console.print(f"wrote KIM portable model {export.model_name} to {export.model_dir}")
    if install:
        install_kim(export, collection)
        console.print(f"installed both into the KIM {collection} collection")
    else:
        console.print(
            f"install: kim-api-collections-management install {collection} {export.driver_dir} && "
            f"kim-api-collections-management install {collection} {export.model_dir}"
        )
    elements = " ".join(export.elements)
    console.print(f"LAMMPS: kim init {export.model_name} metal ... kim interactions {elements}")
