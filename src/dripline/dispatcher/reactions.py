"""What happens to a message whose send failed: one pure function over the error class.

The classes come from the client's error table (`dripline.whatsapp.errors`):
throttle, pair_throttle, quality_throttle, transient, window, permanent, auth, account.

`react` decides the message's fate only. How long a whole sender number pauses after a
throttle is the pacing's decision (`pacing.SenderPacing.on_throttle`), and whether a run
of transient failures is an API outage is the outage detector's (`outage`): the engine
asks them when `Reaction.action` is THROTTLE or the class is transient.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from dripline.dispatcher.backoff import full_jitter, pair_backoff_s
from dripline.dispatcher.constants import (
    MAINTENANCE_RETRY_S,
    MARKETING_RETRY_S,
    QUALITY_RETRY_S,
)
from dripline.settings import Delivery

__all__ = ["Action", "Failure", "Reaction", "react"]

MARKETING_LIMIT_CODE = 131049
MAINTENANCE_CODE = 131057


class Action(StrEnum):
    RETRY = "retry"  # reschedule the same message after `delay_s`
    THROTTLE = "throttle"  # retry once the sender's throttle pause is over (not a failure)
    FAIL = "fail"  # the conversation fails with `reason`
    FALLBACK = "fallback"  # 24-hour window closed: send the step's template instead
    SKIP = "skip"  # a reminder refused for the closed window: not sent, the timeout runs on
    UNKNOWN = "unknown"  # the API may have the message: hold for webhook reconciliation
    TRIP = "trip"  # credentials or account broken: stop all sending, touch nothing


@dataclass(frozen=True, slots=True)
class Failure:
    """A send that did not return a wamid."""

    error_class: str
    code: int | None
    message: str
    retry_after_s: float | None = None
    maybe_sent: bool = False


@dataclass(frozen=True, slots=True)
class Reaction:
    action: Action
    delay_s: float
    counts_attempt: bool
    message_status: str  # what the messages row becomes
    reason: str


def describe(failure: Failure) -> str:
    """`code: message`, the form every stored reason takes."""
    code = f"{failure.code}: " if failure.code is not None else ""
    return f"{code}{failure.message}"


def react(
    failure: Failure,
    *,
    attempts: int,
    max_attempts: int,
    delivery: Delivery,
    purpose: str,
    has_fallback: bool,
    retry_base_s: float,
    retry_cap_s: float,
    pair_hits: int = 0,
    unknown_after_s: float = 120.0,
    rng: random.Random | None = None,
) -> Reaction:
    """Decide the reaction to one failed send.

    `attempts` counts failed attempts before this one. Throttles are retried without
    counting as failures; transient and unclassified errors are retried up to
    `max_attempts`; a send that may have reached the API is never blindly resent in
    at-most-once mode.
    """
    reason = describe(failure)
    cls = failure.error_class
    if cls in ("auth", "account"):
        return Reaction(Action.TRIP, 0.0, False, "pending", reason)
    if cls == "throttle":
        return Reaction(Action.THROTTLE, 0.0, False, "pending", reason)
    if cls == "pair_throttle":
        return Reaction(Action.RETRY, pair_backoff_s(pair_hits), False, "pending", reason)
    if cls == "quality_throttle":
        # Charged, so capped: a user who stays at the marketing limit (131049), or a
        # number that stays spam-limited (131048), fails the message after max_attempts
        # instead of retrying it every day for ever.
        if attempts + 1 >= max_attempts:
            return _give_up(attempts, reason)
        delay = MARKETING_RETRY_S if failure.code == MARKETING_LIMIT_CODE else QUALITY_RETRY_S
        return Reaction(Action.RETRY, delay, True, "pending", reason)
    if cls == "window":
        if purpose == "reminder" or purpose.startswith("reask"):
            # The step's one template slot is its question's (window.py): the user has
            # the question, so a reminder (or a re-ask) is dropped, the flow goes on.
            return Reaction(Action.SKIP, 0.0, False, "failed", f"reminder not sent ({reason})")
        if purpose != "fallback" and has_fallback:
            return Reaction(Action.FALLBACK, 0.0, False, "failed", reason)
        why = (
            "the fallback template was refused too"
            if purpose == "fallback"
            else "the step has no template fallback"
        )
        return Reaction(
            Action.FAIL,
            0.0,
            True,
            "failed",
            f"24-hour customer service window closed and {why} ({reason})",
        )
    if cls in ("transient", "unknown"):
        if failure.maybe_sent and delivery is Delivery.AT_MOST_ONCE:
            return Reaction(Action.UNKNOWN, unknown_after_s, True, "unknown", reason)
        if attempts + 1 >= max_attempts:
            return _give_up(attempts, reason)
        if failure.code == MAINTENANCE_CODE:
            delay = MAINTENANCE_RETRY_S
        elif failure.retry_after_s is not None:
            delay = failure.retry_after_s
        else:
            delay = max(0.05, full_jitter(attempts, retry_base_s, retry_cap_s, rng))
        return Reaction(Action.RETRY, delay, True, "pending", reason)
    # permanent, and anything we do not know how to retry safely
    return Reaction(Action.FAIL, 0.0, True, "failed", reason)


def _give_up(attempts: int, reason: str) -> Reaction:
    return Reaction(
        Action.FAIL, 0.0, True, "failed", f"gave up after {attempts + 1} attempts: {reason}"
    )
