"""The clients in docs/api.md: the Python ones run as written against a real server over
loopback; every request body on the page checked against the app's OpenAPI document."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

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


# --- every request shape on the page, against the app's OpenAPI document ------------


def _block(heading: str, lang: str) -> str:
    section = DOC.read_text().split(heading, 1)[1]
    match = re.search(rf"```{lang}\n(.*?)```", section, re.DOTALL)
    assert match is not None, f"docs/api.md lost its {heading} example"
    return match.group(1)


def _openapi() -> dict[str, Any]:
    settings = load_settings(database_url="sqlite:///:memory:", api_token=TOKEN)
    schema: dict[str, Any] = create_app(settings).openapi()
    return schema


def _enroll_validator(doc: dict[str, Any]) -> Draft202012Validator:
    body = doc["paths"]["/v1/conversations"]["post"]["requestBody"]["content"]
    # The document's components travel with the schema, so its `#/components/...` refs
    # resolve as they do in the document itself.
    schema = {**body["application/json"]["schema"], "components": doc["components"]}
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _ts_object(literal: str) -> Any:
    """A TypeScript object literal of strings as JSON (quote the bare keys)."""
    return json.loads(re.sub(r"([{,]\s*)(\w+):", r'\1"\2":', literal))


def documented_bodies(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Every enrollment body the page shows or its code sends."""
    text = DOC.read_text()
    bodies: dict[str, Any] = {}
    curl = re.search(r"curl -X POST \S*/v1/conversations .*?-d '(.*?)'", text, re.DOTALL)
    assert curl is not None, "docs/api.md lost its curl example"
    bodies["curl"] = json.loads(curl.group(1))
    ts = _block("### TypeScript (fetch)", "ts")
    call = re.search(r"await enroll\((\{.*?\})\);", ts.replace("//", ""), re.DOTALL)
    assert call is not None, "the TypeScript example lost its enroll call"
    bodies["typescript"] = _ts_object(call.group(1))
    bodies["typescript list"] = [bodies["typescript"], bodies["curl"]]
    # The Python clients build their bodies themselves: capture what they would send.
    namespace: dict[str, Any] = {}
    monkeypatch.setenv("DRIPLINE_URL", "http://dripline.invalid")
    monkeypatch.setenv("DRIPLINE_API_TOKEN", TOKEN)
    exec(compile(_block("### Python (httpx)", "python"), str(DOC), "exec"), namespace)
    sent: list[Any] = []

    def record(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        sent.append(json.loads(request.content))
        return httpx.Response(201, json={"id": 1, "created": True, "conversation": {}})

    namespace["client"] = httpx.Client(
        base_url="http://dripline.invalid",
        headers=namespace["client"].headers,
        transport=httpx.MockTransport(record),
    )
    python = _block("### Python (httpx)", "python")
    example = re.search(r"^# (enroll\(.*?\))\s*$", python, re.DOTALL | re.MULTILINE)
    assert example is not None, "the httpx example lost its enroll call"
    eval(re.sub(r"\n#\s*", " ", example.group(1)), namespace)
    namespace["enroll"]("+14155550123", "demo")
    bodies["httpx"], bodies["httpx minimal"] = sent
    return bodies


def test_every_documented_request_body_is_valid_for_the_openapi_document(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    validator = _enroll_validator(_openapi())
    bodies = documented_bodies(monkeypatch)
    assert {"curl", "typescript", "httpx"} <= set(bodies)
    for name, body in bodies.items():
        problems = [e.message for e in validator.iter_errors(body)]
        assert not problems, f"docs/api.md {name} body {body}: {problems}"
    # The check can fail: a misspelt field or a missing one is refused.
    assert not validator.is_valid({"phone": "+14155550123", "flows": "demo"})
    assert not validator.is_valid({"flow": "demo"})


def test_typescript_types_name_what_dripline_openapi_writes() -> None:
    doc = _openapi()
    ts = _block("### TypeScript (fetch)", "ts")
    schemas = re.findall(r'components\["schemas"\]\["(\w+)"\]', ts)
    paths = re.findall(r'paths\["([^"]+)"\]\["(\w+)"\]', ts)
    assert schemas and paths
    for name in schemas:
        assert name in doc["components"]["schemas"], name
    for path, method in paths:
        assert method in doc["paths"][path], (path, method)
    assert "Authorization: `Bearer ${DRIPLINE_API_TOKEN}`" in ts


async def test_httpx_example_enrolls_idempotently_and_reports_errors(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(database_url=sqlite_url, flows_dir=tmp_path, api_token=TOKEN)
    source = _block("### Python (httpx)", "python")
    async with running_server(create_app(settings)) as base:
        monkeypatch.setenv("DRIPLINE_URL", base)
        monkeypatch.setenv("DRIPLINE_API_TOKEN", TOKEN)
        namespace: dict[str, Any] = {}
        exec(compile(source, str(DOC), "exec"), namespace)
        enroll, error = namespace["enroll"], namespace["DriplineError"]
        first = await asyncio.to_thread(enroll, "+14155550123", "demo", name="Ana")
        again = await asyncio.to_thread(enroll, "+14155550123", "demo", name="Ana")
        assert (first["created"], again["created"], again["id"]) == (True, False, first["id"])
        with pytest.raises(error) as bad:
            await asyncio.to_thread(enroll, "+1", "demo")
        assert bad.value.status == 422 and "phone" in bad.value.detail
        monkeypatch.setenv("DRIPLINE_API_TOKEN", "wrong")
        namespace = {}
        exec(compile(source, str(DOC), "exec"), namespace)
        with pytest.raises(namespace["DriplineError"]) as denied:
            await asyncio.to_thread(namespace["enroll"], "+14155550124", "demo")
        assert denied.value.status == 401
