"""`dripline flows check` and `dripline flows show`, run in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dripline.cli import app

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_check_ok(runner: CliRunner) -> None:
    result = runner.invoke(app, ["flows", "check", str(REPO / "flows")])
    assert result.exit_code == 0, result.output
    assert "ok  free-trial (7 steps)" in result.output
    assert "ok  demo (3 steps) from builtin:demo.yaml" in result.output


def test_check_lists_problems_and_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("steps:\n  - text: a\n    after: soon\n")
    result = runner.invoke(app, ["flows", "check", str(tmp_path)])
    assert result.exit_code == 2
    assert "bad.yaml:3: steps[0].after: invalid duration 'soon'" in result.output


def test_check_json(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("steps: [\n")
    result = runner.invoke(app, ["flows", "check", str(tmp_path), "--json"])
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert data["flows"] == {"demo": "builtin:demo.yaml"}
    assert data["problems"][0].startswith(f"{tmp_path}/bad.yaml:2: YAML syntax error")


def test_check_defaults_to_the_settings_dir(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "x.yaml").write_text("steps:\n  - text: a\n")
    monkeypatch.setenv("DRIPLINE_FLOWS_DIR", str(tmp_path))
    result = runner.invoke(app, ["flows", "check", "--json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["flows"]) == {"demo", "x"}


def test_show(runner: CliRunner) -> None:
    result = runner.invoke(app, ["flows", "show", "free-trial", "--dir", str(REPO / "flows")])
    assert result.exit_code == 0, result.output
    assert "21:00-08:00" in result.output
    assert "trial_welcome" in result.output


def test_show_json_uses_flow_file_spellings(runner: CliRunner) -> None:
    result = runner.invoke(app, ["flows", "show", "demo", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [s["after"] for s in data["steps"]] == ["0s", "10m", "1h"]
    assert [q["id"] for q in data["questions"]] == ["hello", "middle", "bye"]


def test_show_unknown_flow_is_a_one_line_error(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["flows", "show", "nope", "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown flow 'nope' (known: demo)" in result.output


def test_check_warns_about_text_outside_the_window(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text("steps:\n  - text: hello\n")
    result = runner.invoke(app, ["flows", "check", str(tmp_path)])
    assert result.exit_code == 0, result.output  # a warning, not a problem
    assert "warning:" in result.output and "w.yaml:2: steps[0]" in result.output
    data = json.loads(runner.invoke(app, ["flows", "check", str(tmp_path), "--json"]).stdout)
    assert data["ok"] is True
    assert [w.split(": ")[0] for w in data["warnings"]] == [f"{tmp_path}/w.yaml:2"]
