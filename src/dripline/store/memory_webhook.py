"""The in-memory store's webhook-processing transaction (`WebhookTx`).

Mirrors `store/sql/webhook.py` statement by statement. It holds the database's write
lock from begin to commit (SQLite's BEGIN IMMEDIATE), so no other writer runs inside
it and no row is ever locked by another transaction: `busy` means a live lease only,
as on SQLite. Its changes sit in a `View` that readers do not see until commit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from dripline.store.base import WebhookTx
from dripline.store.identity import RowsByUser
from dripline.store.memory_tables import View, utc, utc_or_none
from dripline.store.report_types import NewWebhookError
from dripline.store.types import (
    ACTIVE_STATES,
    STATUS_RANK,
    ConversationChange,
    Inbound,
    InboxRow,
    Message,
    NewInbound,
    PhoneConversations,
    Refusal,
    StatusResult,
    StatusUpdate,
    Suppression,
)

__all__ = ["MemoryWebhookTx"]

_SENT = ("sent", "delivered", "read")
_IN_FLIGHT = ("sending", "unknown")  # see store/sql/webhook.py
_NOT_SENT = ("pending", "sending", "unknown")


class MemoryWebhookTx(WebhookTx):
    """One processing transaction over `view`; `enter(name)` is the store's hook."""

    def __init__(self, view: View, enter: Callable[[str], Awaitable[None]]) -> None:
        self._v = view
        self._enter = enter
        self.wake_at: datetime | None = None

    async def take_inbox(self, limit: int, after_id: int = 0) -> list[InboxRow]:
        await self._enter("webhook_transaction.take_inbox")
        rows: list[InboxRow] = []
        for r in self._v.inbox.values():
            if len(rows) >= limit:
                break
            if r.processed_at is None and r.id > after_id:
                rows.append(InboxRow(r.id, r.body))
        return rows

    async def finish_inbox(
        self,
        done: Sequence[tuple[int, str | None]],
        waiting: Sequence[tuple[int, str]],
        now: datetime,
    ) -> None:
        await self._enter("webhook_transaction.finish_inbox")
        now = utc(now)
        changes = [(i, now, e) for i, e in done] + [(i, None, n[:500]) for i, n in waiting]
        for row_id, processed_at, error in changes:
            row = self._v.inbox.get(row_id)
            if row is not None:
                self._v.inbox[row_id] = replace(row, processed_at=processed_at, error=error)

    async def apply_statuses(self, updates: Sequence[StatusUpdate], now: datetime) -> StatusResult:
        await self._enter("webhook_transaction.apply_statuses")
        now = utc(now)
        if not updates:
            return StatusResult(0, 0, 0, frozenset())
        v = self._v
        wamids = {u.wamid for u in updates}
        by_wamid: dict[str, int] = {}
        for m in v.messages.values():  # by id: with two rows for one wamid, the last wins
            if m.wamid is not None and m.wamid in wamids:
                by_wamid[m.wamid] = m.id
        # The furthest status per row in this batch (a batch may hold sent+delivered+read).
        best: dict[int, StatusUpdate] = {}
        matched: dict[str, tuple[int, str | None]] = {}
        unmatched = 0
        stale = 0
        lost: set[str] = set()
        for u in updates:
            row_id: int | None = None
            if u.wamid in by_wamid:
                row_id = by_wamid[u.wamid]
                held = v.messages.get(row_id)
                if held is not None and held.status in _NOT_SENT:
                    stale += 1  # a refused earlier attempt's status
                    continue
            elif u.message_id:
                row = v.messages.get(u.message_id)
                if row is not None and (row.wamid in (None, u.wamid) or row.status in _IN_FLIGHT):
                    row_id = row.id
            if row_id is None:
                unmatched += 1
                lost.add(u.wamid)
                continue
            msg = v.messages.get(row_id)
            owner = v.conversations.get(msg.conversation_id) if msg is not None else None
            if owner is not None:  # a row always has one (a foreign key on SQL)
                matched[u.wamid] = (owner.id, owner.wa_id)
            prev = best.get(row_id)
            if prev is None or STATUS_RANK[u.status] > STATUS_RANK[prev.status]:
                best[row_id] = u
        applied = 0
        for row_id in sorted(best):
            u = best[row_id]
            row = v.messages.get(row_id)
            # Only ever forwards: a repeat or a lower rank is `unchanged`.
            if row is None or STATUS_RANK[row.status] >= STATUS_RANK[u.status]:
                continue
            at = utc(u.at)
            if u.status == "failed":
                v.change_message(
                    row,
                    status=u.status,
                    wamid=_wamid(row, u),
                    error_code=u.error_code,
                    error_title=u.error_title,
                    status_at=at,
                    updated_at=now,
                    webhook_at=row.webhook_at or now,
                )
            else:
                v.change_message(
                    row,
                    status=u.status,
                    wamid=_wamid(row, u),
                    sent_at=row.sent_at if row.sent_at is not None else at,
                    status_at=at,
                    updated_at=now,
                    webhook_at=row.webhook_at or now,
                )
            applied += 1
        return StatusResult(
            applied, len(best) - applied + stale, unmatched, frozenset(), frozenset(lost), matched
        )

    async def refusals(self, updates: Sequence[StatusUpdate], now: datetime) -> list[Refusal]:
        await self._enter("webhook_transaction.refusals")
        now = utc(now)
        v = self._v
        failed = [u for u in updates if u.status == "failed"]
        if not failed:
            return []
        wamids = {u.wamid for u in failed}
        by_wamid: dict[str, int] = {}
        for m in v.messages.values():
            if m.wamid is not None and m.wamid in wamids:
                by_wamid[m.wamid] = m.id
        found: dict[int, StatusUpdate] = {}
        for u in failed:
            row_id: int | None = by_wamid.get(u.wamid)
            if row_id is not None:
                held = v.messages.get(row_id)
                if held is not None and held.status in _NOT_SENT:
                    continue  # a refused earlier attempt's status
            elif u.message_id:
                row = v.messages.get(u.message_id)
                if row is not None and (row.wamid in (None, u.wamid) or row.status in _IN_FLIGHT):
                    row_id = row.id
            if row_id is not None:
                found.setdefault(row_id, u)
        out: list[Refusal] = []
        for row_id in sorted(found):
            u = found[row_id]
            msg = v.messages.get(row_id)
            conv = v.conversations.get(msg.conversation_id) if msg is not None else None
            if msg is None or conv is None or STATUS_RANK[msg.status] >= STATUS_RANK["failed"]:
                continue
            leased = conv.lease_expires_at is not None and conv.lease_expires_at >= now
            out.append(
                Refusal(
                    wamid=u.wamid,
                    message_id=row_id,
                    step=msg.step,
                    purpose=msg.purpose,
                    attempts=msg.attempts,
                    error_code=u.error_code,
                    error_title=u.error_title,
                    conversation=conv,
                    busy=leased,
                    superseded=v.active_keys.get((conv.phone, conv.flow)) not in (None, conv.id),
                )
            )
        return out

    async def sends_in_flight(self) -> bool:
        await self._enter("webhook_transaction.sends_in_flight")
        return any(m.status in _IN_FLIGHT for m in self._v.messages.values())

    async def learn_wa_ids(self, wa_ids: Mapping[int, str]) -> set[int]:
        await self._enter("webhook_transaction.learn_wa_ids")
        for conv_id in sorted(wa_ids):
            row = self._v.conversations.get(conv_id)
            if row is not None and row.wa_id is None:  # never overwrite a known one
                self._v.change_conversation(row, wa_id=wa_ids[conv_id])
        return set()  # no row is ever held by another transaction here

    async def requeue_messages(self, ids: Sequence[int], now: datetime) -> int:
        await self._enter("webhook_transaction.requeue_messages")
        now = utc(now)
        changed = 0
        for row_id in sorted(set(ids)):
            row = self._v.messages.get(row_id)
            if row is not None and row.status == "failed":
                self._v.change_message(
                    row, status="pending", sent_at=None, webhook_at=None, updated_at=now
                )
                changed += 1
        return changed

    async def existing_inbound(self, wamids: Sequence[str]) -> set[str]:
        await self._enter("webhook_transaction.existing_inbound")
        return {w for w in wamids if w in self._v.inbound_wamids}

    async def conversations_for(
        self, phones: Sequence[str], now: datetime
    ) -> dict[str, PhoneConversations]:
        await self._enter("webhook_transaction.conversations_for")
        now = utc(now)
        wanted = sorted(set(phones))
        rows_of = RowsByUser(self._v.conversations.values(), lambda c: (c.phone, c.wa_id))
        out: dict[str, PhoneConversations] = {}
        for p in wanted:
            mine = sorted(rows_of.of(p), key=lambda c: c.id)
            active = tuple(c for c in mine if c.state in ACTIVE_STATES)
            busy = any(c.lease_expires_at is not None and c.lease_expires_at >= now for c in active)
            out[p] = PhoneConversations(active, busy, max((c.id for c in mine), default=None))
        return out

    async def replied_to(self, wamids: Sequence[str]) -> dict[str, int]:
        await self._enter("webhook_transaction.replied_to")
        wanted = set(wamids)
        return {
            m.wamid: m.conversation_id
            for m in self._v.messages.values()
            if m.wamid is not None and m.wamid in wanted
        }

    async def add_suppressions(self, rows: Sequence[Suppression]) -> int:
        await self._enter("webhook_transaction.add_suppressions")
        added = 0
        for r in rows:
            key = (r.sender, r.phone)
            if key not in self._v.suppressions:  # ON CONFLICT DO NOTHING: the first stays
                self._v.suppressions[key] = replace(r, created_at=utc(r.created_at))
                added += 1
        return added

    async def sent_steps(self, keys: Sequence[tuple[int, int]]) -> set[tuple[int, int]]:
        await self._enter("webhook_transaction.sent_steps")
        wanted = set(keys)
        return {
            (m.conversation_id, m.step)
            for m in self._v.messages.values()
            if (m.conversation_id, m.step) in wanted
            and m.purpose in ("question", "fallback")
            and m.status in _SENT
        }

    async def insert_inbound(self, rows: Sequence[NewInbound]) -> set[str]:
        await self._enter("webhook_transaction.insert_inbound")
        v = self._v
        inserted: set[str] = set()
        for r in rows:
            if r.wamid in v.inbound_wamids:
                continue  # ON CONFLICT (wamid) DO NOTHING
            row = Inbound(
                id=v.next_id("inbound_messages"),
                wamid=r.wamid,
                conversation_id=r.conversation_id,
                phone=r.phone,
                step=r.step,
                kind=r.kind,
                body=r.body,
                received_at=utc(r.received_at),
                answer_kind=r.answer_kind,
                answer_option=r.answer_option,
                answer_number=r.answer_number,
                valid=r.valid,
                sender=r.sender,
            )
            v.add_inbound(row)
            inserted.add(r.wamid)
        return inserted

    async def update_conversations(
        self, changes: Sequence[ConversationChange], now: datetime
    ) -> int:
        await self._enter("webhook_transaction.update_conversations")
        now = utc(now)
        written = 0
        for ch in sorted(changes, key=lambda ch: ch.id):
            row = self._v.conversations.get(ch.id)
            if row is None:
                continue
            self._v.change_conversation(
                row,
                state=ch.state,
                step=ch.step,
                purpose=ch.purpose,
                next_send_at=utc_or_none(ch.next_send_at),
                attempts=ch.attempts,
                last_error=ch.last_error,
                last_inbound_at=utc_or_none(ch.last_inbound_at),
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now,
            )
            written += 1
        due = [ch.next_send_at for ch in changes if ch.next_send_at is not None]
        if due:
            earliest = min(due)
            self.wake_at = earliest if self.wake_at is None else min(self.wake_at, earliest)
        return written

    async def record_webhook_errors(self, rows: Sequence[NewWebhookError], now: datetime) -> None:
        await self._enter("webhook_transaction.record_webhook_errors")
        now = utc(now)
        for row in rows:
            self._v.webhook_errors[self._v.next_id("webhook_errors")] = (now, row)


def _wamid(row: Message, u: StatusUpdate) -> str:
    """The row's wamid after a status: a row in flight may hold a refused earlier
    attempt's, which the status of the attempt in flight replaces."""
    if row.wamid is None or row.status in _IN_FLIGHT:
        return u.wamid
    return row.wamid
