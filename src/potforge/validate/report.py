"""The validation report: ``results.json`` (everything, machine-readable), ``report.md`` and a
self-contained ``report.html`` (figures embedded as base64 PNG). Both reports open with one
summary table (property, model, reference, error = model − reference) and then one section per
benchmark with its notes, figures and detail tables. Rendering is generic over
:class:`BenchmarkResult`, so new benchmarks need no code here."""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from potforge import durable
from potforge.validate.results import BenchmarkResult, Curve, SummaryRow, Table, jsonable


@dataclass
class ValidationReport:
    """A finished validation run: per-benchmark results plus who was compared with what."""

    results: list[BenchmarkResult]
    model: dict[str, Any]
    reference: dict[str, Any]
    settings: dict[str, Any]
    wall_time_s: float = 0.0
    created: str = ""
    files: dict[str, Path] = field(default_factory=dict)
    #: the gates the model is judged by (potforge.properties.GateResult) and the verdict in words
    gates: list[Any] = field(default_factory=list)
    verdict: list[str] = field(default_factory=list)

    def result(self, name: str) -> BenchmarkResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self, root: Path | None = None) -> dict[str, Any]:
        return {
            "potforge_version": _version(),
            "created": self.created,
            "wall_time_s": round(self.wall_time_s, 2),
            "model": jsonable(self.model),
            "reference": jsonable(self.reference),
            "settings": jsonable(self.settings),
            "verdict": list(self.verdict),
            "gates": [g.model_dump() for g in self.gates],
            "benchmarks": [r.to_dict(root) for r in self.results],
        }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("potforge")
    except PackageNotFoundError:
        return "unknown"


def fmt(value: Any, decimals: int = 2) -> str:
    """A number with ``decimals`` decimals ('—' for missing/NaN); other cells as text."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) or hasattr(value, "__float__"):
        v = float(value)
        return "—" if not math.isfinite(v) else f"{v:.{decimals}f}"
    return str(value)


def summary_rows(report: ValidationReport) -> list[tuple[str, list[str]]]:
    """(benchmark title, [rows of 5 cells: property, model, reference, error, unit]) per benchmark;
    curve rows give 'RMSE / MAE' in the error column."""
    out = []
    for res in report.results:
        rows: list[list[str]] = []
        if res.status != "ok":
            rows.append(["FAILED: " + (res.error or "unknown error"), "", "", "", ""])
        for r in res.summary:
            rows.append([r.property, fmt(r.model, r.decimals), fmt(r.reference, r.decimals),
                         _signed(r.error, r.decimals), r.unit])  # fmt: skip
        for c in res.curves:
            d = 2 if c.y_unit != "mJ/m²" else 1
            rows.append([f"{c.name}: RMSE / MAE", "curve", "curve", f"{fmt(c.rmse, d)} / {fmt(c.mae, d)}", c.y_unit])
        out.append((res.title, rows))
    return out


def gate_rows(report: ValidationReport) -> list[list[str]]:
    """[property, model, reference, error, unit, gate, verdict] per gate."""
    mark = {True: "inside", False: "OUTSIDE", None: "not measured"}
    return [[g.property, fmt(g.model, 3), fmt(g.reference, 3), _signed(g.error, 3), g.unit, g.gate, mark[g.passed]]
            for g in report.gates]  # fmt: skip


GATE_COLUMNS = ["property", "model", "reference", "error", "unit", "gate", "verdict"]


def _signed(v: float | None, decimals: int) -> str:
    return "—" if v is None else f"{v:+.{decimals}f}"


def write_report(report: ValidationReport, out_dir: Path) -> dict[str, Path]:
    """Write results.json, report.md and report.html under ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "json": out_dir / "results.json",
        "markdown": out_dir / "report.md",
        "html": out_dir / "report.html",
    }
    _atomic_write(files["json"], json.dumps(report.to_dict(out_dir), indent=1, allow_nan=False))
    _atomic_write(files["markdown"], render_markdown(report, out_dir))
    _atomic_write(files["html"], render_html(report))
    report.files = files
    return files


def _atomic_write(path: Path, text: str) -> None:
    durable.write_text(path, text)


def _side_text(d: dict[str, Any]) -> str:
    extra = d.get("spec") or (d.get("oracle") or {}).get("name") or d.get("kind", "")
    settings = (d.get("oracle") or {}).get("settings")
    text = f"{d.get('label')} ({d.get('kind')}: {extra})"
    if settings:
        text += " " + json.dumps(settings, sort_keys=True)
    return text


