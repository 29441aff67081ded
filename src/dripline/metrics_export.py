"""Prometheus export: backlog gauges from the database and the HTTP server.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dripline.errors import DriplineError
from dripline.metrics import PrometheusObserver, code_label, new_registry
from dripline.metrics_senders import SenderCollector
from dripline.server.worker_http import WsgiApp, with_routes
from dripline.settings import Settings
from dripline.store import BacklogSnapshot, Store, WebhookErrorCount

__all__ = ["BacklogCollector", "MetricsExporter", "metrics_exporter", "start_metrics_server"]


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
        self._webhook_errors: dict[str, int] | None = None
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
                    self._webhook_errors = _by_code_label(await self.store.webhook_errors())
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
        if self._webhook_errors is not None:
            errors = CounterMetricFamily(
                "dripline_webhook_errors",
                "Value-level webhook errors (value.errors[]: about the number or account, "
                "no message), by code, from the database (refreshed with the states).",
                labels=["code"],
            )
            for code, n in sorted(self._webhook_errors.items()):
                errors.add_metric([code], n)
            yield errors
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


def _by_code_label(found: Iterable[WebhookErrorCount]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for e in found:
        label = code_label(e.code)
        totals[label] = totals.get(label, 0) + e.count
    return totals


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
    # Per sender number: set `senders.source` to the dispatcher's `senders_snapshot`.
    senders: SenderCollector

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
    senders = SenderCollector()
    registry.register(senders)
    own = store is None
    backlog_store = store or await open_store(
        settings.database_url, pool_size=1, pooler=settings.db_pooler
    )
    try:
        collector = BacklogCollector(backlog_store, registry, refresh_s=refresh_s)
        server = start_metrics_server(port, registry, addr, routes=routes)
        try:
            async with collector.running():
                yield MetricsExporter(observer, registry, collector, server, senders)
        finally:
            server.shutdown()
            server.server_close()
    finally:
        if own:
            await backlog_store.close()
