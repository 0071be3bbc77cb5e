"""The report renders: HTML parses and embeds every figure, every figure file is a non-empty PNG,
results.json holds every benchmark, and the summary table comes first."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input"}


class _Checker(HTMLParser):
    """Collects images and tables, and checks that every non-void tag is closed in order."""

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[str] = []
        self.order: list[str] = []  # 'table' / 'img' in document order

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
            self.order.append("img")
        if tag == "table":
            self.order.append("table")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


def test_html_report_parses_and_embeds_every_figure(emt_report):
    html_path = emt_report.files["html"]
    checker = _Checker()
    checker.feed(html_path.read_text(encoding="utf-8"))
    checker.close()
    assert not checker.errors, checker.errors[:3]
    assert checker.stack == [], f"unclosed tags {checker.stack}"
    figures = [f for r in emt_report.results for f in r.figures]
    assert len(figures) >= 7 and len(checker.images) == len(figures)
    for src in checker.images:
        assert src.startswith("data:image/png;base64,")  # self-contained
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert checker.order[0] == "table"  # the summary table opens the report


def test_every_figure_file_is_a_nonempty_png(emt_report):
    for res in emt_report.results:
        for path in res.figures:
            data = path.read_bytes()
            assert data.startswith(PNG_MAGIC) and len(data) > 5000, path


def test_results_json_and_markdown(emt_report):
    out = emt_report.files["json"].parent
    data = json.loads(emt_report.files["json"].read_text())
    names = [b["name"] for b in data["benchmarks"]]
    assert set(names) == {"crystal", "eos", "elastic", "vacancy", "surfaces", "bain", "gsfe"}
    for bench in data["benchmarks"]:
        assert bench["status"] == "ok"
        for fig in bench["figures"]:
            assert (out / fig).is_file()  # relative to the report folder
        for curve in bench["curves"]:
            assert len(curve["x"]) == len(curve["model"]) == len(curve["reference"]) == curve["n_points"]
            assert curve["rmse"] == 0.0
    assert data["reference"]["oracle"]["name"] == "emt"
    md = emt_report.files["markdown"].read_text()
    assert md.index("| property | model | reference | error | unit |") < md.index("![")
    for res in emt_report.results:
        for fig in res.figures:
            assert f"](figures/{fig.name})" in md
