"""Migrations: a fresh database upgraded by Alembic equals `schema.metadata`, and
`open_store` checks (SQLite: upgrades) the schema."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from dripline.errors import StoreError
from dripline.store import migrate_database, open_store, schema_revision
from dripline.store.migrate import head_revision
from dripline.store.schema import metadata
from dripline.store.urls import parse_database_url

PARTIAL_INDEXES = {
    "ix_conversations_due": "awaiting_reply",
    "uq_conversations_active_phone_flow": "awaiting_reply",
    "ix_inbox_unprocessed": "processed_at IS NULL",
}


def _diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def _index_sql(conn: Connection) -> dict[str, str]:
    if conn.dialect.name == "sqlite":
        rows = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'index'"))
    else:
        rows = conn.execute(text("SELECT indexname, indexdef FROM pg_indexes"))
    return {name: sql or "" for name, sql in rows}


async def _inspect(url: str) -> tuple[list[Any], dict[str, str]]:
    engine = create_async_engine(parse_database_url(url).async_url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_diff), await conn.run_sync(_index_sql)
    finally:
        await engine.dispose()


async def _check_fresh_upgrade(url: str) -> None:
    assert await schema_revision(url) == (None, head_revision())
    assert await migrate_database(url) == (None, head_revision())
    assert await migrate_database(url) == (head_revision(), head_revision())  # idempotent
    diff, indexes = await _inspect(url)
    assert diff == []
    for name, predicate in PARTIAL_INDEXES.items():
        assert "WHERE" in indexes[name].upper() and predicate in indexes[name], indexes[name]


async def test_sqlite_migration_equals_schema(sqlite_url: str) -> None:
    await _check_fresh_upgrade(sqlite_url)


@pytest.mark.postgres
async def test_postgres_migration_equals_schema(empty_postgres_url: str) -> None:
    await _check_fresh_upgrade(empty_postgres_url)


async def test_sqlite_is_upgraded_on_first_use(sqlite_url: str) -> None:
    store = await open_store(sqlite_url)
    await store.close()
    assert await schema_revision(sqlite_url) == (head_revision(), head_revision())


async def test_sqlite_without_auto_migrate_asks_for_upgrade(sqlite_url: str) -> None:
    with pytest.raises(StoreError, match="run `dripline db upgrade`"):
        await open_store(sqlite_url, auto_migrate=False)


@pytest.mark.postgres
@pytest.mark.parametrize("dispatcher", [False, True])
async def test_postgres_is_never_migrated_implicitly(
    empty_postgres_url: str, dispatcher: bool
) -> None:
    """A dispatcher reads the revision on its own connection (`lane_revision`), the rest
    through the pool: the same answers."""
    with pytest.raises(StoreError, match=r"has no dripline schema.*run `dripline db upgrade`"):
        await open_store(empty_postgres_url, dispatcher=dispatcher)
    await migrate_database(empty_postgres_url)
    store = await open_store(empty_postgres_url, dispatcher=dispatcher)
    await store.close()


@pytest.mark.postgres
async def test_pooler_mode_works_and_never_wakes(postgres_url: str) -> None:
    from datetime import UTC, datetime

    from dripline.store import Enrollment

    now = datetime(2026, 1, 1, tzinfo=UTC)
    store = await open_store(postgres_url, pooler=True, pool_size=1)
    try:
        wake = store.wakeup_event()
        await store.wakeup_ready()
        for i in range(3):  # the same statements again: no prepared-statement reuse
            await store.enroll([Enrollment(f"+1415555010{i}", "f")], now)
            assert len(await store.claim_due(10, 60, "w", now)) == 1
        assert not wake.is_set()
    finally:
        await store.close()


def test_the_head_read_from_the_scripts_is_alembics() -> None:
    """`head_revision` reads the scripts' text (no Alembic at start-up); Alembic agrees."""
    from alembic.script import ScriptDirectory

    from dripline.store.migrate import alembic_config

    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()


async def test_the_revision_read_with_one_query_is_alembics(sqlite_url: str) -> None:
    from dripline.store.migrate import current_revision

    def both(conn: Connection) -> tuple[str | None, str | None]:
        return current_revision(conn), MigrationContext.configure(conn).get_current_revision()

    engine = create_async_engine(parse_database_url(sqlite_url).async_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(both) == (None, None)
        await migrate_database(sqlite_url, "0002")
        async with engine.connect() as conn:
            assert await conn.run_sync(both) == ("0002", "0002")
    finally:
        await engine.dispose()
