"""What a deploy does to the database: migrations started by several processes at once,
and provider URLs with libpq's `sslmode`, on the real PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from dripline.errors import DatabaseUnavailable
from dripline.store import migrate_database, open_store, schema_revision
from dripline.store.migrate import head_revision

pytestmark = pytest.mark.postgres


async def test_concurrent_migrations_take_turns(empty_postgres_url: str) -> None:
    """Three replicas run `dripline db upgrade` on start, at the same moment: one
    migrates, the others wait for it and find nothing to do (without the advisory lock
    the others failed on the tables the first was creating)."""
    results = await asyncio.gather(*(migrate_database(empty_postgres_url) for _ in range(3)))
    head = head_revision()
    assert sorted(results, key=lambda r: r[0] or "") == [(None, head), (head, head), (head, head)]
    assert await schema_revision(empty_postgres_url) == (head, head)


@pytest.mark.parametrize("mode", ["disable", "prefer"])
async def test_a_url_with_sslmode_opens(postgres_url: str, mode: str) -> None:
    store = await open_store(f"{postgres_url}?sslmode={mode}")
    try:
        assert (await store.health()).schema_revision == head_revision()
    finally:
        await store.close()


async def test_sslmode_require_is_asked_of_the_server(postgres_url: str) -> None:
    """`require` reaches the server as a TLS request (the test server may or may not
    have TLS): never asyncpg's "unexpected keyword argument 'sslmode'"."""
    try:
        store = await open_store(f"{postgres_url}?sslmode=require")
    except DatabaseUnavailable as exc:
        assert "SSL" in str(exc) and "keyword" not in str(exc), exc
    else:
        await store.close()
