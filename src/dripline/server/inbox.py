"""The inbox processor: applies stored webhook bodies to messages and conversations.

It takes unprocessed inbox rows in batches (oldest first) and applies each batch in one
transaction (`Store.webhook_transaction`); every statement is idempotent, so a body Meta
delivers twice, or a row processed again after a crash, changes nothing.

Statuses move a `messages` row forwards only (see `STATUS_RANK`); a `failed` status
stores Meta's error code and title, and the dispatcher's classification decides what
follows when it next claims the conversation. A status carrying our
`biz_opaque_callback_data` (the message row id) resolves a send whose response was lost.

Inbound messages (`plan_inbound`, pure):

- recorded once per wamid in `inbound_messages`; from a number with no conversation
  they are recorded with no conversation, never an error;
- every active conversation of the sender gets `last_inbound_at` (the 24-hour window is
  per user, not per conversation);
- an opt-out keyword (trimmed, case-insensitive) moves every active conversation of the
  sender to `opted_out`: nothing more is ever sent to them;
- otherwise the reply advances the sender's waiting conversation through
  `flow.on_reply`: one `awaiting_reply`, or one `pending`/`in_progress` whose current
  step waits for a reply and whose question already went out (a send the dispatcher
  recorded as `unknown` that a status webhook since resolved). A reply with no text (an image, a
  sticker) is recorded but does not advance the flow. Anything else is recorded against
  the step most recently asked and changes nothing.

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from dripline.clock import Clock
from dripline.errors import DatabaseUnavailable, InputError
from dripline.flows import FlowRegistry
from dripline.store import (
    ACTIVE_STATES,
    OPT_OUT_KIND,
    Conversation,
    ConversationChange,
    NewInbound,
    PhoneConversations,
    StatusUpdate,
    Store,
)
from dripline.whatsapp.webhooks import InboundMessage, StatusEvent, parse_webhook

__all__ = [
    "InboundEvent",
    "InboundPlan",
    "InboxProcessor",
    "PassStats",
    "inbound_event",
    "plan_inbound",
    "status_update",
]

log = structlog.get_logger(__name__)

_MAX_ID = 2**63 - 1
_INT32 = 2**31 - 1
_STATUS_MAP = {"sent": "sent", "delivered": "delivered", "read": "read", "played": "read"}


def _clean(text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    return text.replace("\x00", "")[:limit]


def _when(timestamp: int, now: datetime) -> datetime:
    # Meta sends Unix seconds; anything unrepresentable falls back to the processing time.
    if 0 < timestamp < 100_000_000_000:
        return datetime.fromtimestamp(timestamp, UTC)
    return now


def status_update(event: StatusEvent, now: datetime) -> StatusUpdate | None:
    """A parsed status as a store update; None for statuses that change no message
    (`deleted`, `warning`) and for ids no message of ours could have."""
    status = "failed" if event.status == "failed" else _STATUS_MAP.get(event.status)
    if status is None or not event.id or len(event.id) > 128 or "\x00" in event.id:
        return None
    message_id = None
    data = (event.biz_opaque_callback_data or "").strip()
    if data.isascii() and data.isdigit() and len(data) <= 19 and 0 < int(data) <= _MAX_ID:
        message_id = int(data)
    code = title = None
    if status == "failed" and event.errors:
        first = event.errors[0]
        code = first.code if -_INT32 <= first.code <= _INT32 else None
        title = _clean(first.title or first.message or first.details, 500)
    return StatusUpdate(
        wamid=event.id,
        status=status,
        at=_when(event.timestamp, now),
        message_id=message_id,
        error_code=code,
        error_title=title,
    )


@dataclass(frozen=True, slots=True)
class InboundEvent:
    """An inbound message ready to apply: `phone` in E.164, from inbox row `inbox_id`."""

    wamid: str
    phone: str
    kind: str
    text: str | None
    at: datetime
    inbox_id: int = 0


def inbound_event(msg: InboundMessage, inbox_id: int, now: datetime) -> InboundEvent | None:
    """A parsed inbound message as an event; None when its ids cannot be stored."""
    digits = msg.from_.strip().lstrip("+")
    if not (digits.isascii() and digits.isdigit() and 4 <= len(digits) <= 15):
        return None
    if not msg.id or len(msg.id) > 128 or "\x00" in msg.id:
        return None
    return InboundEvent(
        wamid=msg.id,
        phone="+" + digits,
        kind=(_clean(msg.type, 16) or "unknown"),
        text=_clean(msg.text, 8_192),
        at=_when(msg.timestamp, now),
        inbox_id=inbox_id,
    )


@dataclass(slots=True)
class InboundPlan:
    """What a batch of inbound messages does (see the module docstring)."""

    inserts: list[NewInbound] = field(default_factory=list)
    changes: dict[int, ConversationChange] = field(default_factory=dict)
    deferred: list[InboundEvent] = field(default_factory=list)
    advanced: int = 0
    opted_out: int = 0
    unknown_sender: int = 0


def _is_opt_out(text: str | None, keywords: Iterable[str]) -> bool:
    if text is None:
        return False
    said = text.strip().casefold()
    return bool(said) and any(said == k.strip().casefold() for k in keywords)


def _waits(row: Conversation, flows: FlowRegistry, sent: set[tuple[int, int]]) -> bool:
    """True when a reply now answers the conversation's current step."""
    if row.state == "awaiting_reply":
        return True
    if row.state not in ("pending", "in_progress") or (row.id, row.step) not in sent:
        return False
    try:
        flow: Any = flows.get(row.flow)
    except InputError:
        return False
    expects = getattr(flow, "expects_reply", None)
    try:
        return bool(expects(row)) if expects is not None else False
    except InputError:
        return False


