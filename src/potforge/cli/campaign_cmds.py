"""``potforge run CONFIG`` (start or continue a campaign) and ``potforge status DIR``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from potforge.cli import app
from potforge.errors import ConfigError

console = Console(stderr=True)


def _fmt_time(fs: float | None) -> str:
    if fs is None:
        return "—"
    return f"{fs / 1000:.1f} ps" if fs >= 1000 else f"{fs:.0f} fs"


class LiveView:
    """One screen of campaign progress, refreshed from the loop's events."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.event: dict = {}
        self.started = time.time()
        self.history: list[dict] = []

    def update(self, event: dict) -> None:
        self.event = event

    def render(self):
        return Group(*self.lines(), Text(f"elapsed {time.time() - self.started:.0f} s", style="dim"))

    def lines(self) -> list[Text]:
        e = self.event
        head = Text(
            f"campaign {self.name} — generation {e.get('generation', 0)} — {e.get('stage', 'starting')}", style="bold"
        )
        lines = [head]
        stage = e.get("stage")
        if stage == "label" and "total" in e:
            lines.append(Text(f"labelling: {e.get('done', 0)}/{e.get('total', 0)} frames"))
        elif stage == "train" and "epoch" in e:
            lines.append(
                Text(
                    f"training: epoch {e['epoch']}, lr {max(e['lr']):.1e}, val energy "
                    f"{e.get('val_energy_rmse_meV_per_atom', float('nan')):.2f} meV/atom, "
                    f"force {e.get('val_force_rmse_eV_per_A', float('nan')):.3f} eV/Å"
                )
            )
        elif stage == "sample" and "replicas" in e:
            lines.append(
                Text(
                    f"sampling: {e['replicas']} replicas running, {e['flagged']} frames flagged, "
                    f"{e['total_steps']} MD steps, median time to flag {_fmt_time(e.get('median_time_to_flag_fs'))}"
                )
            )
        elif stage == "warning":
            lines.append(Text(f"warning: {e.get('message')}", style="yellow"))
        elif stage == "finished":
            lines.append(Text(f"finished: {e.get('reason')}"))
        return lines


class LogLines:
    """Campaign progress for a log file or a pipe, where a live view draws nothing until the end:
    one timestamped line whenever the stage or generation changes, for every warning and at the
    finish, and otherwise at most one every ``every_s`` seconds."""

    def __init__(self, view: LiveView, every_s: float = 30.0) -> None:
        self.view, self.every_s = view, every_s
        self.key: tuple | None = None
        self.last = 0.0

    def __call__(self, event: dict) -> None:
        self.view.update(event)
        key, now = (event.get("stage"), event.get("generation")), time.time()
        if key == self.key and key[0] not in ("warning", "finished") and now - self.last < self.every_s:
            return
        self.key, self.last = key, now
        head, *rest = self.view.lines()
        if rest and key[0] in ("warning", "finished"):  # the stage would say it twice
            head = Text(f"campaign {self.view.name} — generation {key[1]}")
        text = " — ".join(line.plain for line in (head, *rest))
        console.print(f"{time.strftime('%H:%M:%S')} {text}", highlight=False, markup=False, soft_wrap=True)


@app.command("run")
def run_cmd(
    config: Path = typer.Argument(..., help="Campaign YAML (see examples/)."),
    directory: Path = typer.Option(None, "--dir", help="Campaign directory (default: runs/<name>)."),
    validate: bool = typer.Option(True, help="Write the validation report for the final model."),
) -> None:
    """Start a campaign, or continue it: kill it at any moment and run the same command again."""
    from potforge.campaign import run_campaign
    from potforge.config import load_config

    cfg = load_config(config)
    directory = directory or Path("runs") / cfg.name
    view = LiveView(cfg.name)
    if not console.is_terminal:  # a log file or a pipe (nohup, a batch job): lines, not a live view
        state = run_campaign(cfg, directory, progress=LogLines(view))
    else:
        with Live(view.render(), console=console, refresh_per_second=2) as live:

            def show(event: dict) -> None:
                view.update(event)
                live.update(view.render())

            state = run_campaign(cfg, directory, progress=show)
    console.print(f"campaign {cfg.name}: {state.stop_reason}; directory {directory}")
    print_status(directory)
    if validate and cfg.validation.enabled:
        validate_campaign(directory, cfg)


