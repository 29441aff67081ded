"""`dripline status`: is dripline keeping up? One screen, read from the database.

Everything comes from the database, so it shows every worker on every machine: backlog,
throughput over 1/5/15 minutes, lag percentiles, errors by code and class, conversations
by state, and the live workers with their share of the rate limit.
"""

from __future__ import annotations

import asyncio
import os
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from dripline.cli.common import console, handle_errors, print_json, settings_from
from dripline.errors import ConfigError

__all__ = ["load_status", "register", "render_status"]


async def load_status(
    database_url: str, *, live_after_s: float, pooler: bool = False
) -> dict[str, Any]:
    """Open the database without migrating it and gather status (nothing is written).

    `pooler`: behind a transaction-mode pooler (settings.db_pooler), as every command
    that opens the store must say, or asyncpg's named statements collide there."""
    from dripline.status_report import gather_status
    from dripline.store import open_store

    store = await open_store(database_url, pool_size=1, pooler=pooler, auto_migrate=False)
    try:
        data = await gather_status(store, live_after_s=live_after_s)
        data["database"] = store.target
        return data
    finally:
        await store.close()


def _require_database(database_url: str) -> None:
    from dripline.store.urls import parse_database_url

    url = parse_database_url(database_url)
    # Opening a missing SQLite file would create an empty database there.
    if url.backend == "sqlite" and url.sqlite_path and not os.path.isfile(url.sqlite_path):
        raise ConfigError(f"no SQLite database at {url.sqlite_path!r}")


