"""The live dashboard at `/` of `dripline serve`, and its JSON at `/api/dashboard`.

One HTML page, rendered here with the current numbers, plus a small inline script that
polls `/api/dashboard` every couple of seconds and draws its own SVG charts: no build
step, no CDN, nothing fetched from outside, so it works offline.

A sampler task reads the database every `interval_s` (2 s) into an in-memory ring
buffer (30 minutes), so the charts have history from the first page load, and every
browser tab reads that buffer instead of querying the database itself. Cheap queries
(backlog via the due index, sends in the last minute, lag, live workers) run on every
tick; the ones that scan more (15-minute throughput, errors, conversations by state,
every `slow_every` ticks; each flow's results for the flow view in the background, at
most once a minute (`dashboard_flows.py`).

The app provides `app.state.store` (and optionally `app.state.settings`, shown
redacted, and `app.state.flows`, the flows whose questions the flow view names);
`app.state.dashboard_interval_s` overrides the sampling interval (tests).
Only aggregates are shown: no phone number, message text or secret reaches the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import resources
from string import Template
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from dripline.errors import DriplineError
from dripline.flows import FlowRegistry
from dripline.server.dashboard_flows import FlowViews
from dripline.settings import Settings
from dripline.status_report import state_counts, status_document
from dripline.store import BacklogSnapshot, ErrorCount, LagSummary, Store

__all__ = ["DashboardSampler", "Sample", "router"]

log = structlog.get_logger(__name__)

DEFAULT_INTERVAL_S = 2.0
HISTORY_POINTS = 900  # 30 minutes at 2 s
# Throughput on the chart: sends whose sent_at falls in the last 10 s. Results are
# written in batches a moment after the send, so a shorter window would read low.
RATE_WINDOW_S = 10
LAG_WINDOW_S = 60.0
ERROR_WINDOW_S = 900.0
LIVE_AFTER_S = 10.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One point of every chart."""

    t: float  # Unix time
    due_now: int
    overdue: int
    next_hour: int
    leased: int
    sent_per_s: float
    rate_limit_per_s: float
    lag_p50_s: float
    lag_p99_s: float
    in_flight: int
    errors: int


class DashboardSampler:
    """Reads the database on a timer; keeps the last `history` samples and the latest
    full status document."""

    def __init__(
        self,
        store: Store,
        settings: Settings | None = None,
        *,
        flows: FlowRegistry | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        history: int = HISTORY_POINTS,
        slow_every: int = 5,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.settings = settings
        self.flow_views = FlowViews(store, flows)
        self.interval_s = interval_s
        self.samples: deque[Sample] = deque(maxlen=history)
        self.status: dict[str, Any] | None = None
        self._slow_every = max(1, slow_every)
        self._clock = clock
        self._ticks = 0
        self._states: dict[str, int] = {}
        self._states_estimated = False
        self._long_sent: dict[int, int] = {300: 0, 900: 0}
        self._errors: list[ErrorCount] = []
        self._task: asyncio.Task[None] | None = None
        self._first = asyncio.Event()

    async def sample_once(self) -> Sample:
        """Take one sample (and, every `slow_every` ticks, the slower counts)."""
        now = self._clock()
        slow = self._ticks % self._slow_every == 0
        self._ticks += 1
        backlog: BacklogSnapshot = await self.store.backlog_snapshot(now)
        short = await self.store.sent_counts(now, (RATE_WINDOW_S, 60))
        lag: LagSummary = await self.store.lag_summary(now, window_s=LAG_WINDOW_S, sample=5_000)
        workers = await self.store.live_workers(now, live_after_s=LIVE_AFTER_S)
        if slow:
            self._long_sent = await self.store.sent_counts(now, (300, 900))
            self._errors = await self.store.error_counts(now, window_s=ERROR_WINDOW_S)
            self._states, self._states_estimated = await state_counts(self.store)
        self.flow_views.maybe_refresh()
        doc = status_document(
            now=now,
            backlog=backlog,
            states=self._states,
            states_estimated=self._states_estimated,
            sent={60: short[60], **self._long_sent},
            lag=lag,
            errors=self._errors,
            workers=workers,
            lag_window_s=LAG_WINDOW_S,
            error_window_s=ERROR_WINDOW_S,
            live_after_s=LIVE_AFTER_S,
        )
        rate_limit = doc["workers"]["rate_per_s"]
        if not workers and self.settings is not None:
            rate_limit = self.settings.rate_per_s  # the configured limit, none live
        sample = Sample(
            t=now.timestamp(),
            due_now=backlog.due_now,
            overdue=backlog.overdue_1m,
            next_hour=backlog.due_next_hour,
            leased=backlog.leased,
            sent_per_s=round(short[RATE_WINDOW_S] / RATE_WINDOW_S, 3),
            rate_limit_per_s=float(rate_limit),
            lag_p50_s=lag.p50_s,
            lag_p99_s=lag.p99_s,
            in_flight=sum(int(w.stats.get("in_flight", 0) or 0) for w in workers),
            errors=doc["errors"]["total"],
        )
        self.samples.append(sample)
        self.status = doc
        self._first.set()
        return sample

    async def run(self) -> None:
        """Sample every `interval_s` until cancelled; a database error skips one tick."""
        while True:
            started = time.monotonic()
            try:
                await self.sample_once()
            except DriplineError as exc:
                log.warning("dashboard sample failed", error=str(exc))
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, self.interval_s - elapsed))

    def start(self) -> None:
        """Start sampling in the running event loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self.run(), name="dripline-dashboard-sampler"
            )

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flow_views.stop()

    async def first_sample(self, timeout_s: float) -> None:
        """Wait (briefly) for the first sample, so a first page load shows numbers."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._first.wait()
                await self.flow_views.ready.wait()  # and the flow view, when it is quick

    def series(self) -> dict[str, list[float]]:
        """The ring buffer as columns, one list per field (what the charts draw)."""
        columns: dict[str, list[float]] = {name: [] for name in Sample.__slots__}
        for sample in self.samples:
            for name, value in asdict(sample).items():
                columns[name].append(value)
        return columns

    def document(self) -> dict[str, Any]:
        """Everything the page needs in one JSON document."""
        return {
            "interval_s": self.interval_s,
            "series": self.series(),
            "status": self.status,
            "settings": _settings_rows(self.settings),
            "flows": self.flow_views.views,
        }


