"""`open_store(..., dispatcher=True)`: a dispatcher's statements all go to its lane, the
schema check at open and its row's removal at shutdown too, so a `run --once` that
sends and stops never opens the pool's connection (issue 14, start-up: on PostgreSQL a
connect, SQLAlchemy's dialect set-up and a transaction before the first send; on SQLite
aiosqlite's thread and SQLAlchemy's connection)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dripline.dispatcher.engine import Dispatcher
from dripline.errors import DatabaseUnavailable
from dripline.fake import FakeConfig, running_fake
from dripline.flows import load_flows
from dripline.store import open_store
from dripline.store.migrate import head_revision
from tests.fixtures.dispatch import (
    TOKEN,
    UNUSED_URL,
    client_for,
    enroll,
    fast_settings,
    phones,
    received,
)


def _pool_connections(store: object) -> int:
    return int(store._engine.pool.checkedin())  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "store_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_a_once_dispatcher_never_opens_a_pool_connection(store_url: str) -> None:
    setup = await open_store(store_url, pool_size=1)
    try:
        await enroll(setup, phones(2))
        await setup.unregister("nobody")  # the pool's path, outside a dispatcher
    finally:
        await setup.close()
    store = await open_store(store_url, pool_size=1, dispatcher=True)
    try:
        assert _pool_connections(store) == 0
        config = FakeConfig(access_token=TOKEN, rate_per_s=0, pair_interval_s=0)
        async with running_fake(config) as fake, client_for(fake) as client:
            settings = fast_settings(UNUSED_URL)
            d = Dispatcher(store=store, client=client, flows=load_flows(None), settings=settings)
            summary = await d.run(once=True, max_seconds=60)
            assert summary.stats.sent == 2 and len(received(fake)) == 2
        assert _pool_connections(store) == 0
        assert await store.live_workers(summary.ended_at, live_after_s=3600) == []
    finally:
        await store.close()


async def test_a_dispatcher_on_a_new_sqlite_file_migrates_it(tmp_path: Path) -> None:
    """The lane finds no schema; the pool's open migrates, as without `dispatcher`."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    store = await open_store(url, pool_size=1, dispatcher=True)
    try:
        assert await store.lane_revision() == head_revision()  # type: ignore[attr-defined]
    finally:
        await store.close()


async def test_a_dispatcher_is_told_why_a_database_cannot_open_as_anyone_else(
    tmp_path: Path,
) -> None:
    """The lane's own errors are not the ones `open_store` has always given: SQLite
    leaves a failure to the pool's open, PostgreSQL's unreachable server reads alike."""
    bad = tmp_path / "bad.db"
    bad.write_text("not a database, not at all" * 10)
    for url in (f"sqlite:///{bad}", "postgresql://postgres@127.0.0.1:1/none"):
        said = []
        for dispatcher in (False, True):
            with pytest.raises(DatabaseUnavailable) as caught:
                await open_store(url, dispatcher=dispatcher)
            said.append(str(caught.value))
        assert said[0] == said[1], said
        assert said[0].startswith("cannot open"), said
