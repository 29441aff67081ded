"""The business number's throughput tier: what Meta reports and what it allows. Pure.

Meta's throughput page (https://developers.facebook.com/documentation/business-messaging/
whatsapp/throughput, "Updated: May 21, 2026"): "For each registered business phone
number, Cloud API supports up to 80 messages per second (mps) by default, and up to 1,000
mps by automatic upgrade"; over it, error 130429. The current level is the phone number
node's `throughput` field: `GET /<PHONE_NUMBER_ID>?fields=throughput` answers
`{"throughput": {"level": "STANDARD"}, "id": "<PHONE_NUMBER_ID>"}` ("Get throughput
level"; `level` is STANDARD or HIGH). Numbers shared with the WhatsApp Business app have
a fixed 20 mps; the page names no level for them, so an unknown level keeps the
standard 80 rather than guessing higher.

The dispatcher reads the level at start and again after a burst of 130429 (the tier may
have changed: Meta upgrades numbers automatically, and a downgrade would show as
throttling), and uses its rate unless the operator set `rate_per_s`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_RATE_PER_S",
    "REFRESH_MIN_GAP_S",
    "REFRESH_STREAK",
    "REFRESH_WINDOW_S",
    "THROUGHPUT_RATES",
    "TierRate",
    "effective_rate",
    "parse_throughput",
    "refresh_due",
]

THROUGHPUT_RATES = {"STANDARD": 80.0, "HIGH": 1000.0}
DEFAULT_RATE_PER_S = THROUGHPUT_RATES["STANDARD"]
# Throttle events (pauses, not responses) within REFRESH_WINDOW_S that make the tier
# worth reading again, and the least time between two such reads.
REFRESH_STREAK = 5
REFRESH_WINDOW_S = 30.0
REFRESH_MIN_GAP_S = 60.0


def parse_throughput(raw: bytes | str) -> str | None:
    """The `throughput.level` of a phone number node, upper-cased; None when the body
    has none (malformed, or the field missing)."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    node = data.get("throughput") if isinstance(data, dict) else None
    level = node.get("level") if isinstance(node, dict) else None
    return level.strip().upper() or None if isinstance(level, str) else None


@dataclass(frozen=True, slots=True)
class TierRate:
    """The global send rate per number, and where it came from."""

    rate_per_s: float
    level: str | None  # what Meta reported (None: not read, or unreadable)
    source: str  # "operator" (rate_per_s set), "tier" (from the level), "default"


def effective_rate(configured: float, *, operator_set: bool, level: str | None) -> TierRate:
    """The operator's rate when they set one; else the level's rate; else the default."""
    if operator_set:
        return TierRate(configured, level, "operator")
    rate = THROUGHPUT_RATES.get(level or "")
    if rate is None:
        return TierRate(DEFAULT_RATE_PER_S, level, "default")
    return TierRate(rate, level, "tier")


def refresh_due(events: Sequence[float], now: float, last_read_at: float | None) -> bool:
    """Read the tier again: a burst of throttling (REFRESH_STREAK throttle events within
    the last REFRESH_WINDOW_S, accepted sends between them or not: a number whose tier
    dropped still gets some through), and not within REFRESH_MIN_GAP_S of the last read
    a burst caused (`last_read_at`; the read at start does not count)."""
    recent = sum(1 for t in events if now - t <= REFRESH_WINDOW_S)
    if recent < REFRESH_STREAK:
        return False
    return last_read_at is None or now - last_read_at >= REFRESH_MIN_GAP_S
