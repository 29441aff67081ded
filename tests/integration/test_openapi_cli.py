"""`dripline openapi`: the same document the running server answers at /openapi.json."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from typer.testing import CliRunner

from dripline.cli import app
from dripline.server.app import create_app
from dripline.server.testing import running_server
from dripline.settings import load_settings

SECRET = "a-real-token-that-must-not-leak"


async def test_document_matches_the_served_one(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The caller's own settings, even a broken one, change nothing in the document.
    monkeypatch.setenv("DRIPLINE_API_TOKEN", SECRET)
    monkeypatch.setenv("DRIPLINE_PORT", "not-a-port")
    out = tmp_path / "openapi.json"
    result = CliRunner().invoke(app, ["openapi", str(out)])
    assert result.exit_code == 0, result.output
    written = out.read_text()
    assert SECRET not in written
    monkeypatch.delenv("DRIPLINE_PORT")

    settings = load_settings(database_url=sqlite_url, flows_dir=tmp_path / "none")
    async with (
        running_server(create_app(settings)) as base,
        aiohttp.ClientSession() as http,
        http.get(f"{base}/openapi.json", headers={"Authorization": f"Bearer {SECRET}"}) as response,
    ):
        assert response.status == 200
        served = await response.json()
    assert json.loads(written) == served
    enroll = served["paths"]["/v1/conversations"]["post"]
    assert enroll["security"] == [{"HTTPBearer": []}]


def test_stdout_by_default() -> None:
    result = CliRunner().invoke(app, ["openapi"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["info"]["title"] == "dripline"
    assert "/v1/conversations" in document["paths"]
