"""`dripline run --serve`: the dispatcher and the server in one process, as deployed."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp

from dripline.fake import FakeConfig, running_fake
from tests.e2e.test_dispatcher_processes import AUTH, start_worker, worker_env
from tests.fixtures.dispatch import TOKEN


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_run_serve_enrolls_sends_and_reports(sqlite_url: str, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = FakeConfig(access_token=TOKEN, rate_per_s=0, pair_interval_s=0, latency_ms=5)
    async with running_fake(config) as fake:
        env = worker_env(sqlite_url, fake, DRIPLINE_PORT=str(port), DRIPLINE_RATE_PER_S="100")
        worker = await start_worker(env, tmp_path, "--serve")
        try:
            async with aiohttp.ClientSession(headers=AUTH) as http:
                async with asyncio.timeout(30):
                    while True:
                        try:
                            async with http.get(f"{base}/healthz") as r:
                                if r.status == 200:
                                    break
                        except aiohttp.ClientConnectionError:
                            pass
                        assert worker.proc.returncode is None, worker.stderr()[-2000:]
                        await asyncio.sleep(0.2)
                body = [
                    {"phone": f"+1415550{i:04d}", "flow": "demo", "name": "Ana"} for i in range(5)
                ]
                async with http.post(f"{base}/v1/conversations", json=body) as r:
                    assert r.status in (200, 201), await r.text()
                    created = await r.json()
                ids = [item["id"] for item in created["results"]]
                async with asyncio.timeout(30):
                    while len(fake.state.messages) < 5:
                        await asyncio.sleep(0.1)
                async with asyncio.timeout(10):
                    while True:
                        async with http.get(f"{base}/v1/conversations/{ids[0]}") as r:
                            conv = await r.json()
                        if conv["messages"] and conv["messages"][0]["status"] == "sent":
                            break
                        await asyncio.sleep(0.2)
                assert conv["step"] == 1 and conv["state"] == "in_progress"
                async with http.get(f"{base}/metrics") as r:
                    metrics = await r.text()
                assert "dripline_sends_total" in metrics
                assert TOKEN not in metrics
        finally:
            code = await worker.stop()
    assert code == 0, worker.stderr()[-3000:]
    assert sorted(m.to for m in fake.state.messages) == sorted(f"1415550{i:04d}" for i in range(5))
