"""Durations in flow files: parsing, formatting and their round trip."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dripline.flows.durations import MAX_DURATION, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0s", timedelta(0)),
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        (" 90s ", timedelta(seconds=90)),
    ],
)
def test_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "soon", "10", "1.5h", "2 h", "1m1h", "-1s", "1w", "h"])
def test_parse_rejects_with_a_hint(text: str) -> None:
    with pytest.raises(ValueError, match=r"use 30s, 10m, 2h, 1d"):
        parse_duration(text)


@pytest.mark.parametrize("value", [30, 1.5, None, True])
def test_parse_rejects_non_strings(value: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(value)


def test_parse_caps_absurd_durations() -> None:
    with pytest.raises(ValueError, match="longer than"):
        parse_duration("9999d")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=2), "2d"),
    ],
)
def test_format(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


def test_format_rejects_fractions_and_negatives() -> None:
    with pytest.raises(ValueError):
        format_duration(timedelta(milliseconds=1500))
    with pytest.raises(ValueError):
        format_duration(timedelta(seconds=-1))


@given(st.integers(min_value=0, max_value=int(MAX_DURATION.total_seconds())))
def test_round_trip_from_seconds(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


@given(
    st.tuples(*(st.none() | st.integers(0, 300) for _ in range(4))).filter(
        lambda parts: any(p is not None for p in parts)
    )
)
def test_round_trip_from_text(parts: tuple[int | None, ...]) -> None:
    text = "".join(f"{n}{u}" for n, u in zip(parts, "dhms", strict=True) if n is not None)
    value = parse_duration(text)
    # Formatting gives the canonical spelling, which parses to the same duration.
    assert parse_duration(format_duration(value)) == value