def _num(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def print_status(directory: Path) -> dict:
    """Print a campaign's summary tables and write its plots; returns the summary."""
    from potforge.campaign import CampaignState
    from potforge.report import campaign_summary, write_campaign_plots

    if not (directory / "campaign.json").exists():
        raise ConfigError(f"{directory} is not a campaign directory (no campaign.json)")
    state = CampaignState.load(directory)
    summary = campaign_summary(directory, state)
    out = Console()
    table = Table(title=f"campaign {directory}")
    columns = (
        "gen", "labelled (crystal)", "implausible", "oracle calls", "epochs", "test E (meV/atom)", "test F (eV/Å)",
        "flagged (crystal)", "KM median t-flag", "S(target)", "trajectories (censored)", "crystallised",
    )  # fmt: skip
    for col in columns:
        table.add_column(col, justify="right")
    for row in summary["generations"]:
        census = row.get("census") or {}
        table.add_row(
            str(row["generation"]),
            f"{_num(row.get('dataset_size'), 'd')} ({_num(row.get('crystalline_frames'), 'd')})",
            _num(row.get("implausible"), "d"),
            _num(row.get("oracle_calls"), "d"),
            _num(row.get("epochs"), "d"),
            _num(row.get("test_energy_rmse_meV_per_atom"), ".2f"),
            _num(row.get("test_force_rmse_eV_per_A"), ".3f"),
            f"{_num(row.get('flagged'), 'd')} ({_num(census.get('flagged_crystalline'), 'd')})",
            _fmt_time(row.get("median_time_to_flag_fs")) if row.get("trajectories") else "—",
            _num(row.get("survival_at_target"), ".2f"),
            f"{_num(row.get('trajectories'), 'd')} ({_num(row.get('censored'), 'd')})",
            _num(census.get("crystallised"), "d"),
        )
    out.print(table)
    for row in summary["generations"]:
        for message in row.get("warnings") or []:
            out.print(f"[yellow]generation {row['generation']}: {message}[/]")
    curve = [r for r in summary["generations"] if r.get("properties")]
    if curve:
        out.print(_learning_curve_table(curve, _gate_set(directory)))
    status = "finished: " + state.stop_reason if state.finished else f"in progress (generation {state.generation})"
    out.print(status)
    plots = write_campaign_plots(directory, summary)
    for p in plots:
        out.print(f"plot: {p}")
    return summary


def _gate_set(directory: Path) -> str:
    import yaml

    try:
        recorded = yaml.safe_load((directory / "config.yaml").read_text())["config"]
        return (recorded.get("validation") or {}).get("gates", "quick")
    except (OSError, KeyError, TypeError, ValueError):
        return "quick"


def _learning_curve_table(rows: list[dict], gates: str) -> Table:
    """Model − oracle per generation for the gate properties; a ✗ marks a value outside its gate."""
    from potforge.properties import GATES, LABELS, PropertyPoint, judge

    keys = [g.key for g in GATES[gates]]
    table = Table(title=f"property learning curve (model − oracle; ✗ outside the {gates} gate)")
    table.add_column("gen", justify="right")
    table.add_column("oracle calls", justify="right")
    for key in keys:
        table.add_column(LABELS[key], justify="right")
    for row in rows:
        point = PropertyPoint.model_validate(row["properties"])
        verdicts = {r.property: r for r in judge(point.values, gates)}
        cells = []
        for key in keys:
            r = verdicts[LABELS[key]]
            if r.error is None:
                cells.append("—")
                continue
            v = point.values[key]
            shown = f"{100 * r.error / abs(v.reference):+.1f} %" if v.unit in ("Å", "GPa") else f"{r.error:+.2f}"
            if key in ("eps_bcc_meV", "bain_bcc_meV") and r.gate.startswith("above"):
                shown = f"{v.model:+.1f} vs {v.reference:+.1f}"
            cells.append(shown + ("" if r.passed else " ✗"))
        table.add_row(str(point.generation), str(point.oracle_calls), *cells)
    return table


@app.command("status")
def status_cmd(
    directory: Path = typer.Argument(..., help="Campaign directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Summarise a campaign (per generation: dataset, errors, flagged frames, time to flag) and
    write its plots to DIR/plots/."""
    if as_json:
        from potforge.campaign import CampaignState
        from potforge.report import campaign_summary

        typer.echo(json.dumps(campaign_summary(directory, CampaignState.load(directory)), indent=2))
        return
    print_status(directory)


def validate_campaign(directory: Path, cfg) -> Path | None:
    """Write the validation report of a campaign's final model against its own oracle."""
    from potforge.campaign import final_model
    from potforge.validate import run_validation
    from potforge.validate.settings import ValidationSettings

    model = final_model(directory)
    if model is None:
        return None
    out = directory / "report"
    settings = ValidationSettings.quick() if cfg.validation.quick else ValidationSettings()
    console.print(f"validating {model} against {cfg.oracle.name} -> {out}")
    report = run_validation(
        str(model),
        cfg.oracle.name,
        out,
        only=cfg.validation.only,
        settings=settings,
        reference_settings=cfg.oracle.settings,
        progress=lambda *a: None,
        gates=cfg.validation.gates,
    )
    for line in report.verdict:
        console.print(line)
    console.print(f"validation report: {out / 'report.html'} ({report.wall_time_s:.0f} s)")
    return out / "report.html"
