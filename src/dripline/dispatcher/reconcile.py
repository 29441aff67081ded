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
so at-most-once delivery may send them again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from dripline.store import LEASE_LOST
from dripline.store.base import ReservationResult

__all__ = ["Settle", "Settlement", "proven_unaccepted", "settle"]

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


def proven_unaccepted(
    held: Sequence[ReservationResult],
    last_webhook_at: datetime | None,
    now: datetime,
    window_s: float,
) -> list[int]:
    """Conversation ids of unknown sends that webhooks prove the API never accepted.

    The Cloud API sends a status webhook for every message it accepts, within seconds.
    When deliveries kept arriving for `window_s` after a send went unknown and none of
    them mentioned it (its row is still `unknown`), resending it cannot make a
    duplicate. Without webhooks there is no such proof, and the send is never repeated.
    """
    window = timedelta(seconds=window_s)
    if last_webhook_at is None:
        return []
    return [
        r.conversation_id
        for r in held
        if r.prior_status == "unknown"
        and r.status_at is not None
        and now - r.status_at >= window
        and last_webhook_at - r.status_at >= window
    ]


def needs_evidence(held: Sequence[ReservationResult], now: datetime, window_s: float) -> bool:
    """True when some refused send is an unknown old enough to be proven unaccepted."""
    window = timedelta(seconds=window_s)
    return any(
        r.prior_status == "unknown" and r.status_at is not None and now - r.status_at >= window
        for r in held
    )
