"""``potforge validate`` on the command line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from potforge.cli import app
from potforge.errors import PotforgeError

runner = CliRunner()


def test_validate_command_writes_the_report(tmp_path):
    out = tmp_path / "report"
    result = runner.invoke(app, ["validate", "oracle:emt", "--reference", "emt", "--out", str(out),
                                 "--only", "eos,bain", "--quick"])  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("report.html", "report.md", "results.json", "figures/bain.png", "figures/eos.png"):
        assert (out / name).is_file(), name
    data = json.loads((out / "results.json").read_text())
    assert [b["name"] for b in data["benchmarks"]] == ["eos", "bain"]
    assert data["settings"]["eos_points"] == 7  # --quick


def test_settings_override_from_json(tmp_path):
    out = tmp_path / "r"
    result = runner.invoke(app, ["validate", "oracle:emt", "-r", "emt", "-o", str(out), "--only", "bain",
                                 "--settings", '{"bain_c_over_a_step": 0.1}'])  # fmt: skip
    assert result.exit_code == 0, result.output
    bain = json.loads((out / "results.json").read_text())["benchmarks"][0]
    assert len(bain["curves"][0]["x"]) == 9  # 0.6..1.3 by 0.1 plus 1/√2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--only", "nonsense"], "unknown benchmark"),
        (["--reference", "no-such-oracle"], "unknown oracle"),
        (["--settings", '{"gsfe_layers": 10}'], "multiple of 3"),
        (["--reference-settings", "[1, 2]"], "must be a mapping"),
    ],
)
def test_user_errors_are_potforge_errors(tmp_path, args, message):
    base = ["validate", "oracle:emt", "--out", str(tmp_path)]
    if "--reference" not in args:
        base += ["--reference", "emt"]
    result = runner.invoke(app, base + args)
    assert isinstance(result.exception, PotforgeError), result.output
    assert message in str(result.exception)


def test_missing_reference_is_a_user_error(tmp_path):
    result = runner.invoke(app, ["validate", "ani-al", "--out", str(tmp_path)])
    assert isinstance(result.exception, PotforgeError) and "--reference" in str(result.exception)


def test_list_benchmarks():
    result = runner.invoke(app, ["validate", "--list"])
    assert result.exit_code == 0
    for name in ("crystal", "eos", "elastic", "vacancy", "surfaces", "bain", "gsfe"):
        assert name in result.output
