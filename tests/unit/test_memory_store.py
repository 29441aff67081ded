"""What the simulator needs from the in-memory store beyond the contract suite: the
fault hook, all-or-nothing methods, transaction isolation, determinism, wake-ups."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from dripline.errors import ConfigError, DatabaseUnavailable, StoreError, TransientStoreError
from dripline.settings import load_settings
from dripline.store import (
    ConversationChange,
    ConversationUpdate,
    Enrollment,
    MemoryDatabase,
    MemoryStore,
    MessageUpdate,
    NewInbound,
    Outcome,
    Reservation,
    StatusUpdate,
    Store,
    WorkerInfo,
    migrate_database,
    open_store,
)
from dripline.store.reports import latency_samples_ms

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def phone(i: int) -> str:
    return f"+1415555{i:04d}"


class Faults:
    """A hook that records every call and raises for the names in `fail`, keeping the
    state of `store` just before (`before`)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: set[str] = set()
        self.store: Store | None = None
        self.before: object = None

    async def __call__(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            if self.store is not None:
                self.before = await self.store.snapshot()
            raise DatabaseUnavailable(f"injected at {name}")


async def scenario(store: Store) -> None:
    """A little of everything, as a dispatcher and a processor would do it."""
    [a, b] = [r.id for r in await store.enroll([Enrollment(phone(i), "f") for i in (1, 2)], NOW)]
    claimed = await store.claim_due(10, 60, "w", NOW)
    res = await store.reserve([Reservation(c.id, 0, "question", NOW) for c in claimed], "w", NOW)
    await store.record_results(
        [
            Outcome(
                ConversationUpdate(r.conversation_id, "awaiting_reply", 0, "reminder", NOW, 0),
                MessageUpdate(r.message_id, "sent", wamid=f"wamid.{r.message_id}", sent_at=NOW),
            )
            for r in res
        ],
        "w",
        NOW,
    )
    await store.insert_inbox(["body"], NOW)
    async with store.webhook_transaction() as tx:
        [row] = await tx.take_inbox(10)
        await tx.apply_statuses([StatusUpdate(f"wamid.{res[0].message_id}", "read", NOW)], NOW)
        await tx.insert_inbound([NewInbound("wamid.in", a, phone(1), 0, "text", "hi", NOW)])
        change = ConversationChange(a, "completed", 1, "question", None, 0, None, NOW)
        await tx.update_conversations([change], NOW)
        await tx.finish_inbox([(row.id, None)], [], NOW)
    await store.heartbeat(WorkerInfo("w", "h", 1, NOW, NOW, 10.0, 4, "static"), 10)
    await store.cancel_conversation(b, NOW + timedelta(seconds=61))


def test_the_same_calls_give_the_same_state() -> None:
    async def run() -> object:
        store = MemoryStore()
        await scenario(store)
        return await store.snapshot()

    first, second = asyncio.run(run()), asyncio.run(run())
    assert first == second


async def test_the_hook_sees_every_call_by_name() -> None:
    faults = Faults()
    await scenario(MemoryStore(hook=faults))
    assert faults.calls == [
        "enroll",
        "claim_due",
        "reserve",
        "record_results",
        "insert_inbox",
        "webhook_transaction",
        "webhook_transaction.take_inbox",
        "webhook_transaction.apply_statuses",
        "webhook_transaction.insert_inbound",
        "webhook_transaction.update_conversations",
        "webhook_transaction.finish_inbox",
        "webhook_transaction.commit",
        "heartbeat",
        "cancel_conversation",
    ]


@pytest.mark.parametrize("fail", ["webhook_transaction.commit", "webhook_transaction.finish_inbox"])
async def test_a_fault_anywhere_in_the_transaction_changes_nothing(fail: str) -> None:
    faults = Faults()
    store = MemoryStore(hook=faults)
    faults.fail = {fail}
    with pytest.raises(DatabaseUnavailable, match=fail):
        await scenario(store)
    state = await store.snapshot()
    assert [i.processed_at for i in state.inbox] == [None]
    assert state.inbound == () and {c.state for c in state.conversations} == {"awaiting_reply"}
    assert {m.status for m in state.messages} == {"sent"}
    faults.fail = set()
    async with store.webhook_transaction() as tx:  # the lock was released
        assert len(await tx.take_inbox(10)) == 1


@pytest.mark.parametrize(
    "method", ["enroll", "claim_due", "reserve", "record_results", "insert_inbox"]
)
async def test_a_fault_at_a_method_changes_nothing(method: str) -> None:
    faults = Faults()
    store = MemoryStore(hook=faults)
    faults.fail, faults.store = {method}, store
    with pytest.raises(DatabaseUnavailable, match=method):
        await scenario(store)
    assert faults.before is not None and await store.snapshot() == faults.before


async def test_a_failing_write_applies_none_of_its_batch() -> None:
    store = MemoryStore()
    ids = [r.id for r in await store.enroll([Enrollment(phone(i), "f") for i in (1, 2)], NOW)]
    await store.claim_due(10, 60, "w", NOW)
    before = await store.snapshot()
    naive = datetime(2026, 1, 1)
    outcomes = [
        Outcome(ConversationUpdate(ids[0], "completed", 1, "question", None, 0)),
        Outcome(ConversationUpdate(ids[1], "pending", 1, "question", naive, 0)),
    ]
    with pytest.raises(StoreError, match="naive"):
        await store.record_results(outcomes, "w", NOW)
    assert await store.snapshot() == before


async def test_a_transaction_is_invisible_until_commit_and_writers_wait() -> None:
    database = MemoryDatabase()
    gate = asyncio.Event()
    order: list[str] = []

    async def pause_before_commit(name: str) -> None:
        if name == "webhook_transaction.commit":
            order.append("commit waits")
            await gate.wait()

    processor = MemoryStore(database, hook=pause_before_commit)
    dispatcher = MemoryStore(database)
    [cid] = [r.id for r in await dispatcher.enroll([Enrollment(phone(1), "f")], NOW)]

    async def process() -> None:
        async with processor.webhook_transaction() as tx:
            change = ConversationChange(cid, "opted_out", 0, "question", None, 0, "stop", NOW)
            await tx.update_conversations([change], NOW)
        order.append("committed")

    task = asyncio.create_task(process())
    await asyncio.sleep(0)
    assert order == ["commit waits"]
    # Readers see the last commit; a writer queues behind the transaction.
    [conv] = (await dispatcher.conversations_by_ids([cid])).values()
    assert conv.state == "pending"
    claim = asyncio.create_task(dispatcher.claim_due(10, 60, "w", NOW))
    await asyncio.sleep(0)
    assert not claim.done()
    gate.set()
    await task
    assert await claim == []  # it ran after the commit: nothing due any more
    assert order == ["commit waits", "committed"]


async def test_transient_faults_propagate_as_raised() -> None:
    async def flaky(name: str) -> None:
        if name == "claim_due":
            raise TransientStoreError("deadlock (injected)")

    store = MemoryStore(hook=flaky)
    await store.enroll([Enrollment(phone(1), "f")], NOW)
    with pytest.raises(TransientStoreError):
        await store.claim_due(10, 60, "w", NOW)
    assert (await store.snapshot()).conversations[0].lease_owner is None


async def test_enroll_and_webhooks_wake_every_store_on_the_database() -> None:
    database = MemoryDatabase()
    sleeper, other = MemoryStore(database), MemoryStore(database)
    wake = sleeper.wakeup_event()
    [r] = await other.enroll([Enrollment(phone(1), "f")], NOW)
    assert wake.is_set()
    wake.clear()
    await other.enroll([Enrollment(phone(1), "f")], NOW)  # nothing new
    assert not wake.is_set()
    async with other.webhook_transaction() as tx:
        change = ConversationChange(r.id, "in_progress", 1, "question", NOW, 0, None, NOW)
        await tx.update_conversations([change], NOW)
    assert wake.is_set()
    await sleeper.close()
    wake.clear()
    await other.enroll([Enrollment(phone(2), "f")], NOW)
    assert not wake.is_set()  # closed stores are detached


async def test_memory_urls() -> None:
    store = await open_store("memory://")
    assert isinstance(store, MemoryStore) and store.backend == "memory"
    assert (await store.snapshot()).conversations == ()
    with pytest.raises(ConfigError, match="tests and the simulator"):
        load_settings(database_url="memory://")
    with pytest.raises(ConfigError, match="memory://"):
        await migrate_database("memory://")
    with pytest.raises(ConfigError, match="memory://"):
        await latency_samples_ms("memory://")
