"""The operator's status document: `dripline status` (text and `--json`) and the
dashboard read it. Plain data from the store's queries; everything comes from the
database, so it describes every worker, wherever it runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from dripline.store import (
    THROUGHPUT_WINDOWS_S,
    BacklogSnapshot,
    ErrorCount,
    LagSummary,
    Store,
    WebhookErrorCount,
    WorkerInfo,
)
from dripline.whatsapp.errors import ErrorClass, describe

__all__ = [
    "STATES_EXACT_UP_TO",
    "alert_rows",
    "error_rows",
    "gather_status",
    "sender_rows",
    "state_counts",
    "status_document",
    "tier_row",
    "webhook_error_rows",
    "window_name",
]


# Up to this many conversations the counts by state are exact. Past it, PostgreSQL's
# statistics answer (estimates, marked as such): an exact count reads every row, 0.5-0.8 s
# of a `dripline status` at 10,000,000 (bench scenario 16) against about 5 ms for the
# statistics. The backlog's counts (due now, overdue, next hour) stay exact at any size:
# they read the partial due index only.
STATES_EXACT_UP_TO = 1_000_000


async def state_counts(
    store: Store, exact_up_to: int = STATES_EXACT_UP_TO
) -> tuple[dict[str, int], bool]:
    """Conversations by state, and whether the counts are estimates."""
    estimate = await store.conversations_by_state_estimate(exact_up_to)
    if estimate is not None:
        return estimate, True
    return await store.conversations_by_state(), False


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
    states, estimated = await state_counts(store)
    sent = await store.sent_counts(now, windows_s)
    lag = await store.lag_summary(now, window_s=lag_window_s)
    errors = await store.error_counts(now, window_s=error_window_s)
    live = await store.live_workers(now, live_after_s=live_after_s)
    webhook_errors = await store.webhook_errors(now - timedelta(seconds=error_window_s))
    return status_document(
        now=now,
        backlog=backlog,
        states=states,
        states_estimated=estimated,
        sent=sent,
        lag=lag,
        errors=errors,
        workers=live,
        webhook_errors=webhook_errors,
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
    states_estimated: bool = False,
    sent: Mapping[int, int],
    lag: LagSummary,
    errors: Iterable[ErrorCount],
    workers: Iterable[WorkerInfo],
    lag_window_s: float,
    webhook_errors: Iterable[WebhookErrorCount] = (),
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
        # True: `conversations` are PostgreSQL's estimates (a table past
        # STATES_EXACT_UP_TO rows), as of its last ANALYZE.
        "conversations_estimated": states_estimated,
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
        "alerts": alert_rows(worker_list),
        "tier": tier_row(worker_list),
        "senders": sender_rows(worker_list),
        "webhook_errors": webhook_error_rows(webhook_errors, error_window_s),
        "workers": {
            "live_after_s": live_after_s,
            "count": len(worker_list),
            "rate_per_s": round(sum(w["rate_per_s"] for w in worker_list), 3),
            "list": worker_list,
        },
    }


def alert_rows(workers: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """What stopped sending, from the live workers' heartbeats: each open breaker's
    reason, and the latest sender alerts (dispatcher/alerts.py) naming their codes."""
    stopped: list[dict[str, Any]] = []
    recent: list[dict[str, Any]] = []
    for w in workers:
        stats = w.get("stats") or {}
        if stats.get("breaker"):
            stopped.append({"worker": w["id"], "reason": str(stats["breaker"])})
        for a in stats.get("alerts") or ():
            if isinstance(a, Mapping):
                recent.append({"worker": w["id"], **a})
    recent.sort(key=lambda a: float(a.get("at") or 0.0), reverse=True)
    return {"breaker_open": stopped, "recent": recent}


def webhook_error_rows(found: Iterable[WebhookErrorCount], window_s: float) -> dict[str, Any]:
    """Value-level webhook errors in the window, by code and number, with the table's
    meaning and Meta's latest details."""
    rows = []
    for e in found:
        info = describe(e.code)
        rows.append(
            {
                "code": e.code,
                "phone_number_id": e.phone_number_id,
                "count": e.count,
                "last_at": e.last_at.isoformat(),
                "error_class": info.error_class.value,
                "meaning": info.meaning,
                "details": e.details,
            }
        )
    return {"window_s": window_s, "total": sum(r["count"] for r in rows), "by_code": rows}


def sender_rows(workers: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each sender number the live workers send from (their heartbeats' `senders`):
    its rate in force (all workers together), the rate they send at now (lower after a
    throttle), and the sends, throttled responses and other errors since each started."""
    rows: dict[str, dict[str, Any]] = {}
    for w in workers:
        senders = (w.get("stats") or {}).get("senders")
        if not isinstance(senders, Mapping):
            continue
        for number, s in senders.items():
            if not isinstance(s, Mapping):
                continue
            row = rows.setdefault(
                str(number),
                {
                    "sender": str(number),
                    "rate_per_s": 0.0,
                    "current_per_s": 0.0,
                    "sent": 0,
                    "throttled": 0,
                    "errors": 0,
                },
            )
            row["rate_per_s"] = max(row["rate_per_s"], float(s.get("rate_per_s") or 0.0))
            row["current_per_s"] = round(
                row["current_per_s"] + float(s.get("current_per_s") or 0.0), 3
            )
            for key in ("sent", "throttled", "errors"):
                row[key] += int(s.get(key) or 0)
    return [rows[k] for k in sorted(rows)]


def tier_row(workers: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The throughput tier the live workers last read (dispatcher/tier.py): its level,
    the global rate per number in force, and where that rate came from (`tier`,
    `operator`: rate_per_s set, `default`: not readable); None before any worker has
    read it."""
    for w in workers:
        tier = (w.get("stats") or {}).get("tier")
        if isinstance(tier, Mapping):
            return {
                "level": tier.get("level"),
                "rate_per_s": tier.get("rate_per_s"),
                "source": tier.get("source"),
            }
    return None
