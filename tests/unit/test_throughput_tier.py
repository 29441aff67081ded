"""The throughput tier: parsing Meta's answer and the rate/refresh decisions (pure)."""

from __future__ import annotations

import asyncio

import pytest

from dripline.whatsapp import CloudApiClient
from dripline.whatsapp.throughput import (
    REFRESH_MIN_GAP_S,
    REFRESH_WINDOW_S,
    effective_rate,
    parse_throughput,
    refresh_due,
)


@pytest.mark.parametrize(
    ("body", "level"),
    [
        # Meta's "Get throughput level" answer
        (b'{"throughput": {"level": "STANDARD"}, "id": "106540352242922"}', "STANDARD"),
        (b'{"throughput": {"level": "HIGH"}, "id": "1"}', "HIGH"),
        (b'{"throughput": {"level": "high "}, "id": "1"}', "HIGH"),
        (b'{"throughput": {"level": "NOT_APPLICABLE"}}', "NOT_APPLICABLE"),
        (b'{"id": "1"}', None),
        (b'{"throughput": "HIGH"}', None),
        (b'{"throughput": {"level": 3}}', None),
        (b'{"throughput": {"level": ""}}', None),
        (b"[]", None),
        (b"not json", None),
    ],
)
def test_parse_throughput(body: bytes, level: str | None) -> None:
    assert parse_throughput(body) == level


@pytest.mark.parametrize(
    ("configured", "operator_set", "level", "rate", "source"),
    [
        (80.0, False, "STANDARD", 80.0, "tier"),
        (80.0, False, "HIGH", 1000.0, "tier"),
        (80.0, False, None, 80.0, "default"),  # not read, or unreadable
        (80.0, False, "NOT_APPLICABLE", 80.0, "default"),  # never guess higher
        (200.0, True, "HIGH", 200.0, "operator"),  # the operator's setting wins
        (20.0, True, None, 20.0, "operator"),
    ],
)
def test_effective_rate(
    configured: float, operator_set: bool, level: str | None, rate: float, source: str
) -> None:
    tier = effective_rate(configured, operator_set=operator_set, level=level)
    assert (tier.rate_per_s, tier.source, tier.level) == (rate, source, level)


@pytest.mark.parametrize(
    ("events", "now", "last", "due"),
    [
        ([1.0, 2.0, 3.0, 4.0], 5.0, None, False),  # four throttle events: not a burst
        ([1.0, 2.0, 3.0, 4.0, 5.0], 5.0, None, True),
        ([0.0, 2.0, 3.0, 4.0, 5.0], REFRESH_WINDOW_S + 1.0, None, False),  # one too old
        ([1.0, 2.0, 3.0, 4.0, 5.0], 5.0, 5.0 - REFRESH_MIN_GAP_S + 1, False),  # too soon
        ([1.0, 2.0, 3.0, 4.0, 5.0], 5.0, 5.0 - REFRESH_MIN_GAP_S, True),
    ],
)
def test_refresh_after_a_burst_of_throttling(
    events: list[float], now: float, last: float | None, due: bool
) -> None:
    assert refresh_due(events, now, last) is due


def test_the_client_gets_the_phone_number_node() -> None:
    seen: list[str] = []

    async def reader(url: str) -> tuple[int, bytes, str | None]:
        seen.append(url)
        return 200, b'{"throughput": {"level": "HIGH"}, "id": "42"}', None

    async def never(url: str, body: bytes) -> tuple[int, bytes, str | None]:
        raise AssertionError("a GET must not POST")

    client = CloudApiClient(
        phone_number_id="42", base_url="https://graph.test", transport=never, reader=reader
    )
    assert asyncio.run(client.throughput_level()) == "HIGH"
    assert seen == ["https://graph.test/v23.0/42?fields=throughput"]


def test_an_error_answer_is_a_typed_error() -> None:
    from dripline.errors import WhatsAppError

    async def reader(url: str) -> tuple[int, bytes, str | None]:
        return 401, b'{"error": {"code": 190, "message": "expired"}}', None

    async def never(url: str, body: bytes) -> tuple[int, bytes, str | None]:
        raise AssertionError

    client = CloudApiClient(phone_number_id="42", transport=never, reader=reader)
    with pytest.raises(WhatsAppError) as info:
        asyncio.run(client.throughput_level())
    assert info.value.code == 190


def test_an_injected_post_only_transport_cannot_read() -> None:
    async def never(url: str, body: bytes) -> tuple[int, bytes, str | None]:
        raise AssertionError

    assert (
        asyncio.run(CloudApiClient(phone_number_id="1", transport=never).throughput_level()) is None
    )
