"""Sender alerts against the fake Cloud API over loopback: an error code dripline does
not know ends its messages after `max_attempts` and opens the breaker naming the code,
instead of pausing and probing for ever."""

from __future__ import annotations

import asyncio

from dripline.dispatcher.constants import UNKNOWN_CODE_BREAKER_STREAK
from dripline.dispatcher.engine import Dispatcher
from dripline.fake import FakeConfig, running_fake
from dripline.flows import load_flows
from dripline.status_report import gather_status
from dripline.store import Store
from dripline.whatsapp.errors import ERROR_TABLE
from tests.fixtures.dispatch import (
    TOKEN,
    UNUSED_URL,
    client_for,
    conversation_rows,
    enroll,
    fast_settings,
    phones,
)

UNKNOWN = 999_001
MAX_ATTEMPTS = 3


async def test_an_unknown_code_fails_messages_after_max_attempts_and_trips_the_breaker(
    store: Store,
) -> None:
    assert UNKNOWN not in ERROR_TABLE
    # More sends than the streak that trips the breaker, so the breaker opens while
    # messages still have attempts left; the probes after it must spend them, not loop.
    numbers = phones(10)
    assert len(numbers) * MAX_ATTEMPTS > UNKNOWN_CODE_BREAKER_STREAK
    await enroll(store, numbers)
    config = FakeConfig(
        access_token=TOKEN,
        rate_per_s=0,
        pair_interval_s=0,
        inject_code=UNKNOWN,
        inject_code_fraction=1.0,
    )
    settings = fast_settings(
        UNUSED_URL,
        max_attempts=MAX_ATTEMPTS,
        on_auth_failure="pause",
        auth_probe_s=0.05,
        concurrency=4,
    )
    async with running_fake(config) as fake, client_for(fake) as client:
        d = Dispatcher(store=store, client=client, flows=load_flows(None), settings=settings)
        task = asyncio.ensure_future(d.run(max_seconds=60))
        try:
            for _ in range(600):
                convs = await conversation_rows(store)
                if all(c.state == "failed" for c in convs):
                    break
                await asyncio.sleep(0.05)
            status = await gather_status(store)
        finally:
            d.request_stop()
        summary = await task
        requests = fake.state.stats.requests
    convs = await conversation_rows(store)
    assert {c.state for c in convs} == {"failed"}
    for c in convs:
        assert c.attempts == MAX_ATTEMPTS
        assert f"gave up after {MAX_ATTEMPTS} attempts: {UNKNOWN}" in (c.last_error or "")
    # Exactly max_attempts sends per message: the breaker's probes are charged too.
    assert requests == len(numbers) * MAX_ATTEMPTS
    assert summary.breaker_tripped
    assert str(UNKNOWN) in (summary.breaker_reason or "")
    assert summary.stats.alerts
    assert {a["code"] for a in summary.stats.alerts} == {UNKNOWN}
    assert {a["kind"] for a in summary.stats.alerts} == {"unknown_code"}
    # `dripline status` shows the alert from the worker's heartbeat.
    recent = status["alerts"]["recent"]
    assert recent and recent[0]["code"] == UNKNOWN and str(UNKNOWN) in recent[0]["reason"]


async def test_the_spam_rate_limit_pauses_the_sender_and_alerts(store: Store) -> None:
    """131048: Meta limits the number, so the sender stops (an hour before it probes)
    instead of spending the backlog on refusals, and says so naming the code."""
    numbers = phones(200)
    await enroll(store, numbers)
    config = FakeConfig(
        access_token=TOKEN,
        rate_per_s=0,
        pair_interval_s=0,
        inject_code=131048,
        inject_code_fraction=1.0,
    )
    settings = fast_settings(UNUSED_URL, on_auth_failure="pause", concurrency=4)
    async with running_fake(config) as fake, client_for(fake) as client:
        d = Dispatcher(store=store, client=client, flows=load_flows(None), settings=settings)
        summary = await d.run(max_seconds=2)
        requests = fake.state.stats.requests
    # Only the sends already in flight when the first refusal came back.
    assert 1 <= requests <= settings.concurrency
    assert summary.breaker_tripped and "131048" in (summary.breaker_reason or "")
    assert {(a["kind"], a["code"]) for a in summary.stats.alerts} == {("sender_limited", 131048)}
    convs = await conversation_rows(store)
    refused = [c for c in convs if c.attempts == 1]
    assert len(refused) == requests
    assert all(c.state != "failed" for c in convs)
