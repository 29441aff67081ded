"""`dripline fake-whatsapp` as a subprocess: it starts, serves and stops on SIGTERM."""

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow
DRIPLINE = str(Path(sys.executable).with_name("dripline"))


@contextmanager
def serving(tmp_path: Path, *flags: str, output: list[str] | None = None) -> Iterator[str]:
    """`dripline fake-whatsapp FLAGS` on a free port; yields its base URL. It must stop
    cleanly on SIGTERM; `output` collects everything it printed."""
    env = {**os.environ, "DRIPLINE_WHATSAPP_ACCESS_TOKEN": "cli-token"}
    env.pop("DRIPLINE_CONFIG", None)
    proc = subprocess.Popen(
        [DRIPLINE, "fake-whatsapp", "--port", "0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        base_url = None
        for _ in range(50):
            line = proc.stdout.readline()
            match = re.search(r"serving on (http://127\.0\.0\.1:\d+)", line)
            if match:
                base_url = match.group(1)
            if "ready" in line or not line:
                break
        assert base_url, "the fake never said where it serves"
        yield base_url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            if output is not None and proc.stdout is not None:
                output.append(proc.stdout.read())


def call(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        headers={"Authorization": "Bearer cli-token", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def send(base_url: str, kind: str, **fields: Any) -> tuple[int, dict[str, Any]]:
    body = {"messaging_product": "whatsapp", "to": "+15551234567", "type": kind, **fields}
    return call(f"{base_url}/v23.0/123/messages", body)


def test_fake_whatsapp_flags_for_window_templates_and_tier(tmp_path: Path) -> None:
    flags = ("--window", "sync", "--template", "welcome@pt_BR:1", "--throughput-level", "HIGH")
    with serving(tmp_path, *flags) as base_url:
        assert call(f"{base_url}/v23.0/123?fields=throughput") == (
            200,
            {"throughput": {"level": "HIGH"}, "id": "123"},
        )
        status, answer = send(base_url, "text", text={"body": "hi"})
        assert (status, answer["error"]["code"]) == (400, 131047)
        template = {"name": "welcome", "language": {"code": "pt_BR"}}
        status, answer = send(base_url, "template", template=template)
        assert (status, answer["error"]["code"]) == (400, 132000)
        params = [{"type": "body", "parameters": [{"type": "text", "text": "Ana"}]}]
        status, _ = send(base_url, "template", template={**template, "components": params})
        assert status == 200
        other = {"name": "trial_checkin", "language": {"code": "en_US"}, "components": params}
        status, answer = send(base_url, "template", template=other)
        assert (status, answer["error"]["code"]) == (404, 132001)  # replaced the defaults
    with serving(tmp_path, "--no-window", "--any-template") as base_url:
        assert send(base_url, "text", text={"body": "hi"})[0] == 200
        assert (
            send(base_url, "template", template={"name": "x", "language": {"code": "de"}})[0] == 200
        )
        assert call(f"{base_url}/v23.0/123?fields=throughput")[1]["throughput"] == {
            "level": "STANDARD"
        }


def test_fake_whatsapp_rejects_bad_flags(tmp_path: Path) -> None:
    for flags in (["--window", "later"], ["--template", "a:b"], ["--throughput-level", "MAX"]):
        result = subprocess.run(
            [DRIPLINE, "fake-whatsapp", "--port", "0", *flags],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
        )
        assert result.returncode != 0
        assert flags[0] in result.stderr + result.stdout


def test_fake_whatsapp_serves(tmp_path: Path) -> None:
    printed: list[str] = []
    with serving(tmp_path, "--rate", "80", "--latency-ms", "150", output=printed) as base_url:
        status, answer = send(base_url, "text", text={"body": "hi"})
        assert status == 200
        assert answer["messages"][0]["id"].startswith("wamid.")
        bad = urllib.request.Request(
            f"{base_url}/v23.0/123/messages", data=b"{}", headers={"Authorization": "Bearer x"}
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(bad, timeout=10)
        assert info.value.code == 401
        assert json.loads(info.value.read())["error"]["code"] == 190
        assert call(f"{base_url}/_fake/stats")[1]["accepted"] == 1
    assert "cli-token" not in "".join(printed)
