"""Typed answers on inbound messages (migration 0005): rows written before it keep their
body and read back untyped; an upgraded database takes typed answers; the downgrade
drops the columns; and every backend round-trips the fields through `insert_inbound`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from dripline.store import Enrollment, NewInbound, Store, migrate_database, open_store
from dripline.store.migrate import alembic_config
from dripline.store.urls import parse_database_url

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TYPED = ("answer_kind", "answer_option", "answer_number", "valid")


def _columns(conn: Connection) -> set[str]:
    return {c["name"] for c in inspect(conn).get_columns("inbound_messages")}


def _downgrade(conn: Connection) -> None:
    command.downgrade(alembic_config(conn), "0004")


async def _run(url: str, fn: object) -> object:
    engine = create_async_engine(parse_database_url(url).async_url)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(fn)  # type: ignore[arg-type]
    finally:
        await engine.dispose()


async def _check_upgrade_keeps_old_rows(url: str) -> None:
    assert await migrate_database(url, "0004") == (None, "0004")
    insert = text(
        "INSERT INTO inbound_messages (wamid, phone, step, kind, body, received_at)"
        " VALUES ('wamid.OLD', '+14155550100', 0, 'text', 'yes', '2026-03-01 12:00:00')"
    )
    await _run(url, lambda conn: conn.execute(insert))
    assert await migrate_database(url, "0005") == ("0004", "0005")
    assert set(TYPED) <= await _run(url, _columns)  # type: ignore[operator]
    select = text(
        "SELECT body, answer_kind, answer_option, answer_number, valid FROM inbound_messages"
    )
    rows = await _run(url, lambda conn: [tuple(r) for r in conn.execute(select)])
    assert rows == [("yes", None, None, None, None)]
    await migrate_database(url)  # the later migrations (0006: the inbound sender)
    store = await open_store(url)  # the store reads the old row, now untyped
    await store.close()
    await _run(url, _downgrade)
    assert not set(TYPED) & await _run(url, _columns)  # type: ignore[operator]


async def test_sqlite_upgrade_to_0005_keeps_rows_and_downgrades(sqlite_url: str) -> None:
    await _check_upgrade_keeps_old_rows(sqlite_url)


@pytest.mark.postgres
async def test_postgres_upgrade_to_0005_keeps_rows_and_downgrades(empty_postgres_url: str) -> None:
    await _check_upgrade_keeps_old_rows(empty_postgres_url)


async def test_typed_answers_round_trip(store: Store) -> None:
    [conv] = await store.enroll([Enrollment("+14155550101", "f")], NOW)
    rows = [
        NewInbound(
            "wamid.1",
            conv.id,
            "+14155550101",
            0,
            "button",
            "Yes",
            NOW,
            answer_kind="option",
            answer_option="yes",
            valid=True,
        ),
        NewInbound("wamid.2", conv.id, "+14155550101", 1, "text", "maybe", NOW, valid=False),
        NewInbound(
            "wamid.3",
            conv.id,
            "+14155550101",
            1,
            "text",
            "9",
            NOW,
            answer_kind="number",
            answer_number=9.0,
            valid=True,
        ),
        NewInbound(
            "wamid.4",
            conv.id,
            "+14155550101",
            2,
            "text",
            "fine",
            NOW,
            answer_kind="text",
            valid=True,
        ),
        NewInbound("wamid.5", conv.id, "+14155550101", None, "text", "hello?", NOW),
    ]
    async with store.webhook_transaction() as tx:
        assert await tx.insert_inbound(rows) == {r.wamid for r in rows}
    found = await store.conversation_detail(conv.id)
    assert found is not None
    got = {i.wamid: (i.answer_kind, i.answer_option, i.answer_number, i.valid) for i in found[2]}
    assert got == {
        "wamid.1": ("option", "yes", None, True),
        "wamid.2": (None, None, None, False),
        "wamid.3": ("number", None, 9.0, True),
        "wamid.4": ("text", None, None, True),
        "wamid.5": (None, None, None, None),
    }
