"""`dripline fake-whatsapp` as a subprocess: it starts, serves and stops on SIGTERM."""

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
DRIPLINE = str(Path(sys.executable).with_name("dripline"))


def test_fake_whatsapp_serves(tmp_path: Path) -> None:
    env = {**os.environ, "DRIPLINE_WHATSAPP_ACCESS_TOKEN": "cli-token"}
    env.pop("DRIPLINE_CONFIG", None)
    proc = subprocess.Popen(
        [DRIPLINE, "fake-whatsapp", "--rate", "80", "--latency-ms", "150", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        base_url = None
        for _ in range(50):  # poll the output until it says where it serves
            line = proc.stdout.readline()
            match = re.search(r"serving on (http://127\.0\.0\.1:\d+)", line)
            if match:
                base_url = match.group(1)
            if "ready" in line or not line:
                break
        assert base_url, "the fake never said where it serves"
        body = json.dumps(
            {
                "messaging_product": "whatsapp",
                "to": "+15551234567",
                "type": "text",
                "text": {"body": "hi"},
            }
        ).encode()
        request = urllib.request.Request(
            f"{base_url}/v23.0/123/messages",
            data=body,
            headers={"Authorization": "Bearer cli-token", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            answer = json.loads(resp.read())
        assert answer["messages"][0]["id"].startswith("wamid.")
        bad = urllib.request.Request(
            f"{base_url}/v23.0/123/messages", data=body, headers={"Authorization": "Bearer x"}
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(bad, timeout=10)
        assert info.value.code == 401
        assert json.loads(info.value.read())["error"]["code"] == 190
        with urllib.request.urlopen(f"{base_url}/_fake/stats", timeout=10) as resp:
            assert json.loads(resp.read())["accepted"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    out = proc.stdout.read() if proc.stdout else ""
    assert "cli-token" not in out
