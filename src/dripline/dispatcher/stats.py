"""What the dispatcher reports while it runs: an observer protocol and an in-memory tally.

The engine calls the observer; the live progress display, the run summary and the
Prometheus metrics are observers. Calls happen on the hot path, so they must be cheap.
"""

from __future__ import annotations

import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["ALERTS_KEPT", "DispatchObserver", "DispatchStats", "FanOut", "Reservoir", "percentile"]

ALERTS_KEPT = 5


class DispatchObserver(Protocol):
    def on_claim(self, claimed: int, duration_s: float) -> None: ...
    def on_record(self, written: int, duration_s: float) -> None: ...
    def on_sent(self, latency_s: float, lag_s: float) -> None: ...
    def on_failure(self, error_class: str, code: int | None, action: str) -> None: ...
    def on_in_flight(self, in_flight: int) -> None: ...
    def on_limits(self, concurrency: int, rate_per_s: float) -> None: ...
    def on_breaker(self, is_open: bool, reason: str | None) -> None: ...
    def on_alert(self, kind: str, code: int | None, reason: str) -> None: ...
    def on_tier(self, level: str | None, rate_per_s: float, source: str) -> None: ...


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-quantile (0..1) of already sorted values by nearest rank; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[rank]


@dataclass(slots=True)
class Reservoir:
    """A fixed-size uniform sample of a stream (Vitter's algorithm R): memory stays flat
    however long the dispatcher runs, and percentiles stay unbiased."""

    size: int = 50_000
    values: list[float] = field(default_factory=list)
    seen: int = 0
    maximum: float = 0.0
    _rng: random.Random = field(default_factory=lambda: random.Random(7))

    def add(self, value: float) -> None:
        self.seen += 1
        self.maximum = max(self.maximum, value)
        if len(self.values) < self.size:
            self.values.append(value)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.size:
            self.values[slot] = value

    def quantiles(self, *qs: float) -> list[float]:
        ordered = sorted(self.values)
        return [percentile(ordered, q) for q in qs]


@dataclass
class DispatchStats:
    """Counters for the progress display and the end-of-run summary."""

    claimed: int = 0
    claims: int = 0
    sent: int = 0
    failed: int = 0
    retries: int = 0
    throttled: int = 0
    unknown: int = 0
    fallbacks: int = 0
    in_flight: int = 0
    concurrency: int = 0
    rate_per_s: float = 0.0
    breaker_open: bool = False
    breaker_reason: str | None = None
    # The latest sender alerts (alerts.py), newest last, for the heartbeat and status.
    alerts: deque[dict[str, object]] = field(default_factory=lambda: deque(maxlen=ALERTS_KEPT))
    tier_level: str | None = None  # the throughput level Meta last reported
    failures_by_class: Counter[str] = field(default_factory=Counter)
    failures_by_code: Counter[str] = field(default_factory=Counter)
    lag: Reservoir = field(default_factory=Reservoir)
    latency: Reservoir = field(default_factory=Reservoir)
    claim_s: float = 0.0
    record_s: float = 0.0
    # How well the pipeline kept the slots busy (issue 14), in loop time: calls under
    # way integrated over time, from the first call's start to the last one's end; the
    # launcher's waits for a claim already under way while calls were (the pipeline ran
    # dry); and the wait to join live workers at start (share.py).
    slot_s: float = 0.0
    calls_from: float | None = None
    calls_to: float = 0.0
    calls: int = 0
    awake_since: float = float("inf")  # the claimer's last wake from an idle sleep
    dry_s: float = 0.0
    dry: int = 0
    join_wait_s: float = 0.0

    def on_claim(self, claimed: int, duration_s: float) -> None:
        self.claims += 1
        self.claimed += claimed
        self.claim_s += duration_s

    def on_record(self, written: int, duration_s: float) -> None:
        self.record_s += duration_s

    def on_calls(self, calls: int, now: float) -> None:
        """Calls under way changed to `calls` at loop time `now`."""
        if self.calls_from is None:
            self.calls_from = now
        else:
            self.slot_s += self.calls * (now - self.calls_to)
        self.calls = calls
        self.calls_to = now

    def on_dry(self, waited_s: float) -> None:
        self.dry += 1
        self.dry_s += waited_s

    def slots_busy(self, concurrency: int) -> float | None:
        """Share of `concurrency` slots busy from the first call to the last one's end."""
        span = 0.0 if self.calls_from is None else self.calls_to - self.calls_from
        if span <= 0 or concurrency <= 0:
            return None
        return self.slot_s / (concurrency * span)

    def on_sent(self, latency_s: float, lag_s: float) -> None:
        self.sent += 1
        self.latency.add(latency_s)
        self.lag.add(lag_s)

    def on_failure(self, error_class: str, code: int | None, action: str) -> None:
        self.failures_by_class[error_class] += 1
        self.failures_by_code[str(code) if code is not None else "none"] += 1
        if error_class == "throttle":
            self.throttled += 1
        if action == "retry":
            self.retries += 1
        elif action == "fail":
            self.failed += 1
        elif action == "unknown":
            self.unknown += 1
        elif action == "fallback":
            self.fallbacks += 1

    def on_in_flight(self, in_flight: int) -> None:
        self.in_flight = in_flight

    def on_limits(self, concurrency: int, rate_per_s: float) -> None:
        self.concurrency = concurrency
        self.rate_per_s = rate_per_s

    def on_breaker(self, is_open: bool, reason: str | None) -> None:
        self.breaker_open = is_open
        self.breaker_reason = reason

    def on_alert(self, kind: str, code: int | None, reason: str) -> None:
        self.alerts.append({"at": time.time(), "kind": kind, "code": code, "reason": reason})

    def on_tier(self, level: str | None, rate_per_s: float, source: str) -> None:
        self.tier_level = level


class FanOut:
    """Several observers as one."""

    def __init__(self, *observers: DispatchObserver) -> None:
        self._observers = observers

    def on_claim(self, claimed: int, duration_s: float) -> None:
        for o in self._observers:
            o.on_claim(claimed, duration_s)

    def on_record(self, written: int, duration_s: float) -> None:
        for o in self._observers:
            o.on_record(written, duration_s)

    def on_sent(self, latency_s: float, lag_s: float) -> None:
        for o in self._observers:
            o.on_sent(latency_s, lag_s)

    def on_failure(self, error_class: str, code: int | None, action: str) -> None:
        for o in self._observers:
            o.on_failure(error_class, code, action)

    def on_in_flight(self, in_flight: int) -> None:
        for o in self._observers:
            o.on_in_flight(in_flight)

    def on_limits(self, concurrency: int, rate_per_s: float) -> None:
        for o in self._observers:
            o.on_limits(concurrency, rate_per_s)

    def on_breaker(self, is_open: bool, reason: str | None) -> None:
        for o in self._observers:
            o.on_breaker(is_open, reason)

    def on_alert(self, kind: str, code: int | None, reason: str) -> None:
        for o in self._observers:
            o.on_alert(kind, code, reason)

    def on_tier(self, level: str | None, rate_per_s: float, source: str) -> None:
        for o in self._observers:
            o.on_tier(level, rate_per_s, source)
