"""The dashboard in a real browser: Debian's chromium, driven by Playwright for Python.

A uvicorn server on loopback serves the dashboard (and /metrics) over a store that a
dispatcher sends through against the fake Cloud API while the page is open; the test
waits until the charts have drawn lines from several samples and the numbers on the page
equal the database's, then saves a screenshot to test-artifacts/dashboard.png.

Without /usr/bin/chromium this skips locally and FAILS in CI (`CI` set): CI installs
chromium (`apt-get install -y chromium`); `playwright install` cannot download here.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from dripline.dispatcher.engine import Dispatcher
from dripline.fake import FakeConfig, running_fake
from dripline.server import dashboard, metrics_http
from dripline.server.testing import running_server
from dripline.settings import load_settings
from dripline.status_report import gather_status
from dripline.store import Enrollment, Store, open_store
from dripline.whatsapp import CloudApiClient
from tests.fixtures.dispatch import watch_flows

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

CHROMIUM = Path(os.environ.get("DRIPLINE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = "secret-token-never-shown"


WAIT_MS = 60_000


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} not found: install it with `apt-get install -y chromium`"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set, so the browser test must run)")
    pytest.skip(message)


async def _settled(store: Store) -> None:
    """Until every claim is recorded and nothing falls due within the next minute."""
    while True:
        now = datetime.now(UTC)
        backlog = await store.backlog(now)
        next_due = await store.next_due_at(now)
        if (
            backlog.due_now == 0
            and backlog.leased == 0
            and (next_due is None or next_due > now + timedelta(minutes=1))
        ):
            return
        await asyncio.sleep(0.1)


# The page's tiles, by element id, from a status document.
def _expected_tiles(status: dict[str, Any]) -> dict[str, str]:
    b, tp = status["backlog"], status["throughput"]
    return {
        "v-due_now": f"{b['due_now']:,}",
        "v-overdue": f"{b['overdue_1m']:,}",
        "v-next_hour": f"{b['due_next_hour']:,}",
        "v-leased": f"{b['leased']:,}",
        "v-sent_15m": f"{tp['15m']['sent']:,}",
        "v-errors": f"{status['errors']['total']:,}",
        "v-workers": f"{status['workers']['count']:,}",
    }


async def test_dashboard_renders_live_charts(tmp_path: Path) -> None:
    _require_chromium()
    from playwright.async_api import async_playwright

    url = f"sqlite:///{tmp_path / 'dashboard.db'}"
    store = await open_store(url, pool_size=4)
    settings = load_settings(
        database_url=url,
        rate_per_s=50,
        pair_interval_s=0,
        whatsapp_access_token=TOKEN,
        max_attempts=1,  # a failed send fails its conversation: nothing comes back due
        heartbeat_s=0.5,
    )
    app = FastAPI()
    app.state.store = store
    app.state.settings = settings
    app.state.dashboard_interval_s = 0.5
    app.include_router(dashboard.router)
    app.include_router(metrics_http.router)

    now = datetime.now(UTC)
    await store.enroll(
        [Enrollment(phone=f"+1555000{i:04d}", flow="watch", at=now) for i in range(150)]
        + [
            Enrollment(phone=f"+1555100{i:04d}", flow="watch", at=now + timedelta(minutes=20))
            for i in range(12)
        ],
        now,
    )
    # One call in ten fails with HTTP 500 (code 1, not retried: max_attempts=1): the error
    # chart has something to show. The dispatcher's own limit (50/s) paces the sends, so
    # the throughput line rises toward the limit line for a few seconds.
    fake = FakeConfig(access_token=TOKEN, pair_interval_s=0, fail_500_fraction=0.1, seed=3)
    ARTIFACTS.mkdir(exist_ok=True)
    async with (
        running_fake(fake) as api,
        CloudApiClient(phone_number_id="1", access_token=TOKEN, base_url=api.base_url) as client,
        running_server(app) as base,
        async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            await page.goto(f"{base}/")
            # The page came with numbers already rendered by the server.
            assert await page.text_content("#v-due_now") == "150"

            # Now a dispatcher sends while the page polls.
            dispatcher = Dispatcher(
                store=store, client=client, flows=watch_flows(tmp_path), settings=settings
            )
            running = asyncio.create_task(dispatcher.run())
            try:
                await asyncio.wait_for(_settled(store), 60)
                assert dispatcher.stats.sent > 0
                assert dispatcher.stats.failed > 0
                expected = await gather_status(store)
                assert expected["workers"]["count"] == 1  # this dispatcher, heartbeating
                tiles = _expected_tiles(expected)
                await page.wait_for_function(
                    """tiles => Object.keys(tiles).every(
                        id => document.getElementById(id).textContent === tiles[id])""",
                    arg=tiles,
                    timeout=WAIT_MS,
                )
                # Lines need several samples, and the backlog line must have moved.
                await page.wait_for_function(
                    """() => {
                      const paths = [...document.querySelectorAll("svg path.series")];
                      const backlog = document.querySelector(
                        '#chart-backlog path[data-series="due_now"]');
                      return paths.length === 7
                        && paths.every(p => Number(p.dataset.points) >= 4)
                        && backlog && backlog.dataset.last === "0";
                    }""",
                    timeout=WAIT_MS,
                )
                await page.wait_for_function(
                    """() => [...document.querySelectorAll('#chart-throughput path')]
                        .some(p => p.dataset.series === "sent_per_s"
                                   && /L[\\d.]+ (?!198\\.0)/.test(p.getAttribute("d")))""",
                    timeout=WAIT_MS,
                )
                bars = await page.eval_on_selector_all(
                    "#chart-errors rect.bar",
                    "rs => Object.fromEntries(rs.map(r => [r.dataset.class, +r.dataset.count]))",
                )
                assert bars == expected["errors"]["by_class"]
                assert sum(bars.values()) > 0
                worker_rows = await page.eval_on_selector_all(
                    "#workers tbody tr", "rows => rows.map(r => r.cells[0].textContent)"
                )
                assert worker_rows == [dispatcher.worker_id]
                states = await page.eval_on_selector_all(
                    "#states tbody tr",
                    "rows => Object.fromEntries(rows.map("
                    "r => [r.cells[0].textContent, r.cells[1].textContent]))",
                )
                assert states == {k: f"{v:,}" for k, v in expected["conversations"].items()}
                # The tier the dispatcher read from the fake (80/s: STANDARD), and the
                # rate in force: the operator's 50/s, since rate_per_s is set.
                assert expected["tier"] == {
                    "level": "STANDARD",
                    "rate_per_s": 50.0,
                    "source": "operator",
                }
                await page.wait_for_function(
                    """() => document.getElementById("v-tier").textContent === "50/s (set)" """,
                    timeout=WAIT_MS,
                )
                lag_p99 = await page.text_content("#v-lag_p99")
                assert lag_p99 and lag_p99 != "–"
                # Settings are shown, secrets are not.
                body = await page.content()
                assert "rate_per_s" in body
                assert TOKEN not in body and "+1555" not in body
                await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            finally:
                dispatcher.request_stop()
                await running
            assert errors == []
        finally:
            await browser.close()
    await store.close()
