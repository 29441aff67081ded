"""Prometheus metrics: a dispatcher observer, backlog gauges from the database, a server.

    # `dripline run --metrics-port 9100`: all of it in one block
    async with metrics_exporter(settings, 9100) as exporter:
        await run_dispatcher(settings, observer=exporter.observer)

    # or piece by piece
    registry = new_registry()                       # process/GC collectors included
    observer = PrometheusObserver(registry)         # pass to Dispatcher(observer=...)
    backlog = BacklogCollector(store, registry)     # due now / overdue / next hour
    start_metrics_server(9100, registry)            # a daemon thread
    async with backlog.running():                   # refreshes every `refresh_s`
        ...

Names follow Prometheus conventions (`_total` counters, `_seconds` units) and every label
takes a bounded set of values: outcomes and error classes are enums, error codes are the
codes of `dripline.whatsapp.errors.ERROR_TABLE` (anything else is `other`). Phone numbers,
message ids and error texts never become labels.

The observer is on the send path (1,000 sends/s and more), so each label combination is
bound once and cached; a call costs a dict lookup and one or two lock-protected adds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dripline.dispatcher.stats import DispatchObserver
from dripline.errors import DriplineError
from dripline.server.worker_http import WsgiApp, with_routes
from dripline.settings import Settings
from dripline.store import (
    THROUGHPUT_WINDOWS_S,
    BacklogSnapshot,
    ErrorCount,
    LagSummary,
    Store,
    WorkerInfo,
)
from dripline.whatsapp.errors import ERROR_TABLE, ErrorClass, describe

__all__ = [
    "LAG_BUCKETS_S",
    "LATENCY_BUCKETS_S",
    "OUTCOMES",
    "BacklogCollector",
    "MetricsExporter",
    "PrometheusObserver",
    "code_label",
    "error_rows",
    "gather_status",
    "metrics_exporter",
    "new_registry",
    "start_metrics_server",
    "status_document",
    "window_name",
]

# Schedule lag: from on time (10 ms) to an hour behind, the range an operator acts on.
LAG_BUCKETS_S = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
# Cloud API round trips: tens of milliseconds normally, seconds when it struggles.
LATENCY_BUCKETS_S = (
    0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 15.0, 30.0,
)  # fmt: skip
# One claim or one batched result write: milliseconds, a second when the DB is loaded.
DB_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# `outcome` label values: `sent`, or the dispatcher's reaction to a failed send.
OUTCOMES = ("sent", "retry", "fail", "fallback", "unknown", "trip")
_ERROR_CLASSES = frozenset(c.value for c in ErrorClass)
_THROTTLE_CLASSES = (
    ErrorClass.THROTTLE.value,
    ErrorClass.PAIR_THROTTLE.value,
    ErrorClass.QUALITY_THROTTLE.value,
)
_KNOWN_CODES = frozenset(ERROR_TABLE)


def code_label(code: int | None) -> str:
    """An error code as a label value from a bounded set: `none`, a known code, `other`."""
    if code is None:
        return "none"
    return str(code) if code in _KNOWN_CODES else "other"


def new_registry() -> CollectorRegistry:
    """A registry with the process (memory, CPU, open files), platform and GC collectors.

    A fresh registry rather than the global default, so tests and several dispatchers in
    one process never collide on metric names.
    """
    registry = CollectorRegistry(auto_describe=True)
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        # The default collectors are already in the global registry; registering them in
        # a second one is allowed and shares their (cheap, on-scrape) readings.
        with contextlib.suppress(ValueError):
            registry.register(collector)
    return registry


class PrometheusObserver:
    """A `DispatchObserver` that updates Prometheus metrics; cheap enough for the send path."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sends = Counter(
            "dripline_sends_total",
            "Send attempts by outcome: sent, or the reaction to a failure "
            "(retry, fail, fallback, unknown, trip), with the error class and code.",
            ["outcome", "error_class", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "dripline_send_latency_seconds",
            "Cloud API round trip of successful sends.",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.lag = Histogram(
            "dripline_schedule_lag_seconds",
            "Send start minus the time the message was due.",
            buckets=LAG_BUCKETS_S,
            registry=registry,
        )
        self.in_flight = Gauge(
            "dripline_in_flight", "Sends whose HTTP call is under way.", registry=registry
        )
        self.concurrency = Gauge(
            "dripline_concurrency_limit",
            "Most sends this worker allows in flight now (adaptive policies move it).",
            registry=registry,
        )
        self.rate = Gauge(
            "dripline_rate_limit_per_second",
            "This worker's current send rate limit (its share of the global rate).",
            registry=registry,
        )
        self.throttles = Counter(
            "dripline_throttle_events_total",
            "Rate-limit errors from the Cloud API, by class (throttle, pair_throttle, "
            "quality_throttle).",
            ["error_class"],
            registry=registry,
        )
        self.retries = Counter(
            "dripline_retries_total", "Failed sends scheduled to be retried.", registry=registry
        )
        self.claimed = Counter(
            "dripline_claimed_total", "Conversations claimed for sending.", registry=registry
        )
        self.claim_duration = Histogram(
            "dripline_claim_duration_seconds",
            "Duration of one claim query (lease a batch of due conversations).",
            buckets=DB_BUCKETS_S,
            registry=registry,
        )
        self.recorded = Counter(
            "dripline_recorded_total", "Outcomes written back to the database.", registry=registry
        )
        self.record_duration = Histogram(
            "dripline_record_duration_seconds",
            "Duration of one batched result write.",
            buckets=DB_BUCKETS_S,
            registry=registry,
        )
        self.breaker_open = Gauge(
            "dripline_circuit_breaker_open",
            "1 while the circuit breaker has stopped sending (auth or account error).",
            registry=registry,
        )
        self.breaker_trips = Counter(
            "dripline_circuit_breaker_trips_total",
            "Times the circuit breaker opened.",
            registry=registry,
        )
        # Pre-bound children: `labels()` hashes and locks on every call; a dict hit does not.
        self._sent = self.sends.labels("sent", "none", "none")
        self._failures: dict[tuple[str, int | None, str], Callable[[], None]] = {}
        self._throttle_children = {c: self.throttles.labels(c) for c in _THROTTLE_CLASSES}
        self._observe_latency = self.latency.observe
        self._observe_lag = self.lag.observe
        self._set_in_flight = self.in_flight.set
        # Zero series exist from the start, so rate() and alerts see them before any event.
        self._failure_child("transient", None, "retry")
        self.breaker_open.set(0)

    def _failure_child(self, error_class: str, code: int | None, action: str) -> Callable[[], None]:
        outcome = action if action in OUTCOMES else "other"
        cls = error_class if error_class in _ERROR_CLASSES else "other"
        send_child = self.sends.labels(outcome, cls, code_label(code))
        throttle_child = self._throttle_children.get(cls)
        retry = outcome == "retry"

        def count() -> None:
            send_child.inc()
            if throttle_child is not None:
                throttle_child.inc()
            if retry:
                self.retries.inc()

        # Bounded: the key's parts map onto bounded labels, and unknown codes are rare
        # (an unknown code is a bug report, not a stream), so the cache stays small.
        self._failures[(error_class, code, action)] = count
        return count

    # DispatchObserver --------------------------------------------------------------
    def on_claim(self, claimed: int, duration_s: float) -> None:
        """A claim query leased `claimed` conversations in `duration_s`."""
        self.claimed.inc(claimed)
        self.claim_duration.observe(duration_s)

    def on_record(self, written: int, duration_s: float) -> None:
        """A result batch of `written` outcomes was written in `duration_s`."""
        self.recorded.inc(written)
        self.record_duration.observe(duration_s)

    def on_sent(self, latency_s: float, lag_s: float) -> None:
        """One successful send: its HTTP latency and its schedule lag."""
        self._sent.inc()
        self._observe_latency(latency_s)
        self._observe_lag(lag_s if lag_s > 0.0 else 0.0)

    def on_failure(self, error_class: str, code: int | None, action: str) -> None:
        """One failed send, its class and code, and the dispatcher's reaction."""
        count = self._failures.get((error_class, code, action))
        if count is None:
            count = self._failure_child(error_class, code, action)
        count()

    def on_in_flight(self, in_flight: int) -> None:
        """Sends currently under way."""
        self._set_in_flight(in_flight)

    def on_limits(self, concurrency: int, rate_per_s: float) -> None:
        """The current concurrency limit and rate (they change with policy and workers)."""
        self.concurrency.set(concurrency)
        self.rate.set(rate_per_s)

    def on_breaker(self, is_open: bool, reason: str | None) -> None:
        """The breaker opened or closed; the reason is logged by the engine, not a label."""
        if is_open:
            self.breaker_trips.inc()
        self.breaker_open.set(1 if is_open else 0)


if TYPE_CHECKING:
    # mypy proves here that the observer satisfies the engine's protocol.
    _observer: type[DispatchObserver] = PrometheusObserver


class BacklogCollector(Collector):
    """Backlog gauges from the database, cached so a scrape never runs a query.

    Counting on a large table is not something to do on every scrape by every Prometheus
    replica. The counts refresh on a timer (`running()`) or on demand
    (`refresh_if_stale()`, for an async server), and a scrape reads the last values. The
    backlog comes from the partial due index (cheap); conversations by state scan the
    state index, so they refresh only every `states_every_s`. Pool usage is read live:
    it costs no query.
    """

    def __init__(
        self,
        store: Store,
        registry: CollectorRegistry | None = None,
        *,
        refresh_s: float = 5.0,
        states_every_s: float = 30.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.states_every_s = states_every_s
        self._clock = clock
        self._backlog: BacklogSnapshot | None = None
        self._states: dict[str, int] | None = None
        self._refreshed_mono = float("-inf")
        self._states_mono = float("-inf")
        self._refreshed_unix = 0.0
        self._errors = 0
        self._lock = asyncio.Lock()
        if registry is not None:
            registry.register(self)

    @property
    def backlog(self) -> BacklogSnapshot | None:
        """The last backlog read, or None before the first successful refresh."""
        return self._backlog

    async def refresh(self) -> BacklogSnapshot | None:
        """Read the counts now. A database error is counted and the old values kept,
        so one failed refresh does not blank the gauges."""
        async with self._lock:
            try:
                backlog = await self.store.backlog_snapshot(self._clock())
                if time.monotonic() - self._states_mono >= self.states_every_s:
                    self._states = await self.store.conversations_by_state()
                    self._states_mono = time.monotonic()
            except DriplineError:
                self._errors += 1
                # Back off like a success would: a down database is not hit per scrape.
                self._refreshed_mono = time.monotonic()
                return self._backlog
            self._backlog = backlog
            self._refreshed_mono = time.monotonic()
            self._refreshed_unix = time.time()
            return backlog

    async def refresh_if_stale(self) -> BacklogSnapshot | None:
        """Refresh when the last read is older than `refresh_s` (one query at a time)."""
        if time.monotonic() - self._refreshed_mono < self.refresh_s:
            return self._backlog
        if self._lock.locked():
            return self._backlog  # a refresh is running: serve the cached values
        return await self.refresh()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[BacklogCollector]:
        """Refresh every `refresh_s` in a background task until the block exits."""

        async def loop() -> None:
            while True:
                await self.refresh()
                await asyncio.sleep(self.refresh_s)

        task = asyncio.get_running_loop().create_task(loop(), name="dripline-backlog-metrics")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def describe(self) -> Iterable[Metric]:
        """No description: the families depend on what has been read."""
        return []

    def collect(self) -> Iterable[Metric]:
        """The cached backlog gauges, the pool gauges, and refresh bookkeeping."""
        backlog = self._backlog
        if backlog is not None:
            for name, help_, value in (
                ("dripline_backlog_due_now", "Active conversations due now, unleased.",
                 backlog.due_now),
                ("dripline_backlog_overdue", "Due more than 60 s ago and still unsent.",
                 backlog.overdue_1m),
                ("dripline_backlog_due_next_hour", "Scheduled within the next hour.",
                 backlog.due_next_hour),
                ("dripline_backlog_leased", "Claimed by a worker and not yet recorded.",
                 backlog.leased),
            ):  # fmt: skip
                yield GaugeMetricFamily(name, help_, value=value)
            yield GaugeMetricFamily(
                "dripline_backlog_refreshed_timestamp_seconds",
                "When the backlog gauges were last read from the database (Unix time).",
                value=self._refreshed_unix,
            )
        if self._states is not None:
            states = GaugeMetricFamily(
                "dripline_conversations", "Conversations by state.", labels=["state"]
            )
            for state, n in self._states.items():
                states.add_metric([state], n)
            yield states
        yield CounterMetricFamily(
            "dripline_backlog_refresh_errors",
            "Backlog reads that failed (the gauges keep their last values).",
            value=self._errors,
        )
        pool = self.store.pool_usage()
        if pool is not None:
            yield GaugeMetricFamily(
                "dripline_db_pool_in_use",
                "Database connections checked out of this process's pool.",
                value=pool.in_use,
            )
            yield GaugeMetricFamily(
                "dripline_db_pool_size", "Connections the pool may hold.", value=pool.size
            )


def start_metrics_server(
    port: int,
    registry: CollectorRegistry,
    addr: str = "0.0.0.0",
    *,
    routes: Mapping[str, WsgiApp] | None = None,
) -> WSGIServer:
    """Serve `registry` at http://addr:port/metrics from a daemon thread.

    Used by `dripline run --metrics-port`. A thread, not the event loop: a scrape must
    answer even while the loop is busy sending. Returns the server: `shutdown()` then
    `server_close()` stop it (the thread also dies with the process). Port 0 picks a
    free port (`server.server_port`).
    """
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=addr, registry=registry)
    metrics_app = server.get_app()
    if routes and metrics_app is not None:
        # /healthz and /readyz (server/worker_http.py); every other path stays metrics.
        server.set_app(with_routes(metrics_app, routes))
    return server


@dataclass(frozen=True)
class MetricsExporter:
    """What `metrics_exporter` runs: hand `observer` to the dispatcher."""

    observer: PrometheusObserver
    registry: CollectorRegistry
    backlog: BacklogCollector
    server: WSGIServer

    @property
    def port(self) -> int:
        """The port the metrics server listens on (useful when asked for port 0)."""
        return int(self.server.server_port)


@contextlib.asynccontextmanager
async def metrics_exporter(
    settings: Settings,
    port: int,
    *,
    addr: str = "0.0.0.0",
    store: Store | None = None,
    refresh_s: float = 5.0,
    routes: Mapping[str, WsgiApp] | None = None,
) -> AsyncIterator[MetricsExporter]:
    """Everything `dripline run --metrics-port` needs, in one block:

        async with metrics_exporter(settings, port) as exporter:
            summary = await run_dispatcher(settings, observer=exporter.observer)

    A fresh registry (with process metrics), the observer to hand to the dispatcher,
    backlog gauges refreshed every `refresh_s`, and the HTTP server. The backlog reads
    use `store` when given (pass the dispatcher's, so `dripline_db_pool_in_use` shows
    its pool), else a one-connection store of their own, closed on exit.
    """
    from dripline.store import open_store

    registry = new_registry()
    observer = PrometheusObserver(registry)
    own = store is None
    backlog_store = store or await open_store(
        settings.database_url, pool_size=1, pooler=settings.db_pooler
    )
    try:
        collector = BacklogCollector(backlog_store, registry, refresh_s=refresh_s)
        server = start_metrics_server(port, registry, addr, routes=routes)
        try:
            async with collector.running():
                yield MetricsExporter(observer, registry, collector, server)
        finally:
            server.shutdown()
            server.server_close()
    finally:
        if own:
            await backlog_store.close()


async def gather_status(
    store: Store,
    now: datetime | None = None,
    *,
    live_after_s: float = 10.0,
    lag_window_s: float = 300.0,
    error_window_s: float = 900.0,
    windows_s: tuple[int, ...] = THROUGHPUT_WINDOWS_S,
) -> dict[str, Any]:
    """The operator's one-screen status as plain data (`dripline status --json` and the
    dashboard): backlog, conversations by state, throughput per window, lag and latency
    percentiles, errors by code and by class, and the live workers.

    Everything comes from the database, so it describes every worker, wherever it runs.
    """
    now = now or datetime.now(UTC)
    backlog = await store.backlog_snapshot(now)
    states = await store.conversations_by_state()
    sent = await store.sent_counts(now, windows_s)
    lag = await store.lag_summary(now, window_s=lag_window_s)
    errors = await store.error_counts(now, window_s=error_window_s)
    live = await store.live_workers(now, live_after_s=live_after_s)
    return status_document(
        now=now,
        backlog=backlog,
        states=states,
        sent=sent,
        lag=lag,
        errors=errors,
        workers=live,
        lag_window_s=lag_window_s,
        error_window_s=error_window_s,
        live_after_s=live_after_s,
    )


def window_name(seconds: int) -> str:
    """60 -> '1m', 300 -> '5m', 45 -> '45s'."""
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


def error_rows(errors: Iterable[ErrorCount]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Errors by code (with class and meaning from the error table) and totals by class."""
    rows: list[dict[str, Any]] = []
    by_class: dict[str, int] = {}
    for e in errors:
        info = describe(e.code) if e.code is not None else None
        cls = info.error_class.value if info else ErrorClass.TRANSIENT.value
        rows.append(
            {
                "code": e.code,
                "status": e.status,
                "count": e.count,
                "error_class": cls,
                # The table's wording, never the stored title: an API message may quote
                # the recipient.
                "meaning": info.meaning if info else "transport error (no response)",
            }
        )
        by_class[cls] = by_class.get(cls, 0) + e.count
    return rows, dict(sorted(by_class.items(), key=lambda kv: -kv[1]))


def status_document(
    *,
    now: datetime,
    backlog: BacklogSnapshot,
    states: Mapping[str, int],
    sent: Mapping[int, int],
    lag: LagSummary,
    errors: Iterable[ErrorCount],
    workers: Iterable[WorkerInfo],
    lag_window_s: float,
    error_window_s: float,
    live_after_s: float,
) -> dict[str, Any]:
    """Assemble the status document from query results (see `gather_status`)."""
    error_list, by_class = error_rows(errors)
    worker_list = [w.to_dict() for w in workers]
    return {
        "now": now.isoformat(),
        "backlog": {
            "due_now": backlog.due_now,
            "overdue_1m": backlog.overdue_1m,
            "due_next_hour": backlog.due_next_hour,
            "leased": backlog.leased,
        },
        "conversations": dict(states),
        "throughput": {
            window_name(w): {"window_s": w, "sent": n, "per_s": round(n / w, 3)}
            for w, n in sent.items()
        },
        "lag": {"window_s": lag_window_s, **asdict(lag)},
        "errors": {
            "window_s": error_window_s,
            "total": sum(e["count"] for e in error_list),
            "by_class": by_class,
            "by_code": error_list,
        },
        "workers": {
            "live_after_s": live_after_s,
            "count": len(worker_list),
            "rate_per_s": round(sum(w["rate_per_s"] for w in worker_list), 3),
            "list": worker_list,
        },
    }
