"""The Python client in docs/api.md, run as written against a real server over loopback."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from dripline.server.app import create_app
from dripline.server.testing import running_server
from dripline.settings import load_settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
TOKEN = "docs-example-token"


def python_client_source() -> str:
    text = DOC.read_text()
    section = text.split("### Python (standard library)", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "docs/api.md lost its Python example"
    return match.group(1)


async def test_python_example_enrolls_idempotently_and_reports_errors(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(database_url=sqlite_url, flows_dir=tmp_path, api_token=TOKEN)
    async with running_server(create_app(settings)) as base:
        monkeypatch.setenv("DRIPLINE_URL", base)
        monkeypatch.setenv("DRIPLINE_API_TOKEN", TOKEN)
        namespace: dict[str, Any] = {}
        exec(compile(python_client_source(), str(DOC), "exec"), namespace)
        enroll, error = namespace["enroll"], namespace["DriplineError"]

        first = await asyncio.to_thread(enroll, "+14155550123", "demo", name="Ana")
        again = await asyncio.to_thread(enroll, "+14155550123", "demo", name="Ana")
        assert first["created"] is True and again["created"] is False
        assert again["id"] == first["id"]

        with pytest.raises(error) as bad:
            await asyncio.to_thread(enroll, "+1", "demo")
        assert bad.value.status == 422 and "phone" in bad.value.detail

        monkeypatch.setenv("DRIPLINE_API_TOKEN", "wrong")
        namespace = {}
        exec(compile(python_client_source(), str(DOC), "exec"), namespace)
        with pytest.raises(namespace["DriplineError"]) as denied:
            await asyncio.to_thread(namespace["enroll"], "+14155550124", "demo")
        assert denied.value.status == 401
