"""Status webhooks in the processing transaction: statuses applied to their messages
(forwards only: the rank rule is in each UPDATE's WHERE clause), failed statuses read
as refusals, and refused rows requeued. Split from `webhook.py` (the inbox and inbound
messages), which mixes `StatusTx` into its transaction class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, case, func, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from dripline.store.schema import conversations, messages
from dripline.store.sql.core import (
    CONVERSATION_COLUMNS,
    chunks,
    conversation_from_row,
    lock_conversations,
    ts,
)
from dripline.store.types import (
    ACTIVE_STATES,
    STATUS_RANK,
    Conversation,
)

if TYPE_CHECKING:
    from dripline.store.webhook_types import (
        Refusal,
        StatusResult,
        StatusUpdate,
    )

__all__ = ["StatusTx"]

C = conversations.c
M = messages.c

_SENT = ("sent", "delivered", "read")
# Statuses of a row whose send is (or may be) in flight: a wamid such a row holds is a
# refused earlier attempt's (rows are requeued with it), so a status for it is stale.
_IN_FLIGHT = ("sending", "unknown")
_NOT_SENT = ("pending", "sending", "unknown")


def _in_literal(column: Any, values: Sequence[str]) -> Any:
    # Literal constants, not an expanding IN: executemany cannot take one.
    return column.in_([literal_column(f"'{v}'") for v in values])


def _status_update_statement(target: str) -> Any:
    lower = [s for s, r in STATUS_RANK.items() if r < STATUS_RANK[target]]
    values: dict[str, Any] = {
        "status": target,
        # A row in flight may hold a refused earlier attempt's wamid (`requeue_messages`):
        # the status of the attempt in flight replaces it.
        "wamid": case(
            (_in_literal(M.status, _IN_FLIGHT), bindparam("b_wamid")),
            else_=func.coalesce(M.wamid, bindparam("b_wamid")),
        ),
        "status_at": ts("b_at"),
        "updated_at": ts("b_now"),
        # The first status webhook's time: the earliest evidence this send gives.
        "webhook_at": func.coalesce(M.webhook_at, ts("b_now")),
    }
    if target == "failed":
        values["error_code"] = bindparam("b_code")
        values["error_title"] = bindparam("b_title")
    else:
        # A send the API accepted: when the dispatcher lost the response (unknown), this
        # is the only record of when it went out.
        values["sent_at"] = func.coalesce(M.sent_at, ts("b_at"))
    return (
        update(messages)
        .where(M.id == bindparam("b_id"), _in_literal(M.status, lower))
        .values(**values)
    )


_STATUS_UPDATES = {target: _status_update_statement(target) for target in (*_SENT, "failed")}


def _rows_where(condition: Any) -> Any:
    """Message rows a status may be for, with their conversation's learned WhatsApp ID
    (`StatusResult.matched`): one join, no extra statement."""
    return (
        select(M.id, M.wamid, M.status, M.conversation_id, C.wa_id)
        .join_from(messages, conversations, C.id == M.conversation_id)
        .where(condition)
    )


# Only where none is known: an ID is never overwritten (`learn_wa_ids`).
_LEARN_WA_ID = (
    update(conversations)
    .where(C.id == bindparam("b_id"), C.wa_id.is_(None))
    .values(wa_id=bindparam("b_wa"))
)


class StatusTx:
    """The status statements of `SqlWebhookTx` (which sets `_conn` and `_pg`)."""

    _conn: AsyncConnection
    _pg: bool

    # statuses --------------------------------------------------------------
    async def apply_statuses(self, updates: Sequence[StatusUpdate], now: datetime) -> StatusResult:
        """The rank rule is in each UPDATE's WHERE clause, so a concurrent writer cannot
        be overtaken; PostgreSQL skips rows another transaction holds (busy)."""
        from dripline.store.webhook_types import StatusResult

        if not updates:
            return StatusResult(0, 0, 0, frozenset())
        wamids = sorted({u.wamid for u in updates})
        by_wamid: dict[str, tuple[int, str]] = {}
        # Each row's conversation and its wa_id (`StatusResult.matched`).
        conv_of: dict[int, tuple[int, str | None]] = {}
        for chunk in chunks(wamids):
            rows = await self._conn.execute(_rows_where(M.wamid.in_(list(chunk))))
            for r in rows:
                by_wamid[r.wamid] = (r.id, r.status)
                conv_of[r.id] = (r.conversation_id, r.wa_id)
        ids = sorted({u.message_id for u in updates if u.wamid not in by_wamid and u.message_id})
        by_id: dict[int, tuple[str | None, str]] = {}
        for id_chunk in chunks(ids):
            rows = await self._conn.execute(_rows_where(M.id.in_(list(id_chunk))))
            for r in rows:
                by_id[r.id] = (r.wamid, r.status)
                conv_of[r.id] = (r.conversation_id, r.wa_id)

        # The furthest status per row in this batch (a batch may hold sent+delivered+read).
        best: dict[int, StatusUpdate] = {}
        matched: dict[str, tuple[int, str | None]] = {}
        current: dict[int, str] = {}
        wamids_of: dict[int, set[str]] = {}
        unmatched = 0
        lost: set[str] = set()
        stale = 0
        for u in updates:
            row_id: int | None = None
            if u.wamid in by_wamid:
                row_id, status = by_wamid[u.wamid]
                if status in _NOT_SENT:
                    stale += 1  # a refused earlier attempt's status: see _IN_FLIGHT
                    continue
            elif u.message_id in by_id:
                assert u.message_id is not None
                row_wamid, status = by_id[u.message_id]
                if row_wamid in (None, u.wamid) or status in _IN_FLIGHT:
                    row_id = u.message_id
            if row_id is None:
                unmatched += 1
                lost.add(u.wamid)
                continue
            current[row_id] = status
            matched[u.wamid] = conv_of[row_id]
            wamids_of.setdefault(row_id, set()).add(u.wamid)
            prev = best.get(row_id)
            if prev is None or STATUS_RANK[u.status] > STATUS_RANK[prev.status]:
                best[row_id] = u

        busy_ids: set[int] = set()
        targets = sorted(
            i for i, u in best.items() if STATUS_RANK[u.status] > STATUS_RANK[current[i]]
        )
        if self._pg and targets:
            # Lock the rows, reading each one's status again: FOR UPDATE returns the
            # latest committed version, and from here until commit no one else can move
            # it, so each UPDATE below matches exactly the rows still behind their status.
            locked: set[int] = set()
            for id_chunk in chunks(targets):
                rows = await self._conn.execute(
                    select(M.id, M.status)
                    .where(M.id.in_(list(id_chunk)))
                    .order_by(M.id)
                    .with_for_update(skip_locked=True)
                )
                for r in rows:
                    locked.add(r.id)
                    current[r.id] = r.status
            busy_ids = set(targets) - locked
            targets = [
                i
                for i in targets
                if i in locked and STATUS_RANK[best[i].status] > STATUS_RANK[current[i]]
            ]
        applied = 0
        for target, stmt in _STATUS_UPDATES.items():
            params = [
                {
                    "b_id": i,
                    "b_wamid": best[i].wamid,
                    "b_at": best[i].at,
                    "b_now": now,
                    "b_code": best[i].error_code,
                    "b_title": best[i].error_title,
                }
                for i in targets
                if best[i].status == target and i not in busy_ids
            ]
            if params:
                result = await self._conn.execute(stmt, params)
                # asyncpg's executemany reports no rowcount (-1). On PostgreSQL every row
                # here is locked above with its status behind the target, so each
                # parameter set updates exactly its row; SQLite counts them itself.
                applied += result.rowcount if result.rowcount >= 0 else len(params)
        busy = frozenset(w for i in busy_ids for w in wamids_of[i])
        return StatusResult(
            applied,
            len(best) - applied - len(busy_ids) + stale,
            unmatched,
            busy,
            frozenset(lost),
            matched,
        )

    async def refusals(self, updates: Sequence[StatusUpdate], now: datetime) -> list[Refusal]:
        from dripline.store.webhook_types import Refusal

        failed = [u for u in updates if u.status == "failed"]
        if not failed:
            return []
        lower = [s for s, r in STATUS_RANK.items() if r < STATUS_RANK["failed"]]
        cols = (M.id, M.wamid, M.conversation_id, M.step, M.purpose, M.attempts, M.status)
        by_wamid: dict[str, Any] = {}
        for chunk in chunks(sorted({u.wamid for u in failed})):
            for r in await self._conn.execute(select(*cols).where(M.wamid.in_(list(chunk)))):
                by_wamid[r.wamid] = r
        ids = sorted({u.message_id for u in failed if u.wamid not in by_wamid and u.message_id})
        by_id: dict[int, Any] = {}
        for id_chunk in chunks(ids):
            for r in await self._conn.execute(select(*cols).where(M.id.in_(list(id_chunk)))):
                by_id[r.id] = r
        found: dict[int, tuple[StatusUpdate, Any]] = {}
        for u in failed:
            row = by_wamid.get(u.wamid)
            if row is not None and row.status in _NOT_SENT:
                continue  # a refused earlier attempt's status
            if row is None and u.message_id in by_id:
                candidate = by_id[u.message_id]
                if candidate.wamid in (None, u.wamid) or candidate.status in _IN_FLIGHT:
                    row = candidate
            if row is not None and row.status in lower:
                found.setdefault(row.id, (u, row))
        if not found:
            return []
        conv_ids = sorted({row.conversation_id for _, row in found.values()})
        convs: dict[int, Conversation] = {}
        for id_chunk in chunks(conv_ids):
            stmt = select(*CONVERSATION_COLUMNS).where(C.id.in_(list(id_chunk))).order_by(C.id)
            if self._pg:
                stmt = stmt.with_for_update(skip_locked=True)
            for r in await self._conn.execute(stmt):
                convs[r.id] = conversation_from_row(r)
        if self._pg:
            # Rows SKIP LOCKED left out are held by another transaction: busy.
            missing = [cid for cid in conv_ids if cid not in convs]
            for id_chunk in chunks(missing):
                for r in await self._conn.execute(
                    select(*CONVERSATION_COLUMNS).where(C.id.in_(list(id_chunk)))
                ):
                    convs[r.id] = conversation_from_row(r)
            locked_ids = set(conv_ids) - set(missing)
        else:
            locked_ids = set(conv_ids)
        superseded = await self._superseded(
            [c for c in convs.values() if c.state not in ACTIVE_STATES]
        )
        out: list[Refusal] = []
        for message_id in sorted(found):
            u, row = found[message_id]
            conv = convs.get(row.conversation_id)
            if conv is None:
                continue
            leased = conv.lease_expires_at is not None and conv.lease_expires_at >= now
            out.append(
                Refusal(
                    wamid=u.wamid,
                    message_id=message_id,
                    step=row.step,
                    purpose=row.purpose,
                    attempts=row.attempts,
                    error_code=u.error_code,
                    error_title=u.error_title,
                    conversation=conv,
                    busy=leased or conv.id not in locked_ids,
                    superseded=conv.id in superseded,
                )
            )
        return out

    async def _superseded(self, ended: Sequence[Conversation]) -> set[int]:
        """The ids of `ended` conversations whose phone and flow have an active one now
        (by phone, `ix_conversations_phone`; the flow is compared here)."""
        keys = {(c.phone, c.flow) for c in ended}
        active: set[tuple[str, str]] = set()
        for chunk in chunks(sorted({phone for phone, _ in keys})):
            stmt = select(C.phone, C.flow).where(
                C.phone.in_(list(chunk)), _in_literal(C.state, ACTIVE_STATES)
            )
            active.update((r.phone, r.flow) for r in await self._conn.execute(stmt))
        return {c.id for c in ended if (c.phone, c.flow) in active}

    async def sends_in_flight(self) -> bool:
        row = await self._conn.execute(
            select(M.id).where(_in_literal(M.status, ("sending", "unknown"))).limit(1)
        )
        return row.first() is not None

    async def learn_wa_ids(self, wa_ids: Mapping[int, str]) -> set[int]:
        """PostgreSQL locks the conversations first, skipping those another transaction
        holds (a dispatcher recording results): waiting could deadlock (see webhook.py)."""
        wanted = sorted(wa_ids)
        if not wanted:
            return set()
        busy: set[int] = set()
        if self._pg:
            locked = await lock_conversations(self._conn, wanted)
            # A conversation that is gone is not busy: it has nothing left to learn.
            for id_chunk in chunks([i for i in wanted if i not in locked]):
                rows = await self._conn.execute(select(C.id).where(C.id.in_(list(id_chunk))))
                busy.update(r.id for r in rows)
            wanted = [i for i in wanted if i in locked]
        if wanted:
            await self._conn.execute(_LEARN_WA_ID, [{"b_id": i, "b_wa": wa_ids[i]} for i in wanted])
        return busy

    async def requeue_messages(self, ids: Sequence[int], now: datetime) -> int:
        changed = 0
        for chunk in chunks(sorted(set(ids))):
            result = await self._conn.execute(
                update(messages)
                .where(M.id.in_(list(chunk)), M.status == "failed")
                .values(status="pending", sent_at=None, webhook_at=None, updated_at=now)
            )
            changed += max(result.rowcount, 0)
        return changed