def _fmt_s(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _kv(title: str, rows: list[tuple[str, str]], style: str = "cyan") -> Panel:
    table = Table.grid(padding=(0, 1))
    table.add_column(style="dim")
    table.add_column(justify="right", style="bold")
    for key, value in rows:
        table.add_row(key, value)
    return Panel(table, title=title, title_align="left", border_style=style, expand=True)


def render_status(data: dict[str, Any]) -> RenderableType:
    """The status document as one screen of rich panels and tables."""
    backlog = data["backlog"]
    overdue = backlog["overdue_1m"]
    backlog_panel = _kv(
        "backlog",
        [
            ("due now", f"{backlog['due_now']:,}"),
            ("overdue > 1 min", f"[{'red' if overdue else 'green'}]{overdue:,}[/]"),
            ("next hour", f"{backlog['due_next_hour']:,}"),
            ("leased (sending)", f"{backlog['leased']:,}"),
        ],
        "red" if overdue else "cyan",
    )
    workers = data["workers"]
    rate = workers["rate_per_s"]
    tp = Table.grid(padding=(0, 1))
    tp.add_column(style="dim")
    tp.add_column(justify="right", style="bold")
    tp.add_column(justify="right")
    for name, w in data["throughput"].items():
        tp.add_row(name, f"{w['sent']:,}", f"{w['per_s']:.2f}/s")
    tp.add_row("limit", "", f"{rate:.1f}/s" if workers["count"] else "-")
    tier = data.get("tier")
    if tier:
        tp.add_row("tier", str(tier["level"] or "unknown"), _tier_text(tier))
    throughput_panel = Panel(tp, title="sent", title_align="left", border_style="cyan")
    lag = data["lag"]
    lag_panel = _kv(
        f"lag ({lag['samples']:,} in {_fmt_s(lag['window_s'])})",
        [
            ("p50", _fmt_s(lag["p50_s"])),
            ("p90", _fmt_s(lag["p90_s"])),
            ("p99", _fmt_s(lag["p99_s"])),
            ("max", _fmt_s(lag["max_s"])),
            ("API p50", f"{lag['latency_p50_ms']:.0f} ms"),
            ("API p99", f"{lag['latency_p99_ms']:.0f} ms"),
        ],
    )
    estimated = data.get("conversations_estimated", False)
    states_panel = _kv(
        "conversations (estimated)" if estimated else "conversations",
        [
            (state, f"~{n:,}" if estimated else f"{n:,}")
            for state, n in data["conversations"].items()
        ],
    )
    errors = data["errors"]
    err_table = Table(box=None, pad_edge=False)
    for col, justify in (("code", "right"), ("class", "left"), ("status", "left")):
        err_table.add_column(col, justify=justify)  # type: ignore[arg-type]
    err_table.add_column("count", justify="right")
    err_table.add_column("meaning", overflow="ellipsis", no_wrap=True)
    for e in errors["by_code"][:8]:
        err_table.add_row(
            "-" if e["code"] is None else str(e["code"]),
            e["error_class"],
            e["status"],
            f"{e['count']:,}",
            e["meaning"],
        )
    by_class = ", ".join(f"{c} {n:,}" for c, n in errors["by_class"].items()) or "none"
    errors_panel = Panel(
        Group(Text(f"by class: {by_class}"), err_table) if errors["by_code"] else Text("none"),
        title=f"errors (last {_fmt_s(errors['window_s'])}): {errors['total']:,}",
        title_align="left",
        border_style="red" if errors["total"] else "cyan",
    )
    w_table = Table(box=None, pad_edge=False)
    for col in (
        "worker",
        "host",
        "policy",
        "rate/s",
        "concurrency",
        "in flight",
        "sent",
        "heartbeat",
    ):
        w_table.add_column(col, justify="left" if col in ("worker", "host", "policy") else "right")
    for w in workers["list"]:
        stats = w.get("stats") or {}
        w_table.add_row(
            w["id"],
            f"{w['hostname']}:{w['pid']}",
            w["policy"],
            f"{w['rate_per_s']:.1f}",
            str(w["concurrency"]),
            str(stats.get("in_flight", "-")),
            f"{stats.get('sent', 0):,}",
            w["heartbeat_at"][11:19],
        )
    workers_panel = Panel(
        w_table
        if workers["list"]
        else Text(f"no worker heartbeat in the last {_fmt_s(workers['live_after_s'])}"),
        title=f"live workers: {workers['count']}",
        title_align="left",
        border_style="cyan" if workers["count"] else "yellow",
    )
    top = Table.grid(expand=True, padding=(0, 1))
    for _ in range(4):
        top.add_column(ratio=1)
    top.add_row(backlog_panel, throughput_panel, lag_panel, states_panel)
    header = Text.assemble(
        ("dripline status", "bold"), f"  {data.get('database', '')}  {data['now'][:19]}Z"
    )
    parts: list[RenderableType] = [header, top, errors_panel]
    alerts = _alerts_panel(data.get("alerts") or {})
    if alerts is not None:
        parts.append(alerts)
    value_errors = _webhook_errors_panel(data.get("webhook_errors") or {})
    if value_errors is not None:
        parts.append(value_errors)
    senders = _senders_panel(data.get("senders") or [])
    if senders is not None:
        parts.append(senders)
    parts.append(workers_panel)
    return Group(*parts)


def _senders_panel(rows: list[dict[str, Any]]) -> Panel | None:
    """Each sender number: its rate, what it sends at now, sends, throttles, errors."""
    if not rows:
        return None
    table = Table(box=None, pad_edge=False)
    for col in ("number", "rate/s", "now/s", "sent", "throttled", "errors"):
        table.add_column(col, justify="left" if col == "number" else "right")
    for r in rows:
        table.add_row(
            r["sender"],
            f"{r['rate_per_s']:g}",
            f"{r['current_per_s']:.1f}",
            f"{r['sent']:,}",
            f"{r['throttled']:,}",
            f"{r['errors']:,}",
        )
    return Panel(
        table,
        title=f"sender numbers: {len(rows)} (counts since each worker started)",
        title_align="left",
        border_style="red" if any(r["errors"] for r in rows) else "cyan",
    )


def _webhook_errors_panel(errors: dict[str, Any]) -> Panel | None:
    """Value-level webhook errors (about the number or account), or nothing."""
    rows = errors.get("by_code") or []
    if not rows:
        return None
    table = Table(box=None, pad_edge=False)
    for col in ("code", "number", "count", "last", "meaning / details"):
        table.add_column(col, justify="right" if col in ("code", "count") else "left")
    for e in rows[:8]:
        text = e["meaning"] + (f" ({e['details']})" if e.get("details") else "")
        table.add_row(
            str(e["code"]),
            e.get("phone_number_id") or "-",
            f"{e['count']:,}",
            e["last_at"][11:19],
            text,
        )
    return Panel(
        table,
        title=f"webhook errors (last {_fmt_s(errors['window_s'])}): {errors['total']:,}",
        title_align="left",
        border_style="red",
    )


def _tier_text(tier: dict[str, Any]) -> str:
    """`80/s` and where it comes from: the tier, the operator's setting, or the default."""
    rate = f"{float(tier['rate_per_s'] or 0):g}/s"
    return {"operator": f"{rate} (set)", "default": f"{rate} (default)"}.get(
        str(tier["source"]), rate
    )


def _alerts_panel(alerts: dict[str, Any]) -> Panel | None:
    """Why sending stopped (an open breaker) and the latest sender alerts, or nothing."""
    lines: list[str] = [
        f"sending stopped on {b['worker']}: {b['reason']}" for b in alerts.get("breaker_open", ())
    ]
    for a in alerts.get("recent", ())[:5]:
        code = "-" if a.get("code") is None else str(a["code"])
        lines.append(f"{a.get('kind', 'alert')} code {code} ({a['worker']}): {a.get('reason', '')}")
    if not lines:
        return None
    return Panel(Text("\n".join(lines)), title="alerts", title_align="left", border_style="red")


def register(app: typer.Typer) -> None:
    @app.command("status")
    @handle_errors
    def status(
        database_url: Annotated[
            str | None,
            typer.Option("--database-url", help="sqlite:///file.db or postgresql://user@host/db."),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
        live_after: Annotated[
            float,
            typer.Option(
                "--live-after", help="A worker is live if it heartbeat within this many seconds."
            ),
        ] = 10.0,
    ) -> None:
        """Backlog, throughput, lag, errors and live workers, from the database.

        Works from any machine that can reach the database; nothing is written.
        """
        settings = settings_from(database_url=database_url)
        _require_database(settings.database_url)
        data = asyncio.run(
            load_status(settings.database_url, live_after_s=live_after, pooler=settings.db_pooler)
        )
        if as_json:
            print_json(data)
        else:
            console.print(render_status(data))
