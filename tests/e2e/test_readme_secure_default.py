"""A newcomer follows the README and forgets DRIPLINE_API_TOKEN: `dripline serve` must
still leave no unauthenticated API, neither to the network nor to a browser.

The server runs as a subprocess in a fresh folder with the README's defaults
(`./dripline.db`, `./flows`). The test finds the token where the startup output says it
is, and shows that writes without it, from a foreign Origin, to a foreign Host or as a
form are refused, that the dashboard and metrics need it, and that a restart reuses the
token without printing it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import stat
from pathlib import Path

import aiohttp

from tests.e2e.test_dispatcher_processes import DRIPLINE
from tests.e2e.test_run_serve import free_port

REPO = Path(__file__).resolve().parents[2]
ENROLL = '{"phone": "+14155550100", "flow": "free-trial", "name": "Ana"}'


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIPLINE_")}
    env.update(
        DRIPLINE_WHATSAPP_PHONE_NUMBER_ID="1234567890",
        DRIPLINE_WHATSAPP_ACCESS_TOKEN="meta-access-token",
        DRIPLINE_WHATSAPP_APP_SECRET="meta-app-secret",
        DRIPLINE_WHATSAPP_VERIFY_TOKEN="meta-verify-token",
    )
    return env


async def _serve(folder: Path, port: int) -> tuple[asyncio.subprocess.Process, Path]:
    log = folder / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            DRIPLINE,
            "serve",
            "--port",
            str(port),
            cwd=folder,
            env=_env(),
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    async with aiohttp.ClientSession() as http, asyncio.timeout(30):
        while True:
            with contextlib.suppress(aiohttp.ClientConnectionError):
                async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                    if r.status == 200:
                        return proc, log
            assert proc.returncode is None, log.read_text()[-2000:]
            await asyncio.sleep(0.2)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)


async def test_following_the_readme_without_a_token_leaves_nothing_open(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    shutil.copy(REPO / "flows" / "free-trial.yaml", tmp_path / "flows")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/v1/conversations"
    proc, log = await _serve(tmp_path, port)
    try:
        output = log.read_text()
        # The startup output names the file, and the file holds the token it printed.
        found = re.search(r"saved it to (\S+) \(mode 0600\)", output)
        assert found, output[-2000:]
        token_file = Path(found.group(1))
        assert token_file.parent == tmp_path  # next to ./dripline.db
        token = token_file.read_text().strip()
        assert token in output
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "dripline.db").stat().st_mode) == 0o600
        bearer = {"Authorization": f"Bearer {token}"}
        json_type = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession() as http:
            refused = [
                ({**json_type}, 401),  # no token
                ({"Content-Type": "text/plain"}, 401),  # the classic CSRF form post
                ({**bearer, "Content-Type": "text/plain"}, 415),
                ({**bearer, "Content-Type": "application/x-www-form-urlencoded"}, 415),
                ({**json_type, "Origin": "https://evil.example"}, 403),
                ({**bearer, **json_type, "Origin": "https://evil.example"}, 403),
                ({**bearer, **json_type, "Host": "rebound.evil.example"}, 421),
            ]
            for headers, expected in refused:
                async with http.post(url, data=ENROLL, headers=headers) as r:
                    assert r.status == expected, (headers, await r.text())
            for path in ("/", "/api/dashboard", "/metrics", "/v1/conversations"):
                async with http.get(base + path) as r:
                    assert r.status == 401, path
            async with http.post(url, data=ENROLL, headers={**bearer, **json_type}) as r:
                assert r.status == 201, await r.text()
            async with http.get(url, headers=bearer) as r:
                assert r.status == 200 and len((await r.json())["items"]) == 1
    finally:
        await _stop(proc)
    # A restart reads the same token and does not print it again.
    port2 = free_port()
    proc2, log2 = await _serve(tmp_path, port2)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port2}/v1/conversations", headers=bearer) as r,
        ):
            assert r.status == 200
    finally:
        await _stop(proc2)
    second = log2.read_text()
    assert token not in second and str(token_file) in second
