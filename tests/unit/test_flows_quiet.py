"""Quiet hours in the recipient's local time: midnight crossing, DST, zone sources."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from dripline.flows.quiet import local_wall_time_to_utc, quiet_window_end, recipient_zone

BERLIN = ZoneInfo("Europe/Berlin")
NIGHT = (time(21), time(8))


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # Berlin is UTC+1 in January: 21:00-08:00 local = 20:00-07:00 UTC.
        (utc(2026, 1, 10, 19, 59), None),
        (utc(2026, 1, 10, 20, 0), utc(2026, 1, 11, 7, 0)),  # the evening: ends tomorrow
        (utc(2026, 1, 10, 23, 30), utc(2026, 1, 11, 7, 0)),  # past local midnight
        (utc(2026, 1, 11, 3, 0), utc(2026, 1, 11, 7, 0)),  # the early morning: ends today
        (utc(2026, 1, 11, 7, 0), None),  # the end itself is outside the window
        (utc(2026, 1, 11, 12, 0), None),
    ],
)
def test_window_crossing_midnight(now: datetime, expected: datetime | None) -> None:
    assert quiet_window_end(now, *NIGHT, BERLIN) == expected


def test_window_within_one_day() -> None:
    lunch = (time(12), time(14))
    assert quiet_window_end(utc(2026, 1, 10, 12, 30), *lunch, UTC) == utc(2026, 1, 10, 14)
    assert quiet_window_end(utc(2026, 1, 10, 12, 0), *lunch, UTC) == utc(2026, 1, 10, 14)
    assert quiet_window_end(utc(2026, 1, 10, 14, 0), *lunch, UTC) is None
    assert quiet_window_end(utc(2026, 1, 10, 11, 59), *lunch, UTC) is None


def test_equal_start_and_end_is_no_window() -> None:
    assert quiet_window_end(utc(2026, 1, 10, 3), time(0), time(0), BERLIN) is None


def test_spring_forward_in_berlin() -> None:
    # 2026-03-29: clocks jump 02:00 CET -> 03:00 CEST. Quiet from 21:00 on the 28th (CET,
    # 20:00 UTC) ends at 08:00 CEST on the 29th = 06:00 UTC, not 07:00.
    assert quiet_window_end(utc(2026, 3, 28, 22, 0), *NIGHT, BERLIN) == utc(2026, 3, 29, 6, 0)


def test_fall_back_in_berlin() -> None:
    # 2026-10-25: clocks go back 03:00 CEST -> 02:00 CET. 08:00 CET = 07:00 UTC.
    assert quiet_window_end(utc(2026, 10, 24, 20, 0), *NIGHT, BERLIN) == utc(2026, 10, 25, 7, 0)
    # 20:30 UTC on the 24th is 22:30 CEST: inside; 18:59 UTC = 20:59 CEST: outside.
    assert quiet_window_end(utc(2026, 10, 24, 18, 59), *NIGHT, BERLIN) is None


def test_end_in_the_spring_gap_is_the_jump() -> None:
    # 02:30 does not exist in Berlin on 2026-03-29: the first local time after it is the
    # jump itself, 03:00 CEST = 01:00 UTC.
    assert local_wall_time_to_utc(date(2026, 3, 29), time(2, 30), BERLIN) == utc(2026, 3, 29, 1)
    end = quiet_window_end(utc(2026, 3, 28, 23, 0), time(23), time(2, 30), BERLIN)
    assert end == utc(2026, 3, 29, 1, 0)


def test_ambiguous_end_takes_the_first_occurrence() -> None:
    # 02:30 happens twice in Berlin on 2026-10-25; the first is 00:30 UTC (CEST).
    assert local_wall_time_to_utc(date(2026, 10, 25), time(2, 30), BERLIN) == utc(
        2026, 10, 25, 0, 30
    )


def test_zone_from_the_conversation_first() -> None:
    assert recipient_zone("Asia/Tokyo", "+4915112345678") == ZoneInfo("Asia/Tokyo")


def test_zone_from_the_phone_country() -> None:
    assert recipient_zone(None, "+4915112345678") == ZoneInfo("Europe/Berlin")


def test_zone_falls_back_to_utc() -> None:
    # A toll-free US number could be in any US zone: the number alone does not say.
    assert recipient_zone(None, "+18005550100") == UTC
    assert recipient_zone(None, None) == UTC


def test_unknown_zone_name_falls_through_to_the_phone() -> None:
    assert recipient_zone("Mars/Olympus", "+4915112345678") == ZoneInfo("Europe/Berlin")
