"""The retention contract on every backend: `prune` and `forget` (docs/data.md)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dripline.clock import FakeClock
from dripline.flows import FlowSet, load_flows
from dripline.inbox import InboxProcessor
from dripline.store import Enrollment, Store
from tests.integration.test_webhook_processing import (
    FLOW,
    NOW,
    PHONE,
    detail,
    inbound,
    sent_question,
    statuses,
)

OTHER = "+14155550199"


@pytest.fixture
def flows(tmp_path: Path) -> FlowSet:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "survey.yaml").write_text(FLOW)
    return load_flows(tmp_path / "flows")


async def _deliver(store: Store, flows: FlowSet, at: object, *bodies: str) -> None:
    clock = FakeClock(at)  # type: ignore[arg-type]
    await store.insert_inbox(list(bodies), clock.now())
    await InboxProcessor(store, flows, clock).drain()


async def test_prune_keeps_answers_and_unprocessed_rows(store: Store, flows: FlowSet) -> None:
    cid, _ = await sent_question(store)
    # An answer and a message from an unknown number, 40 days ago; a status 10 days ago.
    old = NOW - timedelta(days=40)
    when = str(int(old.timestamp()))
    answer = inbound("great", "wamid.A", ts=when)
    await _deliver(store, flows, old, answer, inbound("hi?", "wamid.U", "14155550142", when))
    await _deliver(
        store, flows, NOW - timedelta(days=10), statuses({"id": "wamid.Q1", "status": "read"})
    )
    await store.insert_inbox([inbound("late", "wamid.L")], old)  # never processed
    result = await store.prune(NOW - timedelta(days=30))
    assert (result.inbox_rows, result.inbound_bodies) == (2, 1)
    state = await store.snapshot()
    assert [(r.body == inbound("late", "wamid.L"), r.processed_at) for r in state.inbox] == [
        (False, NOW - timedelta(days=10)),
        (True, None),
    ]
    bodies = {r.wamid: r.body for r in state.inbound}
    assert bodies == {"wamid.A": "great", "wamid.U": None}  # the answer is kept
    _, _, answers = await detail(store, cid)
    assert [a.body for a in answers] == ["great"]
    again = await store.prune(NOW - timedelta(days=30))
    assert (again.inbox_rows, again.inbound_bodies) == (0, 0)


async def test_forget_erases_one_person_only(store: Store, flows: FlowSet) -> None:
    cid, _ = await sent_question(store)
    other, _ = await sent_question(store, OTHER, "wamid.Q2")
    await store.enroll([Enrollment(phone=PHONE, flow="survey2")], NOW)  # a second one
    await _deliver(
        store,
        flows,
        NOW,
        inbound("mine", "wamid.A"),
        inbound("theirs", "wamid.B", OTHER[1:]),
        statuses({"id": "wamid.Q1", "status": "read"}),
    )
    await store.insert_inbox([inbound("later", "wamid.C")], NOW)  # not processed yet
    result = await store.forget(PHONE)
    assert (result.conversations, result.messages, result.inbound) == (2, 1, 1)
    assert (result.inbox_rows, result.inbox_waiting) == (2, 1)
    state = await store.snapshot()
    assert {c.phone for c in state.conversations} == {OTHER}
    assert [m.conversation_id for m in state.messages] == [other]
    assert [r.phone for r in state.inbound] == [OTHER]
    digits = PHONE[1:]
    assert [f'"{digits}"' in r.body for r in state.inbox] == [False, True]
    assert await store.conversation_detail(cid) is None
    # The number can be enrolled again, as a new person.
    [res] = await store.enroll([Enrollment(phone=PHONE, flow="survey")], NOW)
    assert res.created
    nothing = await store.forget("+14155550000")
    assert (nothing.conversations, nothing.inbound, nothing.inbox_rows) == (0, 0, 0)


# The daily pass and the commands ----------------------------------------------------------
async def test_the_server_pass_prunes_on_its_own(flows: FlowSet) -> None:
    from dripline.inbox.retention import RetentionPass
    from dripline.store import MemoryStore

    store = MemoryStore()
    await _deliver(store, flows, NOW - timedelta(days=31), statuses({"id": "w", "status": "read"}))
    await _deliver(store, flows, NOW - timedelta(days=29), statuses({"id": "w", "status": "read"}))
    task = RetentionPass(store, FakeClock(NOW), 30, first_after_s=0, interval_s=0.01)
    task.start()
    try:
        async with asyncio.timeout(5):
            while len((await store.snapshot()).inbox) != 1:
                await asyncio.sleep(0.01)
    finally:
        await task.stop()


def test_db_prune_and_forget_commands(sqlite_url: str, flows: FlowSet) -> None:
    from typer.testing import CliRunner

    from dripline.cli import app
    from dripline.store import open_store

    async def setup() -> None:
        store = await open_store(sqlite_url)
        try:
            await sent_question(store)
            old = datetime.now(UTC) - timedelta(days=40)
            await _deliver(store, flows, old, statuses({"id": "wamid.Q1", "status": "read"}))
        finally:
            await store.close()

    asyncio.run(setup())
    runner = CliRunner()
    pruned = runner.invoke(app, ["db", "prune", "--database-url", sqlite_url, "--json"])
    assert pruned.exit_code == 0, pruned.output
    assert json.loads(pruned.output) == {
        "older_than_days": 30,
        "inbox_rows": 1,
        "inbound_bodies": 0,
    }
    bad = runner.invoke(app, ["forget", "12", "--yes", "--database-url", sqlite_url])
    assert bad.exit_code != 0 and "PHONE" in bad.output
    refused = runner.invoke(app, ["forget", PHONE, "--database-url", sqlite_url], input="n\n")
    assert refused.exit_code != 0
    gone = runner.invoke(app, ["forget", PHONE, "--yes", "--json", "--database-url", sqlite_url])
    assert gone.exit_code == 0, gone.output
    assert json.loads(gone.output)["conversations"] == 1
