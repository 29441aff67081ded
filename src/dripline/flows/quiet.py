"""Quiet hours in the recipient's local time, DST-safe with zoneinfo."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dripline.phones import timezone_for_phone

__all__ = ["local_wall_time_to_utc", "quiet_window_end", "recipient_zone"]


def recipient_zone(timezone: str | None, phone: str | None) -> tzinfo:
    """The conversation's zone, else the phone country's single zone, else UTC.

    An unknown zone name falls through to the next source rather than failing a send:
    enrollment validates zones, and a quiet-hours guess beats a lost conversation.
    """
    for name in (timezone, timezone_for_phone(phone) if phone else None):
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return UTC


def local_wall_time_to_utc(day: date, at: time, zone: tzinfo) -> datetime:
    """The first instant on `day` when the clock in `zone` shows `at` (or has passed it).

    Ambiguous times (clocks going back) take the first occurrence. Nonexistent times
    (clocks going forward) take the moment of the jump: 02:30 on the night Berlin skips
    from 02:00 to 03:00 becomes 03:00 local, the first local time after 02:30.
    """
    naive = datetime.combine(day, at)
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == naive:
        return first
    # In a gap: fold=1 maps to an instant before the jump and fold=0 to one after it;
    # bisect for the jump itself (offsets change on whole seconds).
    low = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = first
    if low > high:
        low, high = high, low
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(zone).replace(tzinfo=None) >= naive:
            high = mid
        else:
            low = mid
    return high.replace(microsecond=0)


def quiet_window_end(now: datetime, start: time, end: time, zone: tzinfo) -> datetime | None:
    """When `now` lies in the daily window [start, end) in `zone`, the instant it ends.

    A window with start > end crosses midnight (21:00-08:00); start == end is no window.
    """
    if start == end:
        return None
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    today = local.date()
    if start < end:
        if start <= clock < end:
            return local_wall_time_to_utc(today, end, zone)
        return None
    if clock >= start:
        return local_wall_time_to_utc(today + timedelta(days=1), end, zone)
    if clock < end:
        return local_wall_time_to_utc(today, end, zone)
    return None
