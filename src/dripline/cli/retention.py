"""`dripline db prune` and `dripline forget PHONE`: retention and erasure (docs/data.md)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import typer

from dripline.cli.common import console, handle_errors, print_json, settings_from
from dripline.cli.db import DatabaseUrlOpt, JsonOpt, db_app
from dripline.phones import normalize_phone
from dripline.store import ForgetResult, PruneResult, open_store


async def _prune(url: str, days: int) -> PruneResult:
    from dripline.inbox.retention import prune_now

    store = await open_store(url, pool_size=1, auto_migrate=False)
    try:
        return await prune_now(store, datetime.now(UTC), days)
    finally:
        await store.close()


async def _forget(url: str, phone: str) -> ForgetResult:
    store = await open_store(url, pool_size=1, auto_migrate=False)
    try:
        return await store.forget(phone)
    finally:
        await store.close()


@db_app.command("prune")
@handle_errors
def prune(
    older_than_days: Annotated[
        int | None,
        typer.Option(
            "--older-than-days", min=1, help="Keep this many days (default: retention_days)."
        ),
    ] = None,
    database_url: DatabaseUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete old processed webhook bodies and unanswered texts; answers are kept.

    Older than --older-than-days (default: retention_days, 30). `dripline serve` runs
    the same pass daily."""
    settings = settings_from(database_url=database_url)
    days = older_than_days or settings.retention_days
    result = asyncio.run(_prune(settings.database_url, days))
    if as_json:
        print_json(
            {
                "older_than_days": days,
                "inbox_rows": result.inbox_rows,
                "inbound_bodies": result.inbound_bodies,
            }
        )
        return
    console.print(
        f"deleted {result.inbox_rows} webhook bodies and cleared {result.inbound_bodies} "
        f"message texts older than {days} days",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    @app.command("forget")
    @handle_errors
    def forget(
        phone: Annotated[str, typer.Argument(help="The number in E.164 (+16505551234).")],
        yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
        database_url: DatabaseUrlOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Erase everything stored about PHONE: its conversations, messages, answers and
        the webhook bodies that name it (a GDPR erasure request). It cannot be undone."""
        number = normalize_phone(phone, where="PHONE")
        settings = settings_from(database_url=database_url)
        if not yes:
            typer.confirm(f"Erase every record of {number}? This cannot be undone", abort=True)
        result = asyncio.run(_forget(settings.database_url, number))
        data = {
            "phone": number,
            "conversations": result.conversations,
            "messages": result.messages,
            "inbound": result.inbound,
            "inbox_rows": result.inbox_rows,
            "inbox_waiting": result.inbox_waiting,
        }
        if as_json:
            print_json(data)
        else:
            console.print(
                f"erased {number}: {result.conversations} conversations, {result.messages} "
                f"messages, {result.inbound} inbound messages, {result.inbox_rows} webhook "
                "bodies",
                highlight=False,
            )
        if result.inbox_waiting:
            console.print(
                f"{result.inbox_waiting} webhook bodies naming {number} are not processed "
                "yet: run `dripline forget` again once `dripline serve` has applied them",
                highlight=False,
            )
            raise typer.Exit(1)
