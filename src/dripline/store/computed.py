"""Answers every backend computes the same way in Python, from rows it read: `enroll`'s
results in input order, `lag_summary`'s percentiles (SQLite has no percentile
function), and state counts estimated from a database's statistics. Shared by the SQL
and in-memory stores (split from `base.py`, the contract).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from dripline.store.types import CONVERSATION_STATES, Enrollment, EnrollResult

if TYPE_CHECKING:
    from dripline.store.report_types import LagSummary

__all__ = ["enroll_results", "state_estimates", "summarize_sends"]


def enroll_results(
    items: Sequence[Enrollment], ids: Mapping[tuple[str, str], int], created: set[tuple[str, str]]
) -> list[EnrollResult]:
    """`enroll`'s answer, in input order: a duplicate (phone, flow) in the input gets the
    first one's id with `created=False`."""
    seen: set[tuple[str, str]] = set()
    results = []
    for item in items:
        key = (item.phone, item.flow)
        results.append(EnrollResult(ids[key], key in created and key not in seen))
        seen.add(key)
    return results


def _nearest_rank(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return 0.0
    rank = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[rank]


def summarize_sends(
    sends: Iterable[tuple[datetime, datetime | None, float | None]],
) -> LagSummary:
    """`lag_summary`'s answer from (sent_at, due_at, latency_ms) of the sampled sends:
    percentiles by nearest rank, computed in Python on every backend (SQLite has no
    percentile function, and the sample is bounded)."""
    from dripline.store.report_types import LagSummary

    rows = list(sends)
    lags = sorted(
        max(0.0, (sent - due).total_seconds()) for sent, due, _ in rows if due is not None
    )
    latencies = sorted(float(lat) for _, _, lat in rows if lat is not None)
    return LagSummary(
        samples=len(lags),
        p50_s=_nearest_rank(lags, 0.5),
        p90_s=_nearest_rank(lags, 0.9),
        p99_s=_nearest_rank(lags, 0.99),
        max_s=lags[-1] if lags else 0.0,
        latency_p50_ms=_nearest_rank(latencies, 0.5),
        latency_p99_ms=_nearest_rank(latencies, 0.99),
    )


def state_estimates(
    rows: float | None,
    values: Sequence[str] | None,
    freqs: Sequence[float] | None,
    min_rows: int,
) -> dict[str, int] | None:
    """Counts per state from a table's estimated row count and each state's share in the
    statistics' sample (PostgreSQL's `reltuples`, `most_common_vals` and
    `most_common_freqs`); None when there are no statistics (never analyzed: `reltuples`
    is -1 from PostgreSQL 14, NULL shares) or the table is estimated under `min_rows`.
    A state the sample never met counts 0."""
    if rows is None or rows < 0 or rows < min_rows or values is None or freqs is None:
        return None
    counts = dict.fromkeys(CONVERSATION_STATES, 0)
    for value, share in zip(values, freqs, strict=False):
        if value in counts:
            counts[value] = round(rows * share)
    return counts
