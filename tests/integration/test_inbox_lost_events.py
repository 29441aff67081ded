"""Issue 13, "events lost": a webhook must not be marked failed for good because of a
transient database refusal, nor dropped whole because of a lone UTF-16 surrogate."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from dripline.clock import FakeClock
from dripline.errors import TransientStoreError
from dripline.flows import FlowSet, load_flows
from dripline.inbox import InboxProcessor
from dripline.store import MemoryStore, Store, open_store
from tests.fixtures.db import _admin, _admin_dsn
from tests.integration.test_webhook_processing import (
    FLOW,
    NOW,
    detail,
    inbound,
    run,
    sent_question,
)


@pytest.fixture
def flows(tmp_path: Path) -> FlowSet:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "survey.yaml").write_text(FLOW)
    return load_flows(tmp_path / "flows")


async def _until_processed(store: Store, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while any(r.processed_at is None for r in (await store.snapshot()).inbox):
            await asyncio.sleep(0.02)


async def test_a_one_row_batch_refused_transiently_is_retried(flows: FlowSet) -> None:
    """The database asks for a retry (deadlock, serialization failure) on the only row
    waiting: the processor retries it instead of marking it failed."""
    refusals = 1

    async def hook(name: str) -> None:
        nonlocal refusals
        if name == "webhook_transaction.commit" and refusals:
            refusals -= 1
            raise TransientStoreError("database memory: deadlock detected")

    store = MemoryStore(hook=hook)
    processor = InboxProcessor(store, flows, FakeClock(NOW), idle_poll_s=0.01, retry_s=0.01)
    cid, _ = await sent_question(store)
    await store.insert_inbox([inbound("great", "wamid.IN1")], NOW)
    processor.start()
    try:
        await _until_processed(store)
    finally:
        await processor.stop()
    assert refusals == 0
    [row] = (await store.snapshot()).inbox
    assert row.error is None
    conv, _, answers = await detail(store, cid)
    assert conv.step == 1 and [a.body for a in answers] == ["great"]


@pytest.mark.postgres
async def test_a_statement_timeout_is_retried_on_postgresql(
    postgres_url: str, flows: FlowSet
) -> None:
    """A statement timeout (SQLSTATE 57014) on a one-row batch is a retry, not a failure."""
    name = postgres_url.rsplit("/", 1)[1]
    await _admin(postgres_url, f"ALTER DATABASE \"{name}\" SET statement_timeout = '200ms'")
    store = await open_store(postgres_url)
    try:
        processor = InboxProcessor(store, flows, FakeClock(NOW), idle_poll_s=0.05, retry_s=0.05)
        cid, _ = await sent_question(store)
        await store.insert_inbox([inbound("great", "wamid.IN1")], NOW)
        blocker = await asyncpg.connect(_admin_dsn(postgres_url))
        try:
            # Another session holds the conversations table: the processor's update waits
            # past the statement timeout, at least once.
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute("LOCK TABLE conversations IN ACCESS EXCLUSIVE MODE")
            processor.start()
            await asyncio.sleep(1.0)
            await tx.rollback()
        finally:
            await blocker.close()
        try:
            await _until_processed(store)
        finally:
            await processor.stop()
        [row] = (await store.snapshot()).inbox
        assert row.error is None
        conv, _, answers = await detail(store, cid)
        assert conv.step == 1 and [a.body for a in answers] == ["great"]
    finally:
        await store.close()


async def test_a_lone_surrogate_does_not_drop_the_body(
    store: Store, processor: InboxProcessor
) -> None:
    """`\\ud83d` alone (a broken emoji) in a reply: the reply is kept, with U+FFFD in its
    place, and the other events of the same body are applied."""
    cid, _ = await sent_question(store)
    other, _ = await sent_question(store, "+14155550124", "wamid.Q2")
    body = inbound("ok \\ud83d!", "wamid.IN1").replace("\\\\ud83d", "\\ud83d")
    assert "\\ud83d" in body and "\\\\" not in body
    stats = await run(processor, body)
    assert stats.malformed == 0
    [row] = (await store.snapshot()).inbox
    assert row.error is None
    conv, _, answers = await detail(store, cid)
    assert conv.step == 1 and [a.body for a in answers] == ["ok \ufffd!"]
    # A valid pair still decodes to the emoji.
    await run(
        processor, inbound("\\ud83d\\ude00", "wamid.IN2", "14155550124").replace("\\\\", "\\")
    )
    _, _, answers = await detail(store, other)
    assert [a.body for a in answers] == ["\U0001f600"]


@pytest.fixture
def processor(store: Store, flows: FlowSet) -> InboxProcessor:
    return InboxProcessor(store, flows, FakeClock(NOW))
