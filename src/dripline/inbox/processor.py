"""The inbox processor: applies stored webhook bodies to messages and conversations.

It takes unprocessed inbox rows in batches (oldest first) and applies each batch in one
transaction (`Store.webhook_transaction`); every statement is idempotent, so a body Meta
delivers twice, or a row processed again after a crash, changes nothing. What each event
does is decided by the pure functions in `dripline.inbox.plan`.

Leases: a conversation a dispatcher holds (live lease) is not touched, because the
dispatcher's result write would overwrite ours. The whole inbound message is left for a
later pass (its inbox row stays unprocessed, with a note), so the message is inserted
in the same transaction as the change it causes, and a retry finds it not yet recorded.
Leases last one send, so the retry (every `retry_s`) succeeds within moments.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from dripline.clock import Clock
from dripline.errors import DatabaseUnavailable, InputError, TransientStoreError
from dripline.flows import FlowRegistry
from dripline.inbox.optouts import suppressions_from_statuses
from dripline.inbox.plan import InboundEvent, inbound_event, plan_inbound, status_update
from dripline.inbox.receipts import ReadReceipt, ReadReceipts, receipts_for
from dripline.inbox.recipients import wa_ids_to_learn
from dripline.inbox.refusals import plan_refusals
from dripline.store import (
    STATUS_RANK,
    NewWebhookError,
    StatusUpdate,
    Store,
    Suppression,
    WebhookTx,
)
from dripline.whatsapp.webhooks import parse_webhook

__all__ = ["UNMATCHED_FAILED_WAIT_S", "InboxProcessor", "PassStats"]

# How long a `failed` status that matches no message yet waits for the dispatcher to
# record the send's wamid (its write is batched and may be held up by the database).
UNMATCHED_FAILED_WAIT_S = 30.0

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class PassStats:
    """Counts over one or more batches."""

    rows: int = 0
    malformed: int = 0
    waiting: int = 0
    statuses: int = 0
    statuses_applied: int = 0
    statuses_unmatched: int = 0
    inbound: int = 0
    inbound_duplicate: int = 0
    advanced: int = 0
    opted_out: int = 0
    value_errors: int = 0  # value-level errors recorded (`value.errors[]`)
    # `failed` statuses that failed their conversation, sent its template, retried it
    refused_failed: int = 0
    refused_fallbacks: int = 0
    refused_retries: int = 0
    last_id: int = 0

    def add(self, other: PassStats) -> None:
        for f in dataclasses.fields(self):
            if f.name != "last_id":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        self.last_id = max(self.last_id, other.last_id)


class InboxProcessor:
    """Applies the inbox in batches, in the server process, until stopped."""

    def __init__(
        self,
        store: Store,
        flows: FlowRegistry,
        clock: Clock,
        *,
        opt_out_keywords: Sequence[str] = ("STOP",),
        default_sender: str | None = None,
        senders: Sequence[str] = (),
        batch_rows: int = 200,
        idle_poll_s: float = 1.0,
        retry_s: float = 1.0,
        max_attempts: int = 8,
        retry_base_s: float = 1.0,
        retry_cap_s: float = 300.0,
        receipts: ReadReceipts | None = None,
    ) -> None:
        self.store = store
        # Marks answers read for flows with `read_receipts` (after each commit).
        self.receipts = receipts
        self.flows = flows
        self.clock = clock
        self.keywords = tuple(opt_out_keywords)
        # The phone number id conversations without a sender go out from (settings):
        # replies are routed by the number they were sent to.
        self.default_sender = default_sender
        # Every configured number: a message to one of them never moves a conversation
        # on another (the default included).
        self.senders = frozenset(senders) | ({default_sender} if default_sender else set())
        self.batch_rows = batch_rows
        self.idle_poll_s = idle_poll_s
        self.retry_s = retry_s
        # How a refused message is retried (the dispatcher's settings, `refusals.py`).
        self.max_attempts = max_attempts
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self.stats = PassStats()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._taken: list[int] = []
        # Inbox rows holding a `failed` status that matched no message: first seen at.
        self._unmatched_since: dict[int, datetime] = {}
        # After a failed batch, rows up to this id go one at a time to isolate the culprit.
        self._single_until = 0

    def notify(self) -> None:
        """New rows were stored: process them now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="dripline-inbox-processor"
            )

    async def stop(self) -> None:
        """Finish the batch in progress, then stop."""
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def drain(self) -> PassStats:
        """Process every unprocessed row once, oldest first (tests and tools)."""
        total = PassStats()
        after = 0
        while True:
            stats = await self.process_batch(after)
            total.add(stats)
            if stats.rows == 0:
                return total
            after = stats.last_id

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        after = 0
        last_rescan = loop.time()
        delay_s = 0.5
        while not self._stop.is_set():
            try:
                stats = await self.process_batch(after)
                delay_s = 0.5
            except DatabaseUnavailable as exc:
                log.warning("webhook.processor_db_unavailable", error=str(exc)[:200])
                await self._sleep(delay_s)
                delay_s = min(delay_s * 2, 30.0)
                continue
            except _Conflict:
                continue  # the retry sees the other processor's rows as duplicates
            except TransientStoreError as exc:
                # A deadlock, serialization failure or timeout says nothing about the
                # rows: retry them (never mark one failed for it), after a short pause.
                log.warning("webhook.batch_retry", error=str(exc)[:200], rows=len(self._taken))
                await self._sleep(delay_s)
                delay_s = min(delay_s * 2, 30.0)
                continue
            except Exception:
                log.exception("webhook.batch_failed", rows=len(self._taken))
                await self._isolate()
                continue
            self.stats.add(stats)
            if stats.rows:
                after = stats.last_id
                continue
            self._wake.clear()
            await self._sleep(self.idle_poll_s)
            if loop.time() - last_rescan >= self.retry_s:
                # Rows left waiting (a leased conversation), or committed out of id order
                # behind this cursor, are picked up by a pass from the start.
                last_rescan = loop.time()
                after = 0

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _isolate(self) -> None:
        """A batch failed on something other than connectivity: retry its rows singly
        and mark the one that fails alone as errored, so one bad row never blocks."""
        taken = list(self._taken)
        if len(taken) == 1:
            await self._mark_failed(taken[0], "could not be applied (see the server log)")
            return
        if taken:
            self._single_until = max(taken)
        await self._sleep(0.1)

    async def _mark_failed(self, inbox_id: int, why: str) -> None:
        with contextlib.suppress(Exception):
            async with self.store.webhook_transaction() as tx:
                await tx.finish_inbox([(inbox_id, why)], [], self.clock.now())

    async def _apply_statuses(
        self,
        tx: WebhookTx,
        updates: list[StatusUpdate],
        status_rows: dict[str, set[int]],
        waiting: dict[int, str],
        stats: PassStats,
        now: datetime,
    ) -> None:
        """Apply the batch's statuses; a `failed` one drives its conversation
        (refusals.py). One whose conversation a dispatcher holds waits, status and all,
        so that the reaction is written with it."""
        refusals = await tx.refusals(_furthest(updates), now)
        held = {r.wamid for r in refusals if r.busy}
        for wamid in held:
            for row_id in status_rows.get(wamid, ()):
                waiting[row_id] = "waiting: the conversation is being sent to"
        sres = await tx.apply_statuses([u for u in updates if u.wamid not in held], now)
        stats.statuses_applied = sres.applied
        stats.statuses_unmatched = sres.unmatched
        for wamid in sres.busy:
            for row_id in status_rows.get(wamid, ()):
                waiting[row_id] = "waiting: a message row is locked by a dispatcher"
        # A status also names the user's WhatsApp ID: the only word of it when the send's
        # answer was lost. A conversation another transaction holds waits, status and
        # all (repeating a status changes nothing; the ID is learned on the retry).
        learn = wa_ids_to_learn(updates, sres.matched)
        if learn:
            held_convs = await tx.learn_wa_ids(learn)
            for wamid, (conv_id, _) in sres.matched.items():
                if conv_id in held_convs:
                    for row_id in status_rows.get(wamid, ()):
                        waiting[row_id] = "waiting: the conversation is being sent to"
        ready = [r for r in refusals if not r.busy and r.wamid not in sres.busy]
        lost = [u for u in _furthest(updates) if u.wamid in sres.unmatched_wamids]
        if lost:
            # A `sent` in this batch may just have given its row the wamid (by callback
            # id, which `failed` lacks): look again before giving up on them.
            again = await tx.refusals(lost, now)
            for wamid in {r.wamid for r in again if r.busy}:
                for row_id in status_rows.get(wamid, ()):
                    waiting[row_id] = "waiting: the conversation is being sent to"
            found = [r for r in again if not r.busy]
            if found:
                wamids = {r.wamid for r in found}
                await tx.apply_statuses([u for u in lost if u.wamid in wamids], now)
                ready += found
            unmatched = {u.wamid for u in lost} - {r.wamid for r in again}
            if unmatched and await tx.sends_in_flight():
                self._hold_unmatched_failures(unmatched, status_rows, waiting, now)
        if ready:
            rplan = plan_refusals(
                ready,
                self.flows,
                now,
                max_attempts=self.max_attempts,
                retry_base_s=self.retry_base_s,
                retry_cap_s=self.retry_cap_s,
            )
            await tx.requeue_messages(rplan.requeue, now)
            await tx.update_conversations(list(rplan.changes.values()), now)
            stats.refused_failed += rplan.failed
            stats.refused_fallbacks += rplan.fallbacks
            stats.refused_retries += rplan.retries

    def _hold_unmatched_failures(
        self,
        lost: set[str],
        status_rows: dict[str, set[int]],
        waiting: dict[int, str],
        now: datetime,
    ) -> None:
        """Leave a `failed` status that matched no message waiting for a while.

        Meta sends no `biz_opaque_callback_data` with `failed`, so a refusal reported
        before the dispatcher wrote the send's wamid matches nothing yet; dropping it
        would let the conversation go on as if the message had arrived. It is retried
        for UNMATCHED_FAILED_WAIT_S (from when this processor first saw it), then
        recorded as unmatched (a status for a message that is not ours). Only while
        some send is in flight: otherwise there is nothing it could still match.
        """
        for wamid in sorted(lost):
            for row_id in status_rows.get(wamid, ()):
                first = self._unmatched_since.setdefault(row_id, now)
                if (now - first).total_seconds() < UNMATCHED_FAILED_WAIT_S:
                    waiting[row_id] = "waiting: a failed status for a send not recorded yet"
                else:
                    self._unmatched_since.pop(row_id, None)

    async def process_batch(self, after_id: int = 0) -> PassStats:
        """Take up to `batch_rows` unprocessed rows with id > `after_id` and apply them in
        one transaction. Returns what it did (`rows` 0 when nothing was waiting)."""
        stats = PassStats()
        limit = 1 if after_id < self._single_until else self.batch_rows
        now = self.clock.now()
        self._taken = []
        receipts: list[ReadReceipt] = []
        async with self.store.webhook_transaction() as tx:
            rows = await tx.take_inbox(limit, after_id)
            if not rows:
                self._single_until = 0
                return stats
            self._taken = [r.id for r in rows]
            stats.rows = len(rows)
            stats.last_id = rows[-1].id
            notes: dict[int, list[str]] = {r.id: [] for r in rows}
            malformed: dict[int, str] = {}
            updates: list[StatusUpdate] = []
            status_rows: dict[str, set[int]] = {}
            events: dict[str, InboundEvent] = {}
            opt_outs: list[Suppression] = []
            value_errors: dict[int, list[NewWebhookError]] = {}
            for row in rows:
                try:
                    batch = parse_webhook(row.body)
                except InputError as exc:
                    malformed[row.id] = str(exc)[:500]
                    continue
                opt_outs += suppressions_from_statuses(batch.statuses, now)
                value_errors[row.id] = [
                    NewWebhookError(
                        code=e.error.code,
                        phone_number_id=e.phone_number_id,
                        account_id=e.account_id,
                        title=e.error.title or e.error.message,
                        details=e.error.details,
                        inbox_id=row.id,
                    )
                    for e in batch.errors
                ]
                for s in batch.statuses:
                    u = status_update(s, now)
                    if u is None:
                        continue
                    updates.append(u)
                    status_rows.setdefault(u.wamid, set()).add(row.id)
                for m in batch.messages:
                    e = inbound_event(m, row.id, now)
                    if e is None:
                        notes[row.id].append(f"message {m.id[:40]!r}: unusable sender or id")
                        continue
                    events.setdefault(e.wamid, e)  # the first copy in the batch wins
            stats.statuses = len(updates)
            waiting: dict[int, str] = {}
            # A `failed` status drives its conversation (refusals.py); one whose
            # conversation a dispatcher holds waits, status and all, so that the
            # reaction is written with it.
            await self._apply_statuses(tx, updates, status_rows, waiting, stats, now)
            await tx.add_suppressions(opt_outs)

            stats.inbound = len(events)
            existing = await tx.existing_inbound(list(events))
            stats.inbound_duplicate = len(existing)
            fresh = [e for e in events.values() if e.wamid not in existing]
            if fresh:
                phones = await tx.conversations_for([e.phone for e in fresh], now)
                keys = [(c.id, c.step) for pc in phones.values() for c in pc.active]
                sent = await tx.sent_steps(keys) if keys else set()
                quoted = sorted({e.context_id for e in fresh if e.context_id})
                replied = await tx.replied_to(quoted) if quoted else {}
                plan = plan_inbound(
                    fresh,
                    phones,
                    sent,
                    self.flows,
                    self.keywords,
                    now,
                    replied=replied,
                    default_sender=self.default_sender,
                    senders=self.senders,
                )
                inserted = await tx.insert_inbound(plan.inserts)
                # A concurrent processor recorded one first (same body, two rows): its
                # effects are that processor's; drop ours for that message.
                lost = {i.wamid for i in plan.inserts} - inserted
                if lost:
                    raise _Conflict(f"{len(lost)} inbound messages recorded concurrently")
                await tx.update_conversations(list(plan.changes.values()), now)
                await tx.add_suppressions(plan.suppressions)
                stats.advanced = plan.advanced
                stats.opted_out = plan.opted_out
                if self.receipts is not None:
                    flow_of = {c.id: c.flow for pc in phones.values() for c in pc.active}
                    receipts = receipts_for(plan, events, flow_of, self._wants_receipts)
                for e in plan.deferred:
                    waiting[e.inbox_id] = "waiting: the conversation is being sent to"
            done = [
                (r.id, malformed.get(r.id) or ("; ".join(notes[r.id])[:500] or None))
                for r in rows
                if r.id not in waiting
            ]
            # A row left waiting is processed again later: its errors are kept then.
            kept = [
                e for row_id, errs in value_errors.items() if row_id not in waiting for e in errs
            ]
            if kept:
                await tx.record_webhook_errors(kept, now)
                log.warning(
                    "value-level webhook errors",
                    codes=sorted({e.code for e in kept}),
                    count=len(kept),
                )
            stats.value_errors = len(kept)
            for r in rows:
                if r.id not in waiting:
                    self._unmatched_since.pop(r.id, None)
            stats.malformed = len(malformed)
            stats.waiting = len(waiting)
            await tx.finish_inbox(done, sorted(waiting.items()), now)
        if receipts and self.receipts is not None:
            self.receipts.submit(receipts)  # committed: the answers are ours for good
        return stats

    def _wants_receipts(self, flow: str) -> bool:
        try:
            return self.flows.get(flow).read_receipts
        except InputError:
            return False  # a flow that is gone


def _furthest(updates: Sequence[StatusUpdate]) -> list[StatusUpdate]:
    """The `failed` updates that are their wamid's furthest status in the batch: a
    `delivered` or `read` in the same batch proves the message arrived."""
    rank: dict[str, int] = {}
    for u in updates:
        rank[u.wamid] = max(rank.get(u.wamid, 0), STATUS_RANK[u.status])
    return [u for u in updates if u.status == "failed" and rank[u.wamid] == STATUS_RANK["failed"]]


class _Conflict(Exception):
    """Rolls the batch back; the retry sees the other processor's rows as duplicates."""
