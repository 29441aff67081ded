"""The seed tuning guide's tables, recomputed.

The guide ("Batch Processing & Concurrency Tuning Guide") states times for a cron job
that every 5 minutes fetches up to `batch` due rows and sends them `concurrency` at a
time, each send taking ~2.5 s, the query ~100 ms. Its arithmetic divides messages by
concurrency, which is right for one run, but several cells ignore the batch limit (30
messages with batch 20 need two runs, 5 minutes apart) or the concurrency (4-5
messages at 3 concurrent are two waves). Here every cell is simulated and compared.

A computed cell matches the stated one when it is within max(0.2 s, 5%): the guide's
values are approximate ("~15s"), and computed times include the 100 ms query the guide
rounds away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dripline.planner.model import Arrivals, LatencyModel, PlanSettings, SimResult
from dripline.planner.simulate import simulate
from dripline.settings import Policy

__all__ = [
    "GUIDE_LATENCY_S",
    "GUIDE_QUERY_S",
    "SEED_COLUMNS",
    "SEED_ROWS",
    "Cell",
    "SeedTable",
    "comparison_table",
    "summary_table",
    "wave_vs_plimit",
]

GUIDE_LATENCY_S = 2.5
GUIDE_QUERY_S = 0.1

# (column label, message counts it covers)
SEED_COLUMNS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("0 msgs", (0,)),
    ("1-5 msgs", (1, 2, 3, 4, 5)),
    ("30 msgs", (30,)),
    ("50 msgs", (50,)),
)
# The guide's "Performance Comparison Table": (batch, concurrency) -> stated seconds.
SEED_ROWS: tuple[tuple[int, int, tuple[float, float, float, float]], ...] = (
    (20, 3, (0.1, 2.5, 25.0, 42.0)),
    (30, 3, (0.1, 2.5, 25.0, 42.0)),
    (30, 5, (0.1, 2.5, 15.0, 25.0)),
    (30, 10, (0.1, 2.5, 7.5, 12.5)),
    (50, 5, (0.1, 2.5, 25.0, 25.0)),
    (50, 10, (0.1, 2.5, 12.5, 12.5)),
)
# The guide's "Summary Table: 30/5 Configuration": messages -> (time, batches, notes).
SUMMARY_ROWS: tuple[tuple[int, float, int, str], ...] = (
    (0, 0.1, 0, "Query only, no processing"),
    (1, 2.5, 1, "Single message"),
    (2, 2.5, 1, "Both parallel"),
    (3, 2.5, 1, "All parallel"),
    (4, 2.5, 1, "All parallel"),
    (5, 2.5, 1, "All parallel, max concurrency"),
    (10, 5.0, 2, "2 batches"),
    (20, 10.0, 4, "4 batches"),
    (30, 15.0, 6, "6 batches, max batch"),
    (50, 25.0, 10, "2 runs (30 + 20)"),
)


def matches(stated_s: float, computed_s: float) -> bool:
    """Whether a computed time agrees with the guide's approximate one."""
    return abs(computed_s - stated_s) <= max(0.2, 0.05 * stated_s)


@dataclass(frozen=True, slots=True)
class Cell:
    """One table cell: the guide's value, the simulated range over the column's message
    counts, and how many runs (cron) or claim cycles (continuous) the worst one took."""

    stated_s: float | None
    low_s: float
    high_s: float
    runs: int
    differs: bool

    def text(self, unit: str = "runs") -> str:
        """E.g. `15.1 s`, `2.6 s-5.1 s` for a range, `310.1 s (2 runs)`."""
        low, high = _fmt(self.low_s), _fmt(self.high_s)
        body = low if low == high else f"{low}-{high}"
        if self.runs > 1:
            body += f" ({self.runs} {unit})"
        return body

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "stated_s": self.stated_s,
            "computed_s": self.high_s,
            "computed_min_s": self.low_s,
            "runs": self.runs,
            "differs": self.differs,
        }


@dataclass(frozen=True, slots=True)
class SeedTable:
    """Rows of (batch, concurrency, cells in SEED_COLUMNS order) for one policy."""

    title: str
    policy: str
    # What one fetch is called: a cron "run", or a continuous "claim" (pipelined).
    unit: str
    rows: tuple[tuple[int, int, tuple[Cell, ...]], ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "title": self.title,
            "policy": self.policy,
            "unit": self.unit,
            "columns": [label for label, _ in SEED_COLUMNS],
            "rows": [
                {
                    "batch": b,
                    "concurrency": c,
                    "cells": {
                        label: cell.to_dict()
                        for (label, _), cell in zip(SEED_COLUMNS, cells, strict=True)
                    },
                }
                for b, c, cells in self.rows
            ],
        }


