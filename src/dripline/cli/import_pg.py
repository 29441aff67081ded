"""`dripline import --from-postgres URL --query SQL --flow NAME`: move in from another
scheduler's table (the seed's `freeTrials`), each row at its own step of the flow.

Three phases, nothing written before the last: read every row of the query (one
read-only transaction on the source, a server-side cursor), place each one in the flow
(`dripline.table_import`, pure; one bad row stops everything unless `--skip-invalid`),
then write in batches of `BATCH`, each one transaction. Re-running is safe: a (phone,
flow) dripline already has, in any state, is left alone and counted as existing, so an
interrupted import is finished by running it again. `--dry-run` stops after placing.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from dripline.cli.common import console, err_console, print_json
from dripline.errors import DatabaseUnavailable, InputError
from dripline.flows import load_flows
from dripline.flows.base import Flow
from dripline.settings import Settings
from dripline.store import open_store
from dripline.store.postgres import asyncpg_dsn
from dripline.store.sql import first_line
from dripline.store.urls import parse_database_url, redact_url
from dripline.table_import import Planned, Skipped, check_columns, plan_row

__all__ = ["BATCH", "read_source", "run_table_import"]

BATCH = 1_000
# Without a terminal (a log file, CI), a progress line every this many rows.
LOG_EVERY = 10_000
# The dry run's table shows this many rows; --json shows them all.
SHOWN = 20


def load_query(query: str | None, query_file: Path | None) -> str:
    """The SQL from --query or --query-file (exactly one)."""
    if (query is None) == (query_file is None):
        raise InputError("give the source query with --query or --query-file", where="--query")
    if query_file is not None:
        try:
            query = query_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror}", where=str(query_file)) from None
    assert query is not None
    if not query.strip():
        raise InputError("the query is empty", where="--query")
    return query


async def read_source(
    url: str, query: str, on_row: Callable[[], None] | None = None
) -> list[dict[str, Any]]:
    """Every row of `query` on the PostgreSQL database at `url`, read-only."""
    where = redact_url(url)
    # The same URL rules as dripline's own database (sslmode, poolers).
    dsn = asyncpg_dsn(parse_database_url(url))
    try:
        # No statement cache: the source may be behind a transaction pooler too.
        conn = await asyncpg.connect(dsn, statement_cache_size=0, timeout=15)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        message = f"cannot connect to --from-postgres {where}: {first_line(exc)}"
        raise DatabaseUnavailable(message) from None
    rows: list[dict[str, Any]] = []
    try:
        async with conn.transaction(readonly=True, isolation="repeatable_read"):
            try:
                statement = await conn.prepare(query)
            except asyncpg.PostgresError as exc:
                raise InputError(f"the query failed: {first_line(exc)}", where="--query") from None
            check_columns([a.name for a in statement.get_attributes()])
            async for record in statement.cursor(prefetch=BATCH):
                rows.append(dict(record.items()))
                if on_row is not None:
                    on_row()
    except asyncpg.PostgresError as exc:
        raise InputError(f"the query failed: {first_line(exc)}", where="--query") from None
    finally:
        await conn.close()
    return rows


def plan_rows(
    rows: list[dict[str, Any]], flow: Flow, now: datetime, *, skip_invalid: bool
) -> tuple[list[Planned], list[Skipped], list[tuple[int, str]]]:
    """Place every row; a phone seen twice keeps its first row."""
    planned: list[Planned] = []
    skipped: list[Skipped] = []
    invalid: list[tuple[int, str]] = []
    seen: dict[str, str] = {}
    for number, row in enumerate(rows, start=1):
        try:
            result = plan_row(row, flow, now, number=number)
        except InputError as exc:
            if not skip_invalid:
                raise
            invalid.append((number, str(exc)))
            continue
        if isinstance(result, Skipped):
            skipped.append(result)
        elif result.item.phone in seen:
            skipped.append(Skipped(result.key, f"same phone as key {seen[result.item.phone]}"))
        else:
            seen[result.item.phone] = result.key
            planned.append(result)
    return planned, skipped, invalid


def _conversation(p: Planned) -> dict[str, Any]:
    i = p.item
    return {
        "key": p.key,
        "phone": i.phone,
        "step": i.step,
        "step_id": p.step_id,
        "state": i.state,
        "next": i.purpose,
        "at": i.next_send_at.isoformat(),
        "name": i.name,
    }


async def _write(
    settings: Settings, planned: list[Planned], now: datetime, progress: Callable[[int], None]
) -> int:
    """Import in batches; returns how many were created (the rest existed)."""
    store = await open_store(settings.database_url, pool_size=1, pooler=settings.db_pooler)
    created = 0
    try:
        for start in range(0, len(planned), BATCH):
            batch = [p.item for p in planned[start : start + BATCH]]
            results = await store.import_conversations(batch, now)
            created += sum(r.created for r in results)
            progress(len(batch))
    finally:
        await store.close()
    return created


def run_table_import(
    settings: Settings,
    *,
    url: str,
    query: str,
    flow_name: str,
    dry_run: bool,
    skip_invalid: bool,
    as_json: bool,
) -> None:
    """The whole command: read, place, (dry run: show | write), report."""
    flow = load_flows(settings.flows_dir).get(flow_name)
    counter = _Progress(as_json)
    try:
        rows = asyncio.run(read_source(url, query, on_row=lambda: counter.step("read")))
        counter.stop()
        now = datetime.now(UTC)
        planned, skipped, invalid = plan_rows(rows, flow, now, skip_invalid=skip_invalid)
        created = 0
        if not dry_run and planned:
            counter.total = len(planned)
            created = asyncio.run(
                _write(settings, planned, now, lambda n: counter.step("written", n))
            )
    finally:
        counter.stop()
    report: dict[str, Any] = {
        "source": redact_url(url),
        "flow": flow_name,
        "dry_run": dry_run,
        "rows": len(rows),
        "to_import" if dry_run else "imported": len(planned) if dry_run else created,
        "existing": None if dry_run else len(planned) - created,
        "skipped": [{"key": s.key, "reason": s.reason} for s in skipped],
        "invalid": [{"row": n, "error": e} for n, e in invalid],
        "by_step": dict(Counter(f"{p.item.step} {p.step_id}" for p in planned)),
    }
    if dry_run:
        report["conversations"] = [_conversation(p) for p in planned]
    if as_json:
        print_json(report)
        return
    _print(report, planned, skipped, invalid)


def _print(
    report: dict[str, Any],
    planned: list[Planned],
    skipped: list[Skipped],
    invalid: list[tuple[int, str]],
) -> None:
    for number, error in invalid:
        err_console.print(f"invalid row {number}: {error}", highlight=False, soft_wrap=True)
    reasons = Counter(s.reason if s.reason.startswith("state") else "duplicate" for s in skipped)
    skipped_text = ", ".join(f"{n} {why}" for why, n in reasons.items()) or "none"
    if report["dry_run"]:
        console.print(
            f"dry run, nothing written: {report['rows']} rows from {report['source']}",
            highlight=False,
        )
        for p in planned[:SHOWN]:
            c = _conversation(p)
            step = f"step {c['step']} ({c['step_id']})"
            console.print(
                f"  {c['key']:>8}  {c['phone']:<16} {step:<20} {c['state']:<15}"
                f"{c['next']} at {c['at']}",
                highlight=False,
            )
        if len(planned) > SHOWN:
            console.print(f"  ... and {len(planned) - SHOWN} more (--json lists them all)")
        steps = ", ".join(f"step {k}: {n}" for k, n in report["by_step"].items())
        console.print(
            f"would import {len(planned)} into {report['flow']} ({steps or 'none'}); "
            f"skipped: {skipped_text}; invalid: {len(invalid)}. Conversations dripline "
            "already has for a phone and this flow are left as they are.",
            highlight=False,
        )
        return
    console.print(
        f"{report['rows']} rows from {report['source']}: {report['imported']} imported into "
        f"{report['flow']}, {report['existing']} already in dripline, skipped: {skipped_text}, "
        f"invalid: {len(invalid)}",
        highlight=False,
    )


class _Progress:
    """Progress on stderr: a bar on a terminal (not with --json), a line per LOG_EVERY
    rows in a log file."""

    def __init__(self, as_json: bool) -> None:
        self.terminal = err_console.is_terminal
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=err_console,
            transient=True,
            disable=not self.terminal or as_json,
        )
        self.tasks: dict[str, TaskID] = {}
        self.total: int | None = None
        self.counts: Counter[str] = Counter()

    def step(self, what: str, n: int = 1) -> None:
        before = self.counts[what]
        self.counts[what] += n
        total = self.total if what == "written" else None
        if what not in self.tasks:
            self.bar.start()
            self.tasks[what] = self.bar.add_task(f"rows {what}", total=total)
        self.bar.advance(self.tasks[what], n)
        if total is not None and self.counts[what] >= total:
            self.bar.stop()
        if not self.terminal and self.counts[what] // LOG_EVERY > before // LOG_EVERY:
            of = f" of {total}" if total is not None else ""
            err_console.print(f"{self.counts[what]} rows {what}{of}", highlight=False)

    def stop(self) -> None:
        self.bar.stop()
