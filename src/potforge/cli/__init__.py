"""potforge's command line. Commands live in the modules of this package; this module builds the
typer app and turns user errors (:class:`potforge.errors.PotforgeError`) into one-line messages."""

from __future__ import annotations

import signal
import sys

import typer

from potforge.errors import PotforgeError

app = typer.Typer(
    name="potforge",
    help="Automated discovery of machine-learned interatomic potentials (ANI ensembles + active learning).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

from potforge.cli import (  # noqa: E402, F401  (registers commands)
    campaign_cmds,
    compare_cmds,
    data_cmds,
    export_cmds,
    model_cmds,
    table1_cmds,
    train_cmds,
    validate_cmds,
)


def _terminated(signum: int, frame: object) -> None:
    # SIGTERM (kill, a batch system ending a job) unwinds like Ctrl-C: every ``with`` block
    # exits, so Parsl's interchange and worker pools are shut down instead of left orphaned
    typer.secho("potforge: terminated (SIGTERM); shutting down", err=True)
    raise KeyboardInterrupt


def main() -> None:
    """Entry point of the ``potforge`` script."""
    signal.signal(signal.SIGTERM, _terminated)
    try:
        app()
    except PotforgeError as exc:
        typer.secho(f"potforge: error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("potforge: interrupted", err=True)
        sys.exit(130)
