"""Opt-outs Meta reports in status webhooks, as suppressions. Pure.

A `failed` status with 131050 (the user stopped marketing messages from this business;
docs/reference/error-codes.md) means the user opted out: the number is suppressed for the business
number the status is for (`metadata.phone_number_id`), as a STOP is, so enrolling it
again needs a new opt-in. What the failure does to the conversation is the failed-status
path's business (`plan.status_update` and the reaction table); this only records the
opt-out, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from dripline.inbox.recipients import usable_wa_id
from dripline.store import Suppression
from dripline.whatsapp.webhooks import StatusEvent

__all__ = ["OPT_OUT_CODES", "suppressions_from_statuses"]

# Failed-status codes that mean the user opted out of this business's messages.
OPT_OUT_CODES = frozenset({131050})


def suppressions_from_statuses(events: Iterable[StatusEvent], now: datetime) -> list[Suppression]:
    """One suppression per (business number, recipient) whose status failed with an
    opt-out code; statuses without a usable `recipient_id` (a username-only user) are
    skipped."""
    found: dict[tuple[str, str], Suppression] = {}
    for event in events:
        if event.status != "failed" or not any(e.code in OPT_OUT_CODES for e in event.errors):
            continue
        digits = usable_wa_id(event.recipient_id)
        if digits is None:
            continue
        code = next(e.code for e in event.errors if e.code in OPT_OUT_CODES)
        key = (event.phone_number_id or "", "+" + digits)
        found.setdefault(
            key, Suppression(key[0], key[1], f"{code}: the user stopped marketing messages", now)
        )
    return [found[k] for k in sorted(found)]