# --- markdown ----------------------------------------------------------------------------------
def _md_table(columns: list[str], rows: list[list[str]]) -> str:
    def esc(c: str) -> str:
        return str(c).replace("|", "\\|")

    lines = ["| " + " | ".join(esc(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(report: ValidationReport, out_dir: Path) -> str:
    """The Markdown report; figures are linked by path relative to ``out_dir``."""
    parts = [
        "# potforge validation report",
        "",
        f"- model: {_side_text(report.model)}",
        f"- reference: {_side_text(report.reference)}",
        f"- created: {report.created}; wall time {report.wall_time_s:.1f} s",
        "",
    ]
    if report.gates or report.verdict:
        parts += ["## Verdict", ""] + [f"- {v}" for v in report.verdict] + [""]
        if report.gates:
            parts += [_md_table(GATE_COLUMNS, gate_rows(report)), ""]
    parts += [
        "## Summary (error = model − reference)",
        "",
    ]
    rows = []
    for title, block in summary_rows(report):
        rows.append([f"**{title}**", "", "", "", ""])
        rows += block
    parts += [_md_table(["property", "model", "reference", "error", "unit"], rows), ""]
    for res in report.results:
        parts += [f"## {res.title}" + (f" (paper {res.section})" if res.section else ""), ""]
        parts += [f"_{res.wall_time_s:.1f} s; new calculations: {_calc_text(res)}_", ""]
        if res.status != "ok":
            parts += [f"**FAILED**: {res.error}", ""]
        parts += [f"- {n}" for n in res.notes] + ([""] if res.notes else [])
        for fig in res.figures:
            rel = fig.relative_to(out_dir) if fig.is_relative_to(out_dir) else fig
            parts += [f"![{fig.stem}]({rel.as_posix()})", ""]
        if res.curves:
            parts += [_md_table(*_curve_table(res.curves)), ""]
        for t in res.tables:
            parts += [f"**{t.title}**", "", _md_table(t.columns, _table_cells(t)), ""]
    return "\n".join(parts)


def _calc_text(res: BenchmarkResult) -> str:
    return ", ".join(f"{k} {v}" for k, v in res.calculations.items()) or "—"


def _curve_table(curves: list[Curve]) -> tuple[list[str], list[list[str]]]:
    cols = ["curve", "points", "RMSE", "MAE", "max |error|", "unit"]
    rows = [[c.name, str(int(c.common.sum())), fmt(c.rmse), fmt(c.mae), fmt(c.max_abs_error), c.y_unit] for c in curves]
    return cols, rows


def _table_cells(t: Table) -> list[list[str]]:
    return [[fmt(c, t.decimals) for c in row] for row in t.rows]


# --- HTML --------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:1.5em auto;
padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:2em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em}th{background:#f3f5f7;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.group td{background:#eef3fa;font-weight:600}
.meta{color:#555;font-size:.9em}.failed{color:#b00020;font-weight:600}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.4em 0}
details{margin:.5em 0}pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.85em}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_table(columns: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{_e(c)}</td>' if k >= numeric_from else f"<td>{_e(c)}</td>" for k, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(path: Path) -> str:
    if not path.is_file():
        return f'<p class="failed">missing figure {_e(path.name)}</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{_e(path.stem)}" src="data:image/png;base64,{data}">'


def render_html(report: ValidationReport) -> str:
    """The self-contained HTML report (no external resources)."""
    head = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>potforge validation: {_e(report.model.get('label'))} vs {_e(report.reference.get('label'))}</title>"
        f"<style>{CSS}</style></head><body>"
    )
    parts = [
        head,
        "<h1>potforge validation report</h1>",
        f'<p class="meta">model: {_e(_side_text(report.model))}<br>reference: {_e(_side_text(report.reference))}'
        f"<br>created {_e(report.created)}; wall time {report.wall_time_s:.1f} s</p>",
    ]
    if report.gates or report.verdict:
        parts.append("<h2>Verdict</h2><ul>" + "".join(f"<li>{_e(v)}</li>" for v in report.verdict) + "</ul>")
        if report.gates:
            body = []
            for row in gate_rows(report):
                cls = ' class="failed"' if row[-1] == "OUTSIDE" else ""
                cells = f"<td>{_e(row[0])}</td>" + "".join(f'<td class="num">{_e(c)}</td>' for c in row[1:4])
                cells += f"<td>{_e(row[4])}</td><td>{_e(row[5])}</td><td{cls}>{_e(row[6])}</td>"
                body.append(f"<tr>{cells}</tr>")
            head = "".join(f"<th>{_e(c)}</th>" for c in GATE_COLUMNS)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    parts.append(
        "<h2>Summary</h2><p class='meta'>error = model − reference; curve rows give RMSE / MAE over common points.</p>"
    )
    rows_html = []
    for res, (title, block) in zip(report.results, summary_rows(report), strict=True):
        rows_html.append(f'<tr class="group"><td colspan="5"><a href="#{_e(res.name)}">{_e(title)}</a></td></tr>')
        for row in block:
            cls = ' class="failed"' if row[0].startswith("FAILED") else ""
            cells = f"<td{cls}>{_e(row[0])}</td>" + "".join(f'<td class="num">{_e(c)}</td>' for c in row[1:4])
            rows_html.append(f"<tr>{cells}<td>{_e(row[4])}</td></tr>")
    parts.append(
        "<table><thead><tr><th>property</th><th>model</th><th>reference</th><th>error</th><th>unit</th></tr>"
        f"</thead><tbody>{''.join(rows_html)}</tbody></table>"
    )
    for res in report.results:
        section = f" <small>(paper {_e(res.section)})</small>" if res.section else ""
        parts.append(f'<h2 id="{_e(res.name)}">{_e(res.title)}{section}</h2>')
        parts.append(f'<p class="meta">{res.wall_time_s:.1f} s; new calculations: {_e(_calc_text(res))}</p>')
        if res.status != "ok":
            parts.append(f'<p class="failed">FAILED: {_e(res.error)}</p>')
        if res.notes:
            parts.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in res.notes) + "</ul>")
        parts += [_img(f) for f in res.figures]
        if res.curves:
            parts.append(_html_table(*_curve_table(res.curves)))
        for t in res.tables:
            parts.append(f"<p><strong>{_e(t.title)}</strong></p>" + _html_table(t.columns, _table_cells(t)))
    settings = json.dumps(jsonable(report.settings), indent=1, ensure_ascii=False)
    parts.append(f"<h2>Settings</h2><details><summary>protocol settings</summary><pre>{_e(settings)}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


__all__ = ["SummaryRow", "ValidationReport", "render_html", "render_markdown", "write_report"]
