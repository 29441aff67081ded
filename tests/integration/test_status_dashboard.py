"""The dashboard's server side on both backends: the sampler's history and status, the
JSON endpoint and the server-rendered page (the browser test covers the drawing)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from fastapi import FastAPI

from dripline.metrics import gather_status
from dripline.server import dashboard
from dripline.server.dashboard import DashboardSampler
from dripline.server.testing import running_server
from dripline.settings import load_settings
from dripline.store import Enrollment, Store, WorkerInfo

SECRET = "dashboard-secret-token"


async def _seed(store: Store) -> None:
    now = datetime.now(UTC)
    overdue = now - timedelta(minutes=2)
    soon = now + timedelta(minutes=5)
    await store.enroll(
        [Enrollment(phone=f"+1555000{i:04d}", flow="demo", at=overdue) for i in range(3)]
        + [Enrollment(phone=f"+1555100{i:04d}", flow="demo", at=soon) for i in range(2)],
        now,
    )
    await store.heartbeat(
        WorkerInfo(
            id="w1",
            hostname="h1",
            pid=7,
            started_at=now,
            heartbeat_at=now,
            rate_per_s=25.0,
            concurrency=4,
            policy="static",
            stats={"in_flight": 3, "sent": 0},
        ),
        live_after_s=10,
    )


async def test_sampler_history_and_status(store: Store) -> None:
    await _seed(store)
    sampler = DashboardSampler(store, None, interval_s=60, history=3, slow_every=2)
    for _ in range(5):
        await sampler.sample_once()
    assert len(sampler.samples) == 3  # a ring buffer
    series = sampler.series()
    assert series["due_now"] == [3, 3, 3]
    assert series["overdue"] == [3, 3, 3]
    assert series["next_hour"] == [2, 2, 2]
    assert series["rate_limit_per_s"] == [25.0, 25.0, 25.0]
    assert series["in_flight"] == [3, 3, 3]
    assert series["t"] == sorted(series["t"])
    status = sampler.status
    assert status is not None
    expected = await gather_status(store, live_after_s=10.0)
    assert status["backlog"] == expected["backlog"]
    assert status["conversations"] == expected["conversations"]
    assert status["workers"]["list"] == expected["workers"]["list"]


async def test_rate_limit_falls_back_to_settings_without_workers(store: Store) -> None:
    settings = load_settings(rate_per_s=33)
    sampler = DashboardSampler(store, settings, interval_s=60)
    sample = await sampler.sample_once()
    assert sample.rate_limit_per_s == 33


async def test_dashboard_json_and_page(store: Store) -> None:
    await _seed(store)
    app = FastAPI()
    app.state.store = store
    app.state.settings = load_settings(
        whatsapp_access_token=SECRET,
        api_token=SECRET,
        database_url="postgresql://dripline:pw-in-url@db.example:5432/dripline",
    )
    app.state.dashboard_interval_s = 0.05
    app.include_router(dashboard.router)
    async with running_server(app) as base, aiohttp.ClientSession() as http:
        doc: dict[str, Any] = {}
        for _ in range(400):  # the lifespan started the sampler: wait for a few samples
            async with http.get(f"{base}/api/dashboard") as response:
                assert response.status == 200
                doc = await response.json()
            if len(doc["series"]["t"]) >= 3:
                break
            await asyncio.sleep(0.02)
        async with http.get(f"{base}/") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/html")
            page = await response.text()
    assert len(doc["series"]["t"]) >= 3
    assert doc["status"]["backlog"]["due_now"] == 3
    assert doc["status"]["workers"]["count"] == 1
    assert doc["settings"]["whatsapp_access_token"] == "***"
    assert doc["settings"]["api_token"] == "***"
    for text in (str(doc), page):
        assert SECRET not in text
        assert "pw-in-url" not in text
        assert "+1555" not in text
    assert 'id="v-due_now">3<' in page  # rendered on the server, before any script runs
    assert "<svg" in page and "http://" not in page.split("<script>")[1].replace(
        "http://www.w3.org/2000/svg", ""
    )  # nothing loaded from elsewhere: works offline
    assert app.state.dashboard_sampler is None  # stopped with the server


async def test_without_a_store_the_json_says_so() -> None:
    app = FastAPI()
    app.include_router(dashboard.router)
    async with running_server(app) as base, aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/dashboard") as response:
            assert response.status == 503
        async with http.get(f"{base}/") as response:
            assert response.status == 200
