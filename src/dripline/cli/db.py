"""`dripline db upgrade` and `dripline db current`: the database schema."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from dripline.cli.common import console, handle_errors, print_json, settings_from
from dripline.store import migrate_database, schema_revision
from dripline.store.urls import redact_url

DatabaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="sqlite:///file.db or postgresql://user@host/db (default: settings).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

db_app = typer.Typer(
    short_help="Create or upgrade the database schema.",
    help="Create or upgrade dripline's database schema (Alembic migrations shipped with "
    "dripline). SQLite upgrades itself on first use; PostgreSQL needs `dripline db upgrade` "
    "once per release, run by the operator before starting workers.",
    no_args_is_help=True,
)


@db_app.command("upgrade")
@handle_errors
def upgrade(database_url: DatabaseUrlOpt = None, as_json: JsonOpt = False) -> None:
    """Upgrade the database to this dripline's schema (creates it when empty; idempotent).

    Several at once are safe: on PostgreSQL they take turns (an advisory lock)."""
    settings = settings_from(database_url=database_url)
    url = settings.database_url
    before, after = asyncio.run(migrate_database(url, pooler=settings.db_pooler))
    if as_json:
        print_json({"database": redact_url(url), "from": before, "to": after})
    elif before == after:
        console.print(f"{redact_url(url)}: schema already at {after}", highlight=False)
    else:
        console.print(
            f"{redact_url(url)}: schema upgraded from {before or 'empty'} to {after}",
            highlight=False,
        )


@db_app.command("current")
@handle_errors
def current(database_url: DatabaseUrlOpt = None, as_json: JsonOpt = False) -> None:
    """Show the database's schema revision and the one this dripline needs."""
    settings = settings_from(database_url=database_url)
    url = settings.database_url
    revision, head = asyncio.run(schema_revision(url, pooler=settings.db_pooler))
    if as_json:
        print_json(
            {"database": redact_url(url), "current": revision, "head": head, "ok": revision == head}
        )
        return
    state = "up to date" if revision == head else "needs `dripline db upgrade`"
    console.print(
        f"{redact_url(url)}: schema {revision or 'empty'}, dripline needs {head} ({state})",
        highlight=False,
    )
    if revision != head:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
