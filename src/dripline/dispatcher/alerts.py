"""Failures that say something about the whole sender, not one message. Pure.

`react` (reactions.py) decides each message's fate; `sender_alert` decides whether the
same failure should also stop the sender and raise an alert an operator sees (a log
line at error level, `dripline_alerts_total{kind,code}`, and `dripline status`):

- **the same unknown code** `threshold` times in a row (no success between): most
  likely a new account-level problem Meta added to its page after this table was
  written. The breaker opens and the alert names the code. Each message still fails
  after `max_attempts` by its own reaction, so a code that never goes away ends its
  messages instead of probing with them for ever.
- **131048 spam rate limit, 131064 template-classification limit**: Meta limits the
  number itself for a period [EC Throttling]; every further send would be refused the
  same way and count against the number's quality. The sender pauses for
  QUALITY_RETRY_S (the breaker, probing after that long) and the alert names the code.

Source for the codes: docs/reference/error-codes.md ([EC] = Meta's error-codes page).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from dripline.dispatcher.constants import QUALITY_RETRY_S

__all__ = ["SENDER_PAUSE_CODES", "AlertKind", "SenderAlert", "sender_alert"]

# Codes that limit the business number as a whole for a period (pause, alert).
SENDER_PAUSE_CODES = frozenset({131048, 131064})


class AlertKind(StrEnum):
    UNKNOWN_CODE = "unknown_code"  # the same unclassified code, many times in a row
    SENDER_LIMITED = "sender_limited"  # Meta limits the number (131048, 131064)


@dataclass(frozen=True, slots=True)
class SenderAlert:
    kind: AlertKind
    code: int | None
    reason: str  # the breaker's reason, naming the code
    probe_after_s: float | None  # None: the operator's `auth_probe_s`


def sender_alert(
    error_class: str,
    code: int | None,
    message: str,
    *,
    unknown_in_a_row: int,
    threshold: int,
) -> SenderAlert | None:
    """The sender-wide consequence of one failed send, if any.

    `unknown_in_a_row`: how many times this same unknown code has now come back with
    no accepted send between (`outage.CodeStreak.count`, this failure included).
    """
    if error_class == "unknown" and unknown_in_a_row >= threshold:
        return SenderAlert(
            AlertKind.UNKNOWN_CODE,
            code,
            f"error code {code} (not in dripline's error table) on {unknown_in_a_row} "
            f"sends in a row: {message}",
            None,
        )
    if error_class == "quality_throttle" and code in SENDER_PAUSE_CODES:
        return SenderAlert(
            AlertKind.SENDER_LIMITED,
            code,
            f"{code}: {message} (Meta limits this number; sending paused "
            f"{QUALITY_RETRY_S / 3600:g} h)",
            QUALITY_RETRY_S,
        )
    return None