def _settings(policy: Policy, batch: int, concurrency: int, rate: float | None) -> PlanSettings:
    return PlanSettings(
        policy=policy,
        batch_limit=batch,
        concurrency=concurrency,
        rate_per_s=rate,
        query_s=GUIDE_QUERY_S,
        # Same database as the seed: a claim costs the same 100 ms as its query.
        claim_overhead_s=GUIDE_QUERY_S,
    )


def _cell(
    settings: PlanSettings, latency: LatencyModel, counts: tuple[int, ...], stated: float | None
) -> Cell:
    results = [simulate(settings, latency, Arrivals.backlog(n)) for n in counts]
    low = min(r.drain_s for r in results)
    high = max(r.drain_s for r in results)
    runs = max(r.runs for r in results)
    differs = stated is not None and not (matches(stated, low) and matches(stated, high))
    return Cell(stated, low, high, runs, differs)


def comparison_table(
    *,
    continuous: bool = False,
    latency: LatencyModel | None = None,
    rate_per_s: float = 80.0,
) -> SeedTable:
    """The guide's "Performance Comparison Table", simulated.

    `continuous=False`: the seed's cron design (the guide's own model), compared cell
    by cell with the guide. `continuous=True`: dripline's continuous dispatcher with the
    same batch and concurrency and the API's rate limit; the guide's values are kept
    beside it for reference but a difference there is not an error of the guide.
    """
    latency = latency or LatencyModel.constant(GUIDE_LATENCY_S)
    policy = Policy.STATIC if continuous else Policy.SEED_CRON
    rows = []
    for batch, conc, stated in SEED_ROWS:
        st = _settings(policy, batch, conc, rate_per_s)
        cells = tuple(
            _cell(st, latency, counts, None if continuous else s)
            for (_, counts), s in zip(SEED_COLUMNS, stated, strict=True)
        )
        rows.append((batch, conc, cells))
    title = (
        f"continuous dispatcher (static, same batch/concurrency, {rate_per_s:g}/s)"
        if continuous
        else "seed cron (every 300 s), computed vs the guide"
    )
    return SeedTable(title, policy.value, "claims" if continuous else "runs", tuple(rows))


@dataclass(frozen=True, slots=True)
class SummaryRow:
    """One row of the guide's 30/5 summary table, recomputed."""

    messages: int
    stated_s: float
    stated_batches: int
    note: str
    result: SimResult
    continuous_s: float

    @property
    def differs(self) -> bool:
        """Whether the guide's time is wrong for the seed's cron design."""
        return not matches(self.stated_s, self.result.drain_s)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "messages": self.messages,
            "stated_s": self.stated_s,
            "stated_batches": self.stated_batches,
            "computed_s": self.result.drain_s,
            "waves": self.result.waves,
            "runs": self.result.runs,
            "differs": self.differs,
            "continuous_s": self.continuous_s,
            "note": self.note,
        }


def summary_table(rate_per_s: float = 80.0) -> tuple[SummaryRow, ...]:
    """The guide's "Summary Table: 30/5 Configuration", simulated (cron and continuous)."""
    latency = LatencyModel.constant(GUIDE_LATENCY_S)
    cron = _settings(Policy.SEED_CRON, 30, 5, rate_per_s)
    cont = _settings(Policy.STATIC, 30, 5, rate_per_s)
    return tuple(
        SummaryRow(
            n,
            stated,
            batches,
            note,
            simulate(cron, latency, Arrivals.backlog(n)),
            simulate(cont, latency, Arrivals.backlog(n)).drain_s,
        )
        for n, stated, batches, note in SUMMARY_ROWS
    )


def wave_vs_plimit(
    messages: int = 30,
    batch: int = 30,
    concurrency: int = 5,
    latency: LatencyModel | None = None,
    seeds: int = 200,
) -> dict[str, float]:
    """Mean run time of one cron run under pLimit and under the guide's "waves".

    With constant latency they agree; with variable latency a wave waits for its
    slowest send, while pLimit starts the next send as soon as any slot frees.
    """
    latency = latency or LatencyModel.lognormal(GUIDE_LATENCY_S, 4 * GUIDE_LATENCY_S)
    base = _settings(Policy.SEED_CRON, batch, concurrency, None)
    waves = PlanSettings(**{**_as_kwargs(base), "waves": True})
    arrivals = Arrivals.backlog(messages)
    plimit_s = sum(simulate(base, latency, arrivals, seed=s).drain_s for s in range(seeds))
    waves_s = sum(simulate(waves, latency, arrivals, seed=s).drain_s for s in range(seeds))
    return {
        "messages": messages,
        "batch": batch,
        "concurrency": concurrency,
        "latency_mean_s": latency.mean_s,
        "latency_p99_s": latency.p99_s,
        "plimit_mean_s": plimit_s / seeds,
        "waves_mean_s": waves_s / seeds,
    }


def _as_kwargs(settings: PlanSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}


def _fmt(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 3600:
        return f"{seconds:.1f} s"
    return f"{seconds / 3600:.1f} h"