def _settings_rows(settings: Settings | None) -> dict[str, Any] | None:
    # Secrets and the database password are redacted by Settings itself.
    return settings.redacted() if settings is not None else None


def _sampler(app: FastAPI) -> DashboardSampler | None:
    sampler: DashboardSampler | None = getattr(app.state, "dashboard_sampler", None)
    if sampler is not None:
        return sampler
    store: Store | None = getattr(app.state, "store", None)
    if store is None:
        return None
    sampler = DashboardSampler(
        store,
        getattr(app.state, "settings", None),
        flows=getattr(app.state, "flows", None),
        interval_s=float(getattr(app.state, "dashboard_interval_s", DEFAULT_INTERVAL_S)),
    )
    app.state.dashboard_sampler = sampler
    sampler.start()
    return sampler


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Runs inside the app's own lifespan, so `app.state.store` is set by now. Sampling
    # starts with the server, so the charts already have history on the first visit.
    _sampler(app)
    try:
        yield
    finally:
        sampler: DashboardSampler | None = getattr(app.state, "dashboard_sampler", None)
        if sampler is not None:
            await sampler.stop()
            app.state.dashboard_sampler = None


router = APIRouter(lifespan=_lifespan)


def _page_template() -> Template:
    text = resources.files("dripline.server").joinpath("static/dashboard.html").read_text("utf-8")
    return Template(text)


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt_s(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def _tiles(status: Mapping[str, Any] | None) -> dict[str, str]:
    """The headline numbers, rendered on the server (the script keeps them current)."""
    if status is None:
        return {}
    b, tp, lag = status["backlog"], status["throughput"], status["lag"]
    return {
        "due_now": f"{b['due_now']:,}",
        "overdue": f"{b['overdue_1m']:,}",
        "next_hour": f"{b['due_next_hour']:,}",
        "leased": f"{b['leased']:,}",
        "sent_1m": f"{tp['1m']['sent']:,}",
        "sent_5m": f"{tp['5m']['sent']:,}",
        "sent_15m": f"{tp['15m']['sent']:,}",
        "lag_p50": _fmt_s(lag["p50_s"]),
        "lag_p99": _fmt_s(lag["p99_s"]),
        "errors": f"{status['errors']['total']:,}",
        "workers": f"{status['workers']['count']:,}",
        "tier": _tier_tile(status.get("tier")),
    }


def _tier_tile(tier: Mapping[str, Any] | None) -> str:
    """The throughput tier tile, as the page's script writes it (`tierText`)."""
    if not tier:
        return "–"
    rate = f"{float(tier.get('rate_per_s') or 0):,.0f}/s"
    if tier.get("source") == "operator":
        return f"{rate} (set)"
    return f"{tier.get('level') or 'unknown'} {rate}"


def _settings_html(settings: Mapping[str, Any] | None) -> str:
    if not settings:
        return "<tr><td colspan=2>not available</td></tr>"
    rows = []
    for key, value in settings.items():
        shown = value if isinstance(value, str) else json.dumps(value)
        rows.append(f"<tr><th>{_esc(key)}</th><td>{_esc(shown)}</td></tr>")
    return "".join(rows)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def dashboard_page(request: Request) -> HTMLResponse:
    """The dashboard page, with the current numbers already in it."""
    sampler = _sampler(request.app)
    doc: dict[str, Any] = {
        "interval_s": DEFAULT_INTERVAL_S,
        "series": {},
        "status": None,
        "flows": [],
    }
    if sampler is not None:
        await sampler.first_sample(timeout_s=2.0)
        doc = sampler.document()
    else:
        doc["settings"] = _settings_rows(getattr(request.app.state, "settings", None))
    tiles = _tiles(doc["status"])
    values = {f"v_{key}": _esc(tiles.get(key, "–")) for key in _TILE_KEYS}
    page = _page_template().substitute(
        values,
        interval_ms=int(float(doc["interval_s"]) * 1000),
        settings_rows=_settings_html(doc.get("settings")),
        # `</` cannot occur in JSON from json.dumps of our data except inside strings;
        # escaping it keeps a string from closing the script element.
        initial_json=json.dumps(doc).replace("</", "<\\/"),
    )
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


_TILE_KEYS = (
    "due_now", "overdue", "next_hour", "leased", "sent_1m", "sent_5m", "sent_15m",
    "lag_p50", "lag_p99", "errors", "workers", "tier",
)  # fmt: skip


@router.get("/api/dashboard", include_in_schema=False)
async def dashboard_data(request: Request) -> JSONResponse:
    """The chart history, the latest status and the (redacted) settings."""
    sampler = _sampler(request.app)
    if sampler is None:
        return JSONResponse({"error": "no database configured"}, status_code=503)
    return JSONResponse(sampler.document(), headers={"Cache-Control": "no-store"})
