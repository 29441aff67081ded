"""PostgreSQL's claim: the statement that leases due conversations, and the rows it
brings back as conversations (bench/README.md, "Issue 14, claim10m" and "pgclaim").
`postgres_hot.py` runs it on the lane."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
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

# What a claimed row brings back (bench/README.md, "Issue 14, pgclaim"): a conversation's
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

    Measured on 10,000,000 conversations (bench/README.md, "Issue 14, claim10m"):
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


def claimed_conversations(
    rows: Sequence[Any], worker_id: str, until: datetime
) -> list[Conversation]:
    """The claim's rows (`CLAIM_COLUMNS`, earliest due first; a `claim`'s rows may end
    in its next due time) as conversations leased to `worker_id` until `until`."""
    times: dict[int, datetime] = {}  # one datetime per distinct time in this claim
    out = []
    for r in rows:
        cid, phone, flow, step, purpose, state, due, attempts, inbound = r[:9]
        error, name, tz, sender, fields, created, updated, wa_id = r[9:17]
        due_at = inbound_at = None
        if due is not None:
            due_at = times.get(due) or times.setdefault(due, _EPOCH + timedelta(0, 0, due))
        if inbound is not None:
            inbound_at = times.get(inbound) or times.setdefault(
                inbound, _EPOCH + timedelta(0, 0, inbound)
            )
        created_at = times.get(created) or times.setdefault(
            created, _EPOCH + timedelta(0, 0, created)
        )
        updated_at = times.get(updated) or times.setdefault(
            updated, _EPOCH + timedelta(0, 0, updated)
        )
        data = json.loads(fields) if fields is not None else {}  # `json` comes as text
        out.append(
            Conversation(
                cid,
                phone,
                flow,
                step,
                purpose,
                state,
                due_at,
                attempts,
                worker_id,
                until,
                inbound_at,
                error,
                name,
                tz,
                sender,
                data,
                created_at,
                updated_at,
                wa_id,
            )
        )
    return out
