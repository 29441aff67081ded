"""`dripline serve` stops cleanly on SIGTERM, the ordinary stop of Docker, systemd and
Render: exit code 0 after the graceful shutdown, not death by the signal (uvicorn
re-raises the signal it caught)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import aiohttp

from dripline.fake import FakeConfig, running_fake
from tests.e2e.test_dispatcher_processes import start_worker, worker_env
from tests.e2e.test_run_serve import free_port
from tests.fixtures.dispatch import TOKEN


async def test_serve_exits_0_on_sigterm(sqlite_url: str, tmp_path: Path) -> None:
    port = free_port()
    async with running_fake(FakeConfig(access_token=TOKEN)) as fake:
        env = worker_env(sqlite_url, fake, DRIPLINE_PORT=str(port))
        server = await start_worker(env, tmp_path, command="serve")
        try:
            async with aiohttp.ClientSession() as http, asyncio.timeout(30):
                while True:
                    with contextlib.suppress(aiohttp.ClientConnectionError):
                        async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                            if r.status == 200:
                                break
                    assert server.proc.returncode is None, server.stderr()[-2000:]
                    await asyncio.sleep(0.2)
        finally:
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(server.proc.wait(), 20)
    assert server.proc.returncode == 0, server.stderr()[-2000:]
