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
import math
import os
import statistics
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI

from dripline.dispatcher.engine import Dispatcher
from dripline.fake import FakeConfig, running_fake
from dripline.flows import load_flows
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


# The flow view ---------------------------------------------------------------------
POLL_FLOW = """
name: poll
steps:
  - id: plan
    text: "Which plan do you use? pro, basic or none"
    wait_for_reply: true
    reply_timeout: 1d
  - id: score
    text: "From 0 to 10, how likely are you to recommend us?"
    wait_for_reply: true
    reply_timeout: 1d
"""


@dataclass(frozen=True)
class _TypedQuestion:
    """A step with its question kind. The flow format gains kinds with issue 15's
    question kinds (branch `questions`); until those land, this stands in for the
    loaded flow's questions so the view's NPS (a 0-10 number question) can be shown."""

    index: int
    id: str
    title: str
    expects_reply: bool
    kind: str
    options: tuple[str, ...] = ()
    number_range: tuple[float, float] | None = None


class _TypedFlows:
    """The loaded flows, with `poll`'s questions typed (see _TypedQuestion)."""

    def __init__(self, flows: Any) -> None:
        self._flows = flows

    def names(self) -> list[str]:
        return list(self._flows.names())

    def get(self, name: str) -> Any:
        flow = self._flows.get(name)
        if name != "poll":
            return flow
        typed = (
            _TypedQuestion(0, "plan", "Which plan?", True, "choice", ("pro", "basic", "none")),
            _TypedQuestion(1, "score", "Recommend?", True, "number", (), (0.0, 10.0)),
        )
        return SimpleNamespace(name=name, questions=lambda: typed)


# 40 people: (step 0 status, plan answer or None, invalid replies first, score or None).
# Step 1 is asked of those who answered step 0, and read by every third of them.
def _people() -> list[tuple[str, str | None, int, int | None]]:
    statuses = ("read", "delivered", "sent", "failed")
    plans = ("pro", "basic", "pro", None, "none")
    return [
        (
            statuses[i % 4],
            plans[i % 5] if i % 4 != 3 else None,
            i % 3 == 0,
            i % 11 if i % 2 else None,
        )
        for i in range(40)
    ]


async def _fill_poll(store: Store) -> None:
    from tests.integration.test_store_results import T0, ask, reply, statuses

    people = _people()
    ids = [
        r.id
        for r in await store.enroll(
            [Enrollment(f"+1555200{i:04d}", "poll", at=T0) for i in range(len(people))]
            + [Enrollment("+15552009999", "other", at=T0)],
            T0,
        )
    ]
    rows, updates = [], []
    for cid, (status, plan, invalid, score) in zip(ids, people, strict=False):
        wamid = await ask(store, cid, 0, T0)
        updates.append((wamid, status))
        if invalid:
            rows.append(reply(cid, 0, 5, None, valid=False))
        if plan is None:
            continue
        rows.append(reply(cid, 0, 10 + cid % 50, "option", option=plan))
        wamid = await ask(store, cid, 1, T0 + timedelta(hours=1))
        updates.append((wamid, "read" if cid % 3 == 0 else "delivered"))
        if score is not None:
            rows.append(reply(cid, 1, 3600 + 20 + cid, "number", number=score))
    await ask(store, ids[-1], 0, T0)
    await statuses(store, *updates)
    async with store.webhook_transaction() as tx:
        await tx.insert_inbound(rows)


def _pct(part: int, whole: int) -> str:
    return "–" if not whole else f"{part / whole * 100:.1f}%"


