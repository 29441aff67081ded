"""From the fake's record to a report row: throughput, lag, duplicates, missing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

FIELDS = (
    "messages",
    "wall_s",
    "throughput_per_s",
    "bound_per_s",
    "ratio_to_bound",
    "lag_p50_ms",
    "lag_p95_ms",
    "lag_p99_ms",
    "lag_max_ms",
    "throttled_130429",
    "attempts",
    "duplicates",
    "missing",
    "cpu_ms_per_msg",
    "peak_rss_mb",
    "db_connections",
)


def pct(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of sorted values (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[rank]


@dataclass
class Row:
    """One line of the results table. None: not measured for this run."""

    scenario: str
    run: str
    system: str  # dripline, seed-cron, procrastinate, planner
    backend: str
    messages: int = 0
    wall_s: float | None = None
    throughput_per_s: float | None = None
    bound_per_s: float | None = None
    ratio_to_bound: float | None = None
    lag_p50_ms: float | None = None
    lag_p95_ms: float | None = None
    lag_p99_ms: float | None = None
    lag_max_ms: float | None = None
    throttled_130429: int | None = None
    attempts: int | None = None
    duplicates: int | None = None
    missing: int | None = None
    cpu_ms_per_msg: float | None = None
    cpu_ms_per_msg_net: float | None = None
    pg_cpu_ms_per_msg: float | None = None
    peak_rss_mb: float | None = None
    db_connections: int | str | None = None
    measured: bool = True  # False: a simulation (planner), not a run
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def bound(rate_per_s: float | None, concurrency: int, mean_latency_s: float) -> float:
    """min(rate limit, concurrency / mean latency): what any sender could reach."""
    by_latency = concurrency / mean_latency_s
    return by_latency if rate_per_s is None else min(rate_per_s, by_latency)


def from_record(
    row: Row,
    received: Sequence[Mapping[str, Any]],
    due_by_to: Mapping[str, float],
    stats: Mapping[str, Any],
    *,
    bound_per_s: float,
) -> Row:
    """Fill counts, throughput and lag from the fake's accepted messages.

    `due_by_to`: the expected recipients (digits, as the fake reports them) and each
    one's due time (epoch seconds). Lag = arrival at the fake (before its simulated
    latency) minus due time. Throughput = distinct recipients / (last first arrival -
    first); later steps of the flow to the same recipients are counted apart
    (`extra["later_steps"]`), never as duplicates.
    """
    # A duplicate is the same message twice: the same recipient and the same text or
    # template. A later step of the flow to the same recipient is not one (the demo
    # flow's second step falls due 10 minutes after the first, inside a long drain).
    counts = Counter((str(m["to"]), str(m.get("body"))) for m in received)
    ours = [m for m in received if str(m["to"]) in due_by_to]
    first_by_to: dict[str, float] = {}
    for m in ours:
        t = float(m.get("arrived_wall") or m["received_wall"])
        to = str(m["to"])
        if to not in first_by_to or t < first_by_to[to]:
            first_by_to[to] = t
    row.messages = len(first_by_to)
    row.duplicates = sum(n - 1 for n in counts.values() if n > 1)
    later_steps = len(counts) - len({to for to, _ in counts})
    if later_steps:
        row.extra["later_steps"] = later_steps
    row.missing = len(due_by_to) - len(first_by_to)
    row.throttled_130429 = int(stats.get("throttled", 0))
    row.attempts = int(stats.get("requests", 0))
    lags = sorted((t - due_by_to[to]) * 1000.0 for to, t in first_by_to.items())
    if lags:
        row.lag_p50_ms = round(pct(lags, 0.50), 1)
        row.lag_p95_ms = round(pct(lags, 0.95), 1)
        row.lag_p99_ms = round(pct(lags, 0.99), 1)
        row.lag_max_ms = round(lags[-1], 1)
    times = sorted(first_by_to.values())
    if len(times) > 1:
        window = times[-1] - times[0]
        row.wall_s = round(window, 3)
        row.throughput_per_s = round((len(times) - 1) / window, 1) if window > 0 else None
    row.bound_per_s = round(bound_per_s, 1)
    if row.throughput_per_s is not None:
        row.ratio_to_bound = round(row.throughput_per_s / bound_per_s, 3)
    return row
