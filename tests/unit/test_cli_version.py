"""`dripline --version`: the version users and bug reports see is pyproject.toml's."""

from __future__ import annotations

import tomllib
from pathlib import Path

from typer.testing import CliRunner

import dripline
from dripline.cli import app

REPO = Path(__file__).resolve().parents[2]


def test_version_is_the_package_metadata() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"dripline {declared}"
    assert dripline.__version__ == declared
