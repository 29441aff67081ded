"""What to do when a message row already exists for a send: decided without sending.

`reserve` refuses a send whose (conversation, step, purpose) row is not fresh, and says
why (`ReservationResult.prior_status`). `settle` turns that into a decision:

    lease_lost          another worker re-claimed the conversation: it is theirs, drop it
    sent/delivered/read a status webhook (or an earlier worker) proved the API accepted
                        it: the flow moves on as after our own success
    sending/unknown     the outcome was lost (crash, read timeout): wait for a status
                        webhook; after `max_attempts` windows with no word, fail rather
                        than risk a duplicate
    failed              a status webhook reported it failed: the error's class decides
                        (a closed window still gets its template fallback)

`proven_unaccepted` says which unknown sends the evidence shows the API never accepted,
so at-most-once delivery may send them again (the rule is in its docstring).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from dripline.store import LEASE_LOST
from dripline.store.base import ReservationResult

__all__ = [
    "Settle",
    "Settlement",
    "Unknown",
    "covered",
    "evidence_deadline",
    "proven_unaccepted",
    "settle",
    "unknowns",
]

_ACCEPTED = ("sent", "delivered", "read")
_UNSETTLED = ("sending", "unknown")


class Settle(StrEnum):
    DROP = "drop"  # not ours any more: write nothing
    ACCEPTED = "accepted"  # advance the flow as after a success
    WAIT = "wait"  # check again after the unknown window, one attempt charged
    GIVE_UP = "give_up"  # fail: the outcome stayed unknown for too long
    FAILED = "failed"  # react to the error code a status webhook reported


@dataclass(frozen=True, slots=True)
class Settlement:
    action: Settle
    reason: str | None = None
    sent_at: datetime | None = None
    error_code: int | None = None


def settle(res: ReservationResult, *, step: int, attempts: int, max_attempts: int) -> Settlement:
    """The decision for a refused reservation (see the module docstring)."""
    status = res.prior_status
    if status == LEASE_LOST:
        return Settlement(Settle.DROP)
    if status in _ACCEPTED:
        return Settlement(Settle.ACCEPTED, sent_at=res.status_at)
    if status in _UNSETTLED:
        if attempts + 1 >= max_attempts:
            return Settlement(
                Settle.GIVE_UP,
                f"outcome of step {step + 1} unknown (no status webhook after "
                f"{attempts + 1} checks); not resent to avoid a duplicate",
            )
        return Settlement(Settle.WAIT, "send outcome unknown; waiting for a status webhook")
    return Settlement(
        Settle.FAILED, "reported failed by a status webhook", error_code=res.error_code
    )


@dataclass(frozen=True, slots=True)
class Unknown:
    """A refused reservation whose outcome is unknown: its message and when it was
    first reserved."""

    conversation_id: int
    message_id: int
    reserved_at: datetime


def unknowns(refused: Sequence[ReservationResult]) -> list[Unknown]:
    """The refused reservations that are unknown sends (`sending` left by a crash is
    marked `unknown` by the same reservation)."""
    return [
        Unknown(r.conversation_id, r.message_id, r.reserved_at)
        for r in refused
        if r.prior_status in _UNSETTLED and r.reserved_at is not None and r.message_id
    ]


def evidence_deadline(now: datetime, margin_s: float) -> datetime:
    """Statuses applied after this are too recent to prove anything yet: Meta may still
    be delivering the unknown send's own status, reordered behind them."""
    return now - timedelta(seconds=margin_s)


def covered(
    uptime: Sequence[tuple[datetime, datetime]],
    start: datetime,
    end: datetime,
    tolerance_s: float,
) -> bool:
    """True when the webhook intake was up all the way from `start` to `end`: the runs'
    [started_at, last heartbeat + tolerance] intervals leave no gap in between."""
    reach = start
    tolerance = timedelta(seconds=tolerance_s)
    for began, last in sorted(uptime):
        if began > reach:
            return False
        reach = max(reach, last + tolerance)
        if reach >= end:
            return True
    return reach >= end


def proven_unaccepted(
    candidates: Sequence[Unknown],
    evidence: Mapping[int, datetime],
    uptime: Sequence[tuple[datetime, datetime]],
    *,
    oldest_waiting_at: datetime | None,
    margin_s: float,
    tolerance_s: float,
) -> list[int]:
    """Conversation ids of unknown sends the evidence proves the API never accepted.

    Meta reports every message it accepts by status webhook, within seconds. A send is
    proven unaccepted when another send reserved with it or after it had its status
    applied (`evidence`, at least `margin_s` ago: its own status may come a little
    later, reordered) while it has none, and the webhook intake was up throughout, from
    its reservation until `margin_s` after that evidence. After an outage of the
    receiver Meta redelivers on its own schedule, and fresh statuses prove nothing
    about older ones still queued at Meta. And every webhook received until then must
    have been applied (`oldest_waiting_at`, the oldest inbox row not yet processed, is
    later): a lagging processor may still hold this send's own status.
    Without such evidence (no status webhooks, a quiet period, an intake outage) a send
    is never repeated in at-most-once mode.
    """
    margin = timedelta(seconds=margin_s)
    proven = []
    for c in candidates:
        if c.message_id not in evidence:
            continue
        settled_by = evidence[c.message_id] + margin
        if oldest_waiting_at is not None and oldest_waiting_at <= settled_by:
            continue
        if covered(uptime, c.reserved_at, settled_by, tolerance_s):
            proven.append(c.conversation_id)
    return proven
