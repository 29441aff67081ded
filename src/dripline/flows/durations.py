"""Durations in flow files: `30s`, `10m`, `2h`, `1d`, `1h30m`."""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["MAX_DURATION", "format_duration", "parse_duration"]

# Units in descending order; a duration names each at most once, in this order.
_UNITS = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))
_PATTERN = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
# A flow that waits longer than a year is a typo, and the cap keeps datetimes in range.
MAX_DURATION = timedelta(days=366)
HINT = "use 30s, 10m, 2h, 1d"


def parse_duration(text: object) -> timedelta:
    """`1h30m` -> timedelta(hours=1, minutes=30); raises ValueError with a hint."""
    if not isinstance(text, str):
        raise ValueError(f"invalid duration {text!r} ({HINT})")
    raw = text.strip()
    match = _PATTERN.fullmatch(raw)
    if not raw or match is None:
        raise ValueError(f"invalid duration {text!r} ({HINT})")
    seconds = sum(int(g) * size for g, (_, size) in zip(match.groups(), _UNITS, strict=True) if g)
    value = timedelta(seconds=seconds)
    if value > MAX_DURATION:
        raise ValueError(f"duration {text!r} is longer than {MAX_DURATION.days}d")
    return value


def format_duration(value: timedelta) -> str:
    """The canonical text for a whole-second duration: `1h30m`, `0s`."""
    seconds = int(value.total_seconds())
    if seconds < 0 or timedelta(seconds=seconds) != value:
        raise ValueError(f"{value!r} is not a whole, non-negative number of seconds")
    parts = []
    for unit, size in _UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
