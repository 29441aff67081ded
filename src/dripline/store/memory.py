"""The in-memory store: the whole `Store` contract in plain Python, for tests and the
deterministic simulator (like procrastinate's in-memory connector).

    database = MemoryDatabase()
    worker_a = MemoryStore(database, hook=simulated_latency)   # one per simulated process
    worker_b = MemoryStore(database)
    processor = MemoryStore(database)

It passes the same contract suite as SQLite and PostgreSQL, with their semantics: leases
and `LEASE_LOST`, idempotent enrollment on (phone, flow), the reservation rules, status
ranks that never go backwards, result writes only while the lease is held, the inbox
and its processing transaction (`busy` = a live lease), workers and heartbeats, the
operator's counts. Concurrency is SQLite's: one writer at a time (an `asyncio.Lock`,
held by a webhook transaction from begin to commit), readers see the last commit.

Deterministic by construction: no threads, no I/O, no clock (every `now` is passed in),
no randomness; ids are given out in insertion order and every scan runs in id order.
Rows are returned as stored (frozen dataclasses; their `fields` and `stats` dicts are
shared): treat them as read-only.
Every method is all-or-nothing: it works on a layered view of the tables and commits at
its end, so an exception (or a fault the hook raises) leaves nothing behind.

The hook, `hook(name)`, is awaited at the start of every public async method with the
method's name (`claim_due`, ...), and in the webhook transaction at its begin
(`webhook_transaction`), before each of its calls (`webhook_transaction.take_inbox`, ...)
and before its commit (`webhook_transaction.commit`). A simulator uses it to yield
control, add latency, or raise `TransientStoreError` / `DatabaseUnavailable`: raised
there, the call changes nothing. `snapshot()` is an observer and skips the hook.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timedelta

from dripline.store import memory_queries as q
from dripline.store import memory_results, memory_retention
from dripline.store.base import Store, WebhookTx
from dripline.store.computed import enroll_results
from dripline.store.identity import lifted_suppressions, suppression_phones
from dripline.store.memory_tables import Tables, View, utc
from dripline.store.memory_webhook import MemoryWebhookTx
from dripline.store.report_types import (
    BacklogCounts,
    BacklogSnapshot,
    ErrorCount,
    ForgetResult,
    ImportedConversation,
    InboxBacklog,
    LagSummary,
    PruneResult,
    StoreHealth,
    StoreSnapshot,
    WebhookErrorCount,
)
from dripline.store.results_types import FlowResultsData
from dripline.store.types import (
    ACTIVE_STATES,
    CANCELLED,
    THROUGHPUT_WINDOWS_S,
    CancelOutcome,
    Claim,
    Conversation,
    Enrollment,
    EnrollResult,
    Inbound,
    InboxEntry,
    Message,
    Outcome,
    Reservation,
    ReservationResult,
    WorkerInfo,
)
from dripline.wake import Flag

__all__ = ["Hook", "MemoryDatabase", "MemoryStore"]

Hook = Callable[[str], Awaitable[None]]


class MemoryDatabase:
    """The shared state: what several `MemoryStore`s (simulated processes) all see."""

    def __init__(self) -> None:
        self.tables = Tables()
        # One writer at a time, like SQLite's BEGIN IMMEDIATE; FIFO, so deterministic.
        self.write_lock = asyncio.Lock()
        self.stores: list[MemoryStore] = []  # in attach order: wake-ups are deterministic

    def wake_all(self) -> None:
        for store in self.stores:
            store.signal()


class MemoryStore(Store):
    """The `Store` contract in memory; see the module docstring."""

    backend = "memory"

    def __init__(self, database: MemoryDatabase | None = None, *, hook: Hook | None = None) -> None:
        self.database = database or MemoryDatabase()
        self.target = "memory"
        self._hook = hook
        self._event: asyncio.Event | None = None
        self.database.stores.append(self)

    # plumbing ----------------------------------------------------------------
    async def _enter(self, name: str) -> None:
        if self._hook is not None:
            await self._hook(name)

    def _read(self) -> View:
        return View(self.database.tables)

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[View]:
        """One write: wait for the lock, change a view, commit when the block ends."""
        async with self.database.write_lock:
            view = View(self.database.tables)
            yield view
            view.commit()

    def signal(self) -> None:
        if self._event is not None:
            self._event.set()

    # lifecycle -----------------------------------------------------------------
    async def close(self) -> None:
        await self._enter("close")
        if self in self.database.stores:
            self.database.stores.remove(self)

    def wakeup_event(self) -> asyncio.Event:
        """Set after any store on the same database enrolled new rows or a webhook
        transaction scheduled a step."""
        if self._event is None:
            self._event = Flag()  # a dispatcher's sleep watches it without a task
        return self._event

    async def wakeup_ready(self) -> None:
        await self._enter("wakeup_ready")

    async def snapshot(self) -> StoreSnapshot:
        return self.database.tables.snapshot()

    # enrollment ----------------------------------------------------------------
    async def enroll(self, items: Sequence[Enrollment], now: datetime) -> list[EnrollResult]:
        await self._enter("enroll")
        now = utc(now)
        first: dict[tuple[str, str], Enrollment] = {}
        for item in items:
            first.setdefault((item.phone, item.flow), item)
        ids: dict[tuple[str, str], int] = {}
        created: set[tuple[str, str]] = set()
        async with self._write() as v:
            seen = q.last_inbound(v, {phone for phone, _ in first})
            wanted = set(suppression_phones(items))
            rows = [r for r in v.suppressions.values() if r.phone in wanted]
            for r in lifted_suppressions(items, rows) if rows else ():
                v.suppressions.delete((r.sender, r.phone))
            for key, item in first.items():
                existing = v.active_keys.get(key)
                if existing is not None:
                    ids[key] = existing
                    continue
                ids[key] = q.new_conversation(v, item, now, seen.get((item.phone, item.sender)))
                created.add(key)
        if created:
            self.database.wake_all()
        return enroll_results(items, ids, created)

    async def import_conversations(
        self, items: Sequence[ImportedConversation], now: datetime
    ) -> list[EnrollResult]:
        await self._enter("import_conversations")
        now = utc(now)
        ids: dict[tuple[str, str], int] = {}
        created: set[tuple[str, str]] = set()
        async with self._write() as v:
            for c in sorted(v.conversations.values(), key=lambda c: c.id):
                ids.setdefault((c.phone, c.flow), c.id)  # any state, the oldest one
            for item in items:
                key = (item.phone, item.flow)
                if key in ids:
                    continue
                at = utc(item.next_send_at)
                ids[key] = q.insert_conversation(
                    v, item, item.step, item.purpose, item.state, at, now
                )
                created.add(key)
        if created:
            self.database.wake_all()
        return [EnrollResult(ids[k], k in created) for k in ((i.phone, i.flow) for i in items)]

    # dispatch ------------------------------------------------------------------
    async def claim_due(
        self, limit: int, lease_ttl_s: float, worker_id: str, now: datetime
    ) -> list[Conversation]:
        await self._enter("claim_due")
        now = utc(now)
        if limit <= 0:
            return []
        until = now + timedelta(seconds=lease_ttl_s)
        async with self._write() as v:
            due = sorted(q.due(v, now), key=q.due_order)[:limit]
            return [
                v.change_conversation(c, lease_owner=worker_id, lease_expires_at=until) for c in due
            ]

    async def claim_next(
        self, limit: int, lease_ttl_s: float, worker_id: str, now: datetime
    ) -> Claim:
        await self._enter("claim_next")
        now = utc(now)
        until = now + timedelta(seconds=lease_ttl_s)
        async with self._write() as v:
            due = sorted(q.due(v, now), key=q.due_order)[: max(0, limit)]
            claimed = [
                v.change_conversation(c, lease_owner=worker_id, lease_expires_at=until) for c in due
            ]
            return Claim(claimed, q.next_due(v, now))

    @property
    def claims_with_record(self) -> bool:
        return True

    async def record_and_claim(
        self,
        outcomes: Sequence[Outcome],
        limit: int,
        lease_ttl_s: float,
        worker_id: str,
        now: datetime,
    ) -> tuple[int, Claim]:
        await self._enter("record_and_claim")
        now = utc(now)
        until = now + timedelta(seconds=lease_ttl_s)
        async with self._write() as v:
            recorded = q.record(v, outcomes, worker_id, now) if outcomes else 0
            due = sorted(q.due(v, now), key=q.due_order)[: max(0, limit)]
            claimed = [
                v.change_conversation(c, lease_owner=worker_id, lease_expires_at=until) for c in due
            ]
            return recorded, Claim(claimed, q.next_due(v, now))

    async def reserve(
        self, items: Sequence[Reservation], worker_id: str, now: datetime
    ) -> list[ReservationResult]:
        await self._enter("reserve")
        now = utc(now)
        async with self._write() as v:
            return q.reserve(v, items, worker_id, now)

    async def record_results(
        self, outcomes: Sequence[Outcome], worker_id: str, now: datetime
    ) -> int:
        await self._enter("record_results")
        now = utc(now)
        async with self._write() as v:
            return q.record(v, outcomes, worker_id, now)

    async def release(self, conversation_ids: Sequence[int], worker_id: str) -> int:
        await self._enter("release")
        async with self._write() as v:
            owned = q.owned(v, conversation_ids, worker_id)
            for c in owned:
                v.change_conversation(c, lease_owner=None, lease_expires_at=None)
            return len(owned)

    async def extend_leases(
        self, conversation_ids: Sequence[int], worker_id: str, lease_ttl_s: float, now: datetime
    ) -> list[int]:
        await self._enter("extend_leases")
        now = utc(now)
        until = now + timedelta(seconds=lease_ttl_s)
        async with self._write() as v:
            live = q.live_owned(v, conversation_ids, worker_id, now)
            for c in live:
                v.change_conversation(c, lease_expires_at=until)
            return [c.id for c in live]

    async def next_due_at(self, now: datetime) -> datetime | None:
        await self._enter("next_due_at")
        now = utc(now)
        return q.next_due(self._read(), now)

    async def status_evidence(
        self, messages: Sequence[tuple[int, datetime]], before: datetime
    ) -> dict[int, datetime]:
        await self._enter("status_evidence")
        return q.status_evidence(self._read(), messages, utc(before))

    async def intake_uptime(self, since: datetime) -> list[tuple[datetime, datetime]]:
        await self._enter("intake_uptime")
        since = utc(since)
        rows = [(k, r) for k, r in self._read().intake.items() if r[1] >= since]
        return [r for _, r in sorted(rows, key=lambda kr: (kr[1][0], kr[0]))]

    async def record_intake(
        self, intake_id: str, started_at: datetime, now: datetime, *, keep_s: float
    ) -> None:
        await self._enter("record_intake")
        now = utc(now)
        async with self._write() as v:
            v.intake[intake_id] = (utc(started_at), now)
            old = now - timedelta(seconds=keep_s)
            for key in [k for k, r in v.intake.items() if r[1] < old]:
                v.intake.delete(key)

    async def heartbeat(self, worker: WorkerInfo, live_after_s: float) -> list[WorkerInfo]:
        await self._enter("heartbeat")
        row = q.worker_row(worker)
        async with self._write() as v:
            v.workers[row.id] = row
            return q.live(v, row.heartbeat_at - timedelta(seconds=live_after_s))

    async def unregister(self, worker_id: str) -> None:
        await self._enter("unregister")
        async with self._write() as v:
            v.workers.delete(worker_id)

    # conversations ---------------------------------------------------------------
    async def conversations_by_ids(self, ids: Sequence[int]) -> dict[int, Conversation]:
        await self._enter("conversations_by_ids")
        v = self._read()
        found = (v.conversations.get(i) for i in sorted(set(ids)))
        return {c.id: c for c in found if c is not None}

    async def conversation_detail(
        self, conversation_id: int
    ) -> tuple[Conversation, list[Message], list[Inbound]] | None:
        await self._enter("conversation_detail")
        v = self._read()
        conv = v.conversations.get(conversation_id)
        if conv is None:
            return None
        msgs = [m for m in v.messages.values() if m.conversation_id == conversation_id]
        inbound = [i for i in v.inbound.values() if i.conversation_id == conversation_id]
        inbound.sort(key=lambda i: (i.received_at, i.id))
        return conv, msgs, inbound

    async def list_conversations(
        self,
        *,
        state: str | None = None,
        flow: str | None = None,
        limit: int = 50,
        after_id: int = 0,
    ) -> list[Conversation]:
        await self._enter("list_conversations")
        out: list[Conversation] = []
        for c in self._read().conversations.values():
            if len(out) >= limit:
                break
            if c.id > after_id and state in (None, c.state) and flow in (None, c.flow):
                out.append(c)
        return out

    async def cancel_conversation(self, conversation_id: int, now: datetime) -> CancelOutcome:
        await self._enter("cancel_conversation")
        now = utc(now)
        async with self._write() as v:
            c = v.conversations.get(conversation_id)
            if c is None:
                return CancelOutcome("missing", None)
            unleased = c.lease_expires_at is None or c.lease_expires_at <= now
            if c.state in ACTIVE_STATES and unleased:
                done = v.change_conversation(
                    c,
                    state=CANCELLED,
                    next_send_at=None,
                    lease_owner=None,
                    lease_expires_at=None,
                    last_error="cancelled through the API",
                    updated_at=now,
                )
                return CancelOutcome("cancelled", done)
        if c.state == CANCELLED:
            return CancelOutcome("already", c)
        return CancelOutcome("busy" if c.state in ACTIVE_STATES else "final", c)

    async def answer_pages(
        self, flow: str, *, page_size: int = 1_000
    ) -> AsyncIterator[list[tuple[Conversation, list[Inbound]]]]:
        after = 0
        while True:
            await self._enter("answer_pages")
            page = q.answer_page(self._read(), flow, after, page_size)
            if not page:
                return
            yield page
            after = page[-1][0].id

    async def flow_results(self, flow: str) -> FlowResultsData:
        await self._enter("flow_results")
        return memory_results.flow_results(self._read(), flow)

    async def flows_in_use(self) -> set[str]:
        await self._enter("flows_in_use")
        return {c.flow for c in self._read().conversations.values()}

    # webhooks ----------------------------------------------------------------------
    async def insert_inbox(self, bodies: Sequence[str], now: datetime) -> None:
        await self._enter("insert_inbox")
        now = utc(now)
        async with self._write() as v:
            for body in bodies:
                row = InboxEntry(v.next_id("inbox"), now, body, None, None)
                v.inbox[row.id] = row

    async def health(self) -> StoreHealth:
        await self._enter("health")
        # Imported here: nothing else in memory needs alembic. No schema: always at head.
        from dripline.store.migrate import head_revision

        waiting = [r.received_at for r in self._read().inbox.values() if r.processed_at is None]
        return StoreHealth(head_revision(), len(waiting), min(waiting, default=None))

    async def inbox_backlog(self) -> InboxBacklog:
        await self._enter("inbox_backlog")
        rows = list(self._read().inbox.values())
        waiting = [r.received_at for r in rows if r.processed_at is None]
        errors = sum(1 for r in rows if r.processed_at is not None and r.error is not None)
        return InboxBacklog(len(waiting), errors, min(waiting, default=None))

    # retention ---------------------------------------------------------------------
    async def prune(self, before: datetime) -> PruneResult:
        await self._enter("prune")
        async with self._write() as v:
            return memory_retention.prune(v, utc(before))

    async def forget(self, phone: str) -> ForgetResult:
        await self._enter("forget")
        async with self._write() as v:
            return memory_retention.forget(v, phone)

    def webhook_transaction(self) -> AbstractAsyncContextManager[WebhookTx]:
        return self._webhook_transaction()

    @asynccontextmanager
    async def _webhook_transaction(self) -> AsyncIterator[WebhookTx]:
        await self._enter("webhook_transaction")
        async with self.database.write_lock:
            view = View(self.database.tables)
            tx = MemoryWebhookTx(view, self._enter)
            yield tx
            await self._enter("webhook_transaction.commit")
            view.commit()
        if tx.wake_at is not None:
            self.database.wake_all()

    # the operator's view ------------------------------------------------------------
    async def backlog(self, now: datetime) -> BacklogCounts:
        await self._enter("backlog")
        return q.backlog(self._read(), utc(now))

    async def backlog_snapshot(self, now: datetime) -> BacklogSnapshot:
        await self._enter("backlog_snapshot")
        return q.backlog_snapshot(self._read(), utc(now))

    async def conversations_by_state(self) -> dict[str, int]:
        await self._enter("conversations_by_state")
        return q.by_state(self._read())

    async def sent_counts(
        self, now: datetime, windows_s: Sequence[int] = THROUGHPUT_WINDOWS_S
    ) -> dict[int, int]:
        await self._enter("sent_counts")
        return q.sent_counts(self._read(), utc(now), windows_s)

    async def lag_summary(
        self, now: datetime, *, window_s: float = 300.0, sample: int = 10_000
    ) -> LagSummary:
        await self._enter("lag_summary")
        return q.lag_summary(self._read(), utc(now), window_s, sample)

    async def error_counts(
        self, now: datetime, *, window_s: float = 900.0, error_scan: int = 200_000
    ) -> list[ErrorCount]:
        await self._enter("error_counts")
        return q.error_counts(self._read(), utc(now), window_s, error_scan)

    async def webhook_errors(self, since: datetime | None = None) -> list[WebhookErrorCount]:
        await self._enter("webhook_errors")
        return q.webhook_errors(self._read(), None if since is None else utc(since))

    async def live_workers(self, now: datetime, *, live_after_s: float = 10.0) -> list[WorkerInfo]:
        await self._enter("live_workers")
        return q.live(self._read(), (utc(now)) - timedelta(seconds=live_after_s))

    async def latency_samples_ms(self, *, limit: int = 20_000) -> list[float]:
        await self._enter("latency_samples_ms")
        return q.latency_samples(self._read(), limit)