async def _expected_view(store: Store) -> dict[str, Any]:
    """The flow view's cells, computed here from the rows (not by `Store.flow_results`)."""
    funnel: dict[int, dict[str, int]] = {}
    options: Counter[tuple[str, str]] = Counter()
    scores: list[float] = []
    waits: dict[int, list[float]] = {}
    replies: Counter[int] = Counter()
    invalid: Counter[int] = Counter()
    for conv in await store.list_conversations(flow="poll", limit=500):
        found = await store.conversation_detail(conv.id)
        assert found is not None
        _, sent_messages, inbound = found
        asked: dict[int, datetime] = {}
        for m in sent_messages:
            counts = funnel.setdefault(m.step, Counter())
            reach = {"sent": 1, "failed": 1, "delivered": 2, "read": 3}[m.status]
            counts["sent"] += 1
            counts["delivered"] += reach >= 2
            counts["read"] += reach >= 3
            if m.sent_at is not None:  # a refused send has none; nobody answers it
                asked[m.step] = m.sent_at
        for i in inbound:
            assert i.step is not None
            replies[i.step] += 1
            invalid[i.step] += i.valid is False
            if i.valid:
                funnel[i.step]["answered"] += 1
                waits.setdefault(i.step, []).append((i.received_at - asked[i.step]).total_seconds())
                if i.answer_option is not None:
                    options[("plan", i.answer_option)] += 1
                if i.answer_number is not None:
                    scores.append(i.answer_number)
    ids = {0: ("plan", "choice"), 1: ("score", "number")}
    rows = []
    for step, f in sorted(funnel.items()):
        median = statistics.median(waits[step])
        rows.append(
            [
                str(step),
                *ids[step],
                f"{f['sent']:,}",
                f"{f['delivered']:,}",
                f"{f['read']:,}",
                f"{f['answered']:,}",
                _pct(f["answered"], f["sent"]),
                f"{math.floor(median + 0.5)} s" if median < 120 else f"{median / 60:.1f} min",
                _pct(invalid[step], replies[step]),
            ]
        )
    total = sum(options.values())
    option_rows = [
        ["plan", o, str(options[("plan", o)]), _pct(options[("plan", o)], total)]
        for o in ("pro", "basic", "none")
    ]
    promoters = sum(s >= 9 for s in scores)
    detractors = sum(s <= 6 for s in scores)
    score = round(100 * (promoters - detractors) / len(scores), 1)
    nps = [
        "score",
        f"{score:g}",
        str(promoters),
        str(len(scores) - promoters - detractors),
        str(detractors),
        str(len(scores)),
    ]
    return {"funnel": rows, "options": option_rows, "nps": [nps]}


ROWS_JS = "rows => rows.map(r => [...r.cells].map(c => c.textContent))"


async def test_dashboard_flow_view_matches_the_database(tmp_path: Path) -> None:
    _require_chromium()
    from playwright.async_api import async_playwright

    url = f"sqlite:///{tmp_path / 'flows.db'}"
    store = await open_store(url, pool_size=4)
    flows_dir = tmp_path / "flows"
    flows_dir.mkdir()
    (flows_dir / "poll.yaml").write_text(POLL_FLOW)
    await _fill_poll(store)
    expected = await _expected_view(store)
    app = FastAPI()
    app.state.store = store
    app.state.flows = _TypedFlows(load_flows(flows_dir))
    app.state.dashboard_interval_s = 0.5
    app.include_router(dashboard.router)
    ARTIFACTS.mkdir(exist_ok=True)
    async with running_server(app) as base, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1400})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            await page.goto(f"{base}/")
            # The flow view is refreshed in the background: it may come with a poll.
            await page.wait_for_selector("#flow-select option[value=poll]", state="attached")
            await page.select_option("#flow-select", "poll")
            assert await page.text_content("#flow-summary") == "40 conversations"
            assert (
                await page.eval_on_selector_all("#flow-funnel tbody tr", ROWS_JS)
                == (expected["funnel"])
            )
            options = await page.eval_on_selector_all("#flow-options tbody tr", ROWS_JS)
            assert [row[:4] for row in options] == expected["options"]
            assert (
                await page.eval_on_selector_all("#flow-nps tbody tr", ROWS_JS) == (expected["nps"])
            )
            # The view follows the selection, and keeps it across polls.
            await page.select_option("#flow-select", "other")
            assert await page.text_content("#flow-summary") == "1 conversation"
            await page.wait_for_timeout(1_200)  # two polls
            assert await page.input_value("#flow-select") == "other"
            await page.select_option("#flow-select", "poll")
            await page.screenshot(path=str(ARTIFACTS / "dashboard-flow.png"), full_page=True)
            assert "+1555" not in await page.content()
            assert errors == []
        finally:
            await browser.close()
    await store.close()
