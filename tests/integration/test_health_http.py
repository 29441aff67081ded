"""`/healthz` and `/readyz` over loopback, on both processes that serve them:
`dripline serve` (the app, in this event loop) and `dripline run --metrics-port` (a
worker subprocess). Ready, and not ready for each reason that can be staged here."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from sqlalchemy.engine import make_url

from dripline.fake import FakeConfig, running_fake
from dripline.server.app import create_app
from dripline.server.testing import running_server
from dripline.settings import load_settings
from dripline.store import Store
from tests.e2e.test_dispatcher_processes import start_worker, worker_env
from tests.e2e.test_run_serve import free_port
from tests.fixtures.dispatch import TOKEN


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as r:
        return r.status, await r.json()


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _sql(url: str, statement: str) -> None:
    conn = await asyncpg.connect(_dsn(url))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def test_serve_is_ready_and_then_not_for_a_waiting_inbox(store: Store) -> None:
    settings = load_settings(ready_max_inbox_lag_s=60)
    app = create_app(settings, store=store, process_inbox=False)
    async with running_server(app) as base, aiohttp.ClientSession() as http:
        assert await _get(http, f"{base}/healthz") == (200, {"status": "ok"})
        status, body = await _get(http, f"{base}/readyz")
        assert status == 200, body
        assert body["status"] == "ready" and body["failing"] == []
        assert body["checks"]["breaker"]["status"] == "skipped"  # no dispatcher here
        app.state.readiness.reuse_s = 0
        # A webhook stored two minutes ago and never applied: the processor is stuck.
        await store.insert_inbox(["{}"], datetime.now(UTC) - timedelta(minutes=2))
        status, body = await _get(http, f"{base}/readyz")
        assert status == 503, body
        assert body["failing"] == ["inbox"]
        assert "1 webhook(s) waiting" in body["checks"]["inbox"]["detail"]


@pytest.mark.postgres
async def test_serve_is_not_ready_behind_the_schema_or_without_its_database(
    postgres_url: str, postgres_server_url: str
) -> None:
    app = create_app(load_settings(database_url=postgres_url))
    async with running_server(app) as base, aiohttp.ClientSession() as http:
        status, body = await _get(http, f"{base}/readyz")
        assert status == 200, body
        app.state.readiness.reuse_s = 0
        # As after a deploy whose migration has not run yet (or was rolled back).
        await _sql(postgres_url, "UPDATE alembic_version SET version_num = '0001'")
        status, body = await _get(http, f"{base}/readyz")
        assert status == 503 and body["failing"] == ["schema"], body
        assert "run `dripline db upgrade`" in body["checks"]["schema"]["detail"]
        # The database goes away: not ready, in time, and /healthz still answers.
        name = make_url(postgres_url).database
        await _sql(postgres_server_url, f'DROP DATABASE "{name}" WITH (FORCE)')
        status, body = await _get(http, f"{base}/readyz")
        assert status == 503 and body["failing"] == ["database"], body
        assert body["checks"]["schema"]["status"] == "skipped"
        assert (await _get(http, f"{base}/healthz"))[0] == 200


@pytest.mark.postgres
async def test_worker_metrics_port_serves_health_and_readiness(
    postgres_url: str, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = FakeConfig(access_token=TOKEN, rate_per_s=0, pair_interval_s=0, latency_ms=5)
    async with running_fake(config) as fake:
        env = worker_env(postgres_url, fake)
        worker = await start_worker(env, tmp_path, "--metrics-port", str(port))
        try:
            async with aiohttp.ClientSession() as http:
                async with asyncio.timeout(30):
                    while True:
                        with contextlib.suppress(aiohttp.ClientConnectionError):
                            async with http.get(f"{base}/healthz") as r:
                                if r.status == 200:
                                    assert await r.json() == {"status": "ok"}
                                    break
                        assert worker.proc.returncode is None, worker.stderr()[-2000:]
                        await asyncio.sleep(0.2)
                status, body = await _get(http, f"{base}/readyz")
                assert status == 200, body
                assert body["checks"]["breaker"]["status"] == "ok"
                assert body["checks"]["inbox"]["status"] == "skipped"  # serve applies them
                await _sql(postgres_url, "UPDATE alembic_version SET version_num = 'older'")
                async with asyncio.timeout(10):  # past the probe's one-second reuse
                    while (await _get(http, f"{base}/readyz"))[0] == 200:
                        await asyncio.sleep(0.3)
                status, body = await _get(http, f"{base}/readyz")
                assert status == 503 and body["failing"] == ["schema"], body
                assert "database at older" in body["checks"]["schema"]["detail"]
                # Every other path is still the metrics.
                async with http.get(f"{base}/metrics") as r:
                    assert r.status == 200
                    assert "dripline_circuit_breaker_open" in await r.text()
        finally:
            worker.proc.terminate()
            await asyncio.wait_for(worker.proc.wait(), 30)
    assert worker.proc.returncode == 0, worker.stderr()[-2000:]
