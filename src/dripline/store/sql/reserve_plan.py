"""The reservation rules (`Store.reserve`) over what a transaction read, apart from its
queries: SQLAlchemy's path (`dispatch.py`) and SQLite's lane (`sqlite_hot.py`) read the
same two things (the conversations this worker leases, the message rows already there)
and write what `plan` returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from dripline.store.types import LEASE_LOST, Reservation, ReservationResult

__all__ = ["INSERT_COLUMNS", "Key", "Prior", "ReservePlan", "key", "plan", "wanted"]

Key = tuple[int, int, str]  # (conversation id, step, purpose)

# The columns of a planned insert (`ReservePlan.inserts`), in the order the lanes'
# statements take them.
INSERT_COLUMNS = (
    "conversation_id", "step", "purpose", "sender", "status", "attempts", "due_at",
    "status_at", "created_at", "updated_at", "reserved_at",
)  # fmt: skip


class Prior(NamedTuple):
    """A message row already there for a key, as the lanes read it (`reserved_at`:
    reserved_at, else created_at)."""

    id: int
    conversation_id: int
    step: int
    purpose: str
    status: str
    attempts: int
    wamid: str | None
    error_code: int | None
    status_at: datetime | None
    reserved_at: datetime | None


def key(item: Reservation) -> Key:
    return (item.conversation_id, item.step, item.purpose)


def wanted(items: Sequence[Reservation], owned: set[int]) -> set[Key]:
    """The keys whose prior message rows the plan needs: those of leased conversations."""
    return {key(i) for i in items if i.conversation_id in owned}


@dataclass
class ReservePlan:
    """Rows to insert (`sending`, attempts 1), rows to update, and the answers known
    already (an insert's comes from its RETURNING)."""

    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    results: dict[Key, ReservationResult] = field(default_factory=dict)


def plan(
    items: Sequence[Reservation], owned: set[int], prior: dict[Key, Any], now: datetime
) -> ReservePlan:
    """`prior` rows have id, status, attempts, wamid, error_code, status_at and
    reserved_at (reserved_at, else created_at)."""
    out = ReservePlan()
    results = out.results
    for item in items:
        k = key(item)
        if k in results:
            continue  # a duplicate in the batch: same answer as the first
        row = prior.get(k)
        if item.conversation_id not in owned:
            results[k] = ReservationResult(
                item.conversation_id, row.id if row else 0, False, LEASE_LOST, 0
            )
            continue
        if row is None:
            out.inserts.append(
                {
                    "conversation_id": item.conversation_id,
                    "step": item.step,
                    "purpose": item.purpose,
                    "sender": item.sender,
                    "status": "sending",
                    "attempts": 1,
                    "due_at": item.due_at,
                    "status_at": now,
                    "created_at": now,
                    "updated_at": now,
                    "reserved_at": now,
                }
            )
            continue
        status = row.status
        if status == "sending" and row.reserved_at == now:
            # Our own reservation from an attempt whose answer was lost (the caller
            # retries with the same `now`): still ours, never sent.
            results[k] = ReservationResult(
                item.conversation_id, row.id, True, status, row.attempts, reserved_at=now
            )
            continue
        takeover = status == "pending" or (status in ("sending", "unknown") and item.resend_unknown)
        if takeover:
            attempts = row.attempts + 1
            out.updates.append(
                {
                    "b_id": row.id,
                    "b_status": "sending",
                    "b_attempts": attempts,
                    "b_now": now,
                    "b_reserved": now,
                }
            )
            results[k] = ReservationResult(
                item.conversation_id, row.id, True, status, attempts, reserved_at=now
            )
            continue
        if status == "sending":
            # Its worker crashed mid-send: the message may or may not have left.
            out.updates.append(
                {
                    "b_id": row.id,
                    "b_status": "unknown",
                    "b_attempts": row.attempts,
                    "b_now": now,
                    "b_reserved": row.reserved_at,
                }
            )
        results[k] = ReservationResult(
            item.conversation_id,
            row.id,
            False,
            status,
            row.attempts,
            wamid=row.wamid,
            error_code=row.error_code,
            status_at=row.status_at,
            reserved_at=row.reserved_at,
        )
    return out