def _change(row: Conversation) -> ConversationChange:
    return ConversationChange(
        id=row.id,
        state=row.state,
        step=row.step,
        purpose=row.purpose,
        next_send_at=row.next_send_at,
        attempts=row.attempts,
        last_error=None,
        last_inbound_at=row.last_inbound_at,
    )


def plan_inbound(
    events: Sequence[InboundEvent],
    phones: dict[str, PhoneConversations],
    sent: set[tuple[int, int]],
    flows: FlowRegistry,
    keywords: Iterable[str],
    now: datetime,
) -> InboundPlan:
    """Decide what new (never recorded) inbound messages do, in the order they were sent.

    Pure: reads the conversations as locked for this transaction and returns the rows
    to insert and the conversation changes to write.
    """
    keywords = tuple(keywords)
    plan = InboundPlan()
    originals = {row.id: row for pc in phones.values() for row in pc.active}
    rows = dict(originals)
    errors: dict[int, str | None] = {}
    for event in sorted(events, key=lambda e: e.at):
        pc = phones.get(event.phone)
        opt_out = _is_opt_out(event.text, keywords)
        kind = OPT_OUT_KIND if opt_out else event.kind
        if pc is not None and pc.busy:
            plan.deferred.append(event)
            continue
        active = [rows[r.id] for r in pc.active if rows[r.id].state in ACTIVE_STATES] if pc else []
        if not active:
            # No conversation waits for it: keep it with the newest conversation, if any.
            latest = (pc.active[-1].id if pc.active else pc.latest_id) if pc else None
            if latest is None:
                plan.unknown_sender += 1
            plan.inserts.append(
                NewInbound(event.wamid, latest, event.phone, None, kind, event.text, event.at)
            )
            continue
        for row in active:
            seen = row.last_inbound_at
            if seen is None or event.at > seen:
                rows[row.id] = dataclasses.replace(row, last_inbound_at=event.at)
        active = [rows[r.id] for r in active]
        if opt_out:
            for row in active:
                rows[row.id] = dataclasses.replace(
                    row, state="opted_out", next_send_at=None, attempts=0
                )
                errors[row.id] = f"opted out: the user sent {event.text!r}"
                plan.opted_out += 1
            primary = active[0]
            plan.inserts.append(
                NewInbound(event.wamid, primary.id, event.phone, None, kind, event.text, event.at)
            )
            continue
        waiting = [r for r in active if _waits(r, flows, sent)]
        # The conversation the user is answering: a waiting one, the most recently moved.
        primary = max(waiting or active, key=lambda r: (r.updated_at, r.id))
        step: int | None
        if waiting and event.text is not None and event.text.strip():
            step = primary.step
            try:
                t = flows.get(primary.flow).on_reply(primary, event.text, now)
            except InputError as exc:
                log.warning("webhook.reply_not_applied", conversation_id=primary.id, error=str(exc))
            else:
                rows[primary.id] = dataclasses.replace(
                    primary,
                    state=t.state,
                    step=t.step,
                    purpose=t.purpose,
                    next_send_at=t.next_send_at,
                    attempts=0,
                )
                errors[primary.id] = t.note
                plan.advanced += 1
        elif waiting:
            step = primary.step  # a photo or sticker answering: kept, flow not moved
        elif primary.state == "in_progress" and primary.step > 0:
            step = primary.step - 1  # after a step that did not wait: keep it with that one
        else:
            step = None
        plan.inserts.append(
            NewInbound(event.wamid, primary.id, event.phone, step, kind, event.text, event.at)
        )
    for row_id, row in rows.items():
        if row != originals[row_id]:
            change = _change(row)
            plan.changes[row_id] = dataclasses.replace(change, last_error=errors.get(row_id))
    return plan


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
        batch_rows: int = 200,
        idle_poll_s: float = 1.0,
        retry_s: float = 1.0,
    ) -> None:
        self.store = store
        self.flows = flows
        self.clock = clock
        self.keywords = tuple(opt_out_keywords)
        self.batch_rows = batch_rows
        self.idle_poll_s = idle_poll_s
        self.retry_s = retry_s
        self.stats = PassStats()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._taken: list[int] = []
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

    async def process_batch(self, after_id: int = 0) -> PassStats:
        """Take up to `batch_rows` unprocessed rows with id > `after_id` and apply them in
        one transaction. Returns what it did (`rows` 0 when nothing was waiting)."""
        stats = PassStats()
        limit = 1 if after_id < self._single_until else self.batch_rows
        now = self.clock.now()
        self._taken = []
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
            for row in rows:
                try:
                    batch = parse_webhook(row.body)
                except InputError as exc:
                    malformed[row.id] = str(exc)[:500]
                    continue
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
            sres = await tx.apply_statuses(updates, now)
            stats.statuses_applied = sres.applied
            stats.statuses_unmatched = sres.unmatched
            waiting: dict[int, str] = {}
            for wamid in sres.busy:
                for row_id in status_rows.get(wamid, ()):
                    waiting[row_id] = "waiting: a message row is locked by a dispatcher"

            stats.inbound = len(events)
            existing = await tx.existing_inbound(list(events))
            stats.inbound_duplicate = len(existing)
            fresh = [e for e in events.values() if e.wamid not in existing]
            if fresh:
                phones = await tx.conversations_for([e.phone for e in fresh], now)
                keys = [(c.id, c.step) for pc in phones.values() for c in pc.active]
                sent = await tx.sent_steps(keys) if keys else set()
                plan = plan_inbound(fresh, phones, sent, self.flows, self.keywords, now)
                inserted = await tx.insert_inbound(plan.inserts)
                # A concurrent processor recorded one first (same body, two rows): its
                # effects are that processor's; drop ours for that message.
                lost = {i.wamid for i in plan.inserts} - inserted
                if lost:
                    raise _Conflict(f"{len(lost)} inbound messages recorded concurrently")
                await tx.update_conversations(list(plan.changes.values()), now)
                stats.advanced = plan.advanced
                stats.opted_out = plan.opted_out
                for e in plan.deferred:
                    waiting[e.inbox_id] = "waiting: the conversation is being sent to"
            done = [
                (r.id, malformed.get(r.id) or ("; ".join(notes[r.id])[:500] or None))
                for r in rows
                if r.id not in waiting
            ]
            stats.malformed = len(malformed)
            stats.waiting = len(waiting)
            await tx.finish_inbox(done, sorted(waiting.items()), now)
        return stats


class _Conflict(Exception):
    """Rolls the batch back; the retry sees the other processor's rows as duplicates."""
