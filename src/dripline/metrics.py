"""Prometheus metrics: the dispatcher's observer and the registry.

The backlog gauges and the HTTP exporter are `dripline.metrics_export`; the operator's
status document (`dripline status`, the dashboard) is `dripline.status_report`.

    registry = new_registry()                       # process/GC collectors included
    observer = PrometheusObserver(registry)         # pass to Dispatcher(observer=...)

Names follow Prometheus conventions (`_total` counters, `_seconds` units) and every label
takes a bounded set of values: outcomes and error classes are enums, error codes are the
codes of `dripline.whatsapp.errors.ERROR_TABLE` (anything else is `other`). Phone numbers,
message ids and error texts never become labels. One deliberate exception, rare
because each alert stops the sender: `dripline_alerts_total{code}` names an unknown code.

The observer is on the send path (1,000 sends/s and more), so each label combination is
bound once and cached; a call costs a dict lookup and one or two lock-protected adds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from dripline.dispatcher.stats import DispatchObserver

# Re-exported: the status document lived here before it had a module of its own.
from dripline.status_report import error_rows, gather_status, status_document, window_name
from dripline.whatsapp.errors import ERROR_TABLE, ErrorClass

__all__ = [
    "LAG_BUCKETS_S",
    "LATENCY_BUCKETS_S",
    "OUTCOMES",
    "PrometheusObserver",
    "code_label",
    "error_rows",
    "gather_status",
    "new_registry",
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
        self.alerts = Counter(
            "dripline_alerts_total",
            "Sender alerts that stopped sending: kind (unknown_code: the same code not "
            "in dripline's table many times in a row; sender_limited: Meta limits the "
            "number, 131048/131064) and the code, named even when unknown.",
            ["kind", "code"],
            registry=registry,
        )
        self.tier_rate = Gauge(
            "dripline_throughput_tier_rate_per_second",
            "The global send rate per number in force: the number's throughput tier as "
            "Meta reports it (80 standard, 1,000 high) unless rate_per_s is set.",
            registry=registry,
        )
        self.tier_level = Gauge(
            "dripline_throughput_tier",
            "1 for the throughput level Meta last reported for the number (unknown: not "
            "read or unreadable); source: tier, operator (rate_per_s set) or default.",
            ["level", "source"],
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

    def on_tier(self, level: str | None, rate_per_s: float, source: str) -> None:
        """The throughput tier was read: the rate it gives, and which level it is."""
        self.tier_rate.set(rate_per_s)
        self.tier_level.clear()
        known = level if level in ("STANDARD", "HIGH") else "unknown"
        self.tier_level.labels(known, source).set(1)

    def on_alert(self, kind: str, code: int | None, reason: str) -> None:
        """A sender alert. The code is a label even when unknown: naming it is the
        alert's point, and each one stops sending, so there are few."""
        self.alerts.labels(kind, "none" if code is None else str(code)).inc()


if TYPE_CHECKING:
    # mypy proves here that the observer satisfies the engine's protocol.
    _observer: type[DispatchObserver] = PrometheusObserver
