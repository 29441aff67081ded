"""PostgreSQL's claim: the statement that leases due conversations, and the rows it
brings back as conversations (bench/journal.md, "Issue 14, claim10m" and "pgclaim").
`postgres_hot.py` runs it on the lane."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    Update,
    any_,
    bindparam,
    cast,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy import true as sql_true

from dripline.store.schema import UTCDateTime, conversations
from dripline.store.sql.core import CONVERSATION_COLUMNS, ts
from dripline.store.types import Conversation

__all__ = ["CLAIM_COLUMNS", "claim_update", "claimed_conversations"]

C = conversations.c

# What a claimed row brings back (bench/journal.md, "Issue 14, pgclaim"): a conversation's
# columns but its lease, which is the claim's own parameters (`claimed_conversations`
# fills it in), with the times as integer microseconds since 1970: asyncpg's
# timestamptz decoding was the largest part of reading a claim's rows (about 0.5 us a
# value, four a row), and one claim's rows mostly share their times (one enrollment, one
# batch of records), which `claimed_conversations` turns into one datetime each.
_LEASE = ("lease_owner", "lease_expires_at")
CLAIM_COLUMNS = tuple(c for c in CONVERSATION_COLUMNS if c.name not in _LEASE)
# The order `claimed_conversations` unpacks them in; checked at import.
_CLAIM_ORDER = (
    "id", "phone", "flow", "step", "purpose", "state", "next_send_at", "attempts",
    "last_inbound_at", "last_error", "name", "timezone", "sender", "fields", "created_at",
    "updated_at", "wa_id",
)  # fmt: skip
if tuple(c.name for c in CLAIM_COLUMNS) != _CLAIM_ORDER:  # pragma: no cover
    raise RuntimeError("conversations' columns changed: update postgres_hot._CLAIM_ORDER")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DUE_ORDER = attrgetter("next_send_at", "id")


def _returned(col: Any) -> ColumnElement[Any]:
    if isinstance(col.type, UTCDateTime):
        # date_part's float8, not EXTRACT's numeric: a quarter of the server's time for
        # the same bigint (the product rounds to EXTRACT's exact microseconds: checked on
        # 2,000,000 random times from 1970 to 2096, and every microsecond of 2 s).
        epoch = func.date_part(literal_column("'epoch'"), col)
        return cast(epoch * literal_column("1000000"), BigInteger).label(col.name)
    return col  # type: ignore[no-any-return]


def claim_update(due: Select[Any]) -> Update:
    """PostgreSQL's claim: lease the rows of `due` (ids, earliest first, with its LIMIT).

    Measured on 10,000,000 conversations (bench/journal.md, "Issue 14, claim10m"):
    - The ids come as one array, `id = ANY(ARRAY(...))`, not `id IN (...)`: the array is
      an InitPlan and the update an index scan of the primary key, where the semi-join
      made the planner weigh joins (0.36-0.41 -> 0.15-0.22 ms of planning per claim,
      which runs with a custom plan each time) and add a hash aggregate.
    - `FOR NO KEY UPDATE`, the lock the UPDATE itself takes (no key column changes):
      claimers still skip each other's rows, and an insert referencing a row (its
      foreign-key check takes KEY SHARE) neither waits for a claim nor hides the row
      from one.
    - The claim commits without waiting for its WAL to reach the disk
      (`synchronous_commit = off` for its own transaction, set by the statement itself:
      no extra round trip): that flush was 0.6-0.8 ms of each claim, 2.5-3.7 ms under
      load. Losing a claim in a server crash leaves its rows unleased, and nothing
      the dispatcher does with them can be durable without a later synchronous commit
      (the reservation checks the lease, in its own transaction), whose flush writes the
      claim's WAL first. So a crash before that loses only the claim, never a send's
      record, and no row is ever sent twice for it.
    """
    ids = due.with_for_update(skip_locked=True, key_share=True)
    # A one-row FROM item, so the setting is made once, when the update runs.
    setting = [literal_column("'synchronous_commit'"), literal_column("'off'"), sql_true()]
    cfg = select(func.set_config(*setting).label("sc")).subquery("cfg")
    return (
        update(conversations)
        .where(C.id == any_(func.array(ids.scalar_subquery())), cfg.c.sc.is_not(None))
        .values(lease_owner=bindparam("b_w"), lease_expires_at=ts("b_until"))
        .returning(*(_returned(c) for c in CLAIM_COLUMNS))
    )


# `Conversation`'s fields set one by one, as its frozen dataclass `__init__` does, but
# by each slot's own setter: 0.11 against 0.17 ms a claim of 100 (measured alone, both
# with the times below). By name, so the fields' order does not matter; all of them.
_NEW = object.__new__
_FIELD_NAMES = (
    "id", "phone", "flow", "step", "purpose", "state", "next_send_at", "attempts",
    "lease_owner", "lease_expires_at", "last_inbound_at", "last_error", "name", "timezone",
    "sender", "fields", "created_at", "updated_at", "wa_id",
)  # fmt: skip
if set(_FIELD_NAMES) != set(Conversation.__slots__):  # pragma: no cover
    raise RuntimeError("Conversation's fields changed: update postgres_claim._FIELD_NAMES")
(
    _id, _phone, _flow, _step, _purpose, _state, _next_send_at, _attempts, _lease_owner,
    _lease_expires_at, _last_inbound_at, _last_error, _name, _timezone, _sender, _fields,
    _created_at, _updated_at, _wa_id,
) = (getattr(Conversation, n).__set__ for n in _FIELD_NAMES)  # fmt: skip


def claimed_conversations(
    rows: Sequence[Any], worker_id: str, until: datetime
) -> list[Conversation]:
    """The claim's rows (`CLAIM_COLUMNS`; a `claim`'s rows end in its next due time) as
    conversations leased to `worker_id` until `until`, earliest due first."""
    times: dict[int, datetime] = {}  # one datetime per distinct time in this claim
    get, keep, epoch, us = times.get, times.setdefault, _EPOCH, timedelta
    out = []
    for r in rows:
        cid, phone, flow, step, purpose, state, due, attempts, inbound = r[:9]
        error, name, tz, sender, fields, created, updated, wa_id = r[9:17]
        c = _NEW(Conversation)
        _id(c, cid)
        _phone(c, phone)
        _flow(c, flow)
        _step(c, step)
        _purpose(c, purpose)
        _state(c, state)
        _next_send_at(c, None if due is None else get(due) or keep(due, epoch + us(0, 0, due)))
        _attempts(c, attempts)
        _lease_owner(c, worker_id)
        _lease_expires_at(c, until)
        at = None if inbound is None else get(inbound) or keep(inbound, epoch + us(0, 0, inbound))
        _last_inbound_at(c, at)
        _last_error(c, error)
        _name(c, name)
        _timezone(c, tz)
        _sender(c, sender)
        _fields(c, json.loads(fields) if fields is not None else {})  # `json` comes as text
        _created_at(c, get(created) or keep(created, epoch + us(0, 0, created)))
        _updated_at(c, get(updated) or keep(updated, epoch + us(0, 0, updated)))
        _wa_id(c, wa_id)
        out.append(c)
    # Sorted here, not by the server: an ORDER BY needs claim_due's statement wrapped in
    # a CTE, which planned 0.02-0.03 ms slower (3 alternating sets of 50 EXPLAINs); this
    # sort of 100 costs under 0.01 ms.
    out.sort(key=_DUE_ORDER)
    return out
