"""The throughput tier against the fake Cloud API over loopback: read at start, used as
the rate unless the operator set one, read again after a burst of 130429, and shown in
`dripline status` and as a gauge."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from dripline.dispatcher.engine import Dispatcher
from dripline.fake import FakeConfig, running_fake
from dripline.flows import load_flows
from dripline.metrics import PrometheusObserver
from dripline.settings import Settings, load_settings
from dripline.status_report import gather_status
from dripline.store import Store
from tests.fixtures.dispatch import NUMBER, TOKEN, UNUSED_URL, client_for, enroll, phones


def tier_settings(**extra: Any) -> Settings:
    """fast_settings' timers, but no rate_per_s unless given: the tier decides."""
    return load_settings(
        database_url=UNUSED_URL,
        concurrency=50,
        pair_interval_s=0.0,
        heartbeat_s=0.3,
        retry_base_s=0.05,
        retry_cap_s=0.5,
        whatsapp_access_token=TOKEN,
        whatsapp_phone_number_id=NUMBER,
        **extra,
    )


@asynccontextmanager
async def dispatching(store: Store, fake: Any, settings: Settings, **kw: Any) -> AsyncIterator[Any]:
    """A dispatcher running against `fake` for the block; stopped and awaited after."""
    async with client_for(fake) as client:
        d = Dispatcher(store=store, client=client, flows=load_flows(None), settings=settings, **kw)
        task = asyncio.ensure_future(d.run(max_seconds=60))
        try:
            yield d
        finally:
            d.request_stop()
            await task


async def status_with(store: Store, rate_per_s: float) -> dict[str, Any]:
    """The status once a heartbeat has carried the tier and that share (no fixed sleep:
    the machine may be slow)."""
    for _ in range(300):
        status = await gather_status(store)
        if status["tier"] is not None and status["workers"]["rate_per_s"] == rate_per_s:
            return status
        await asyncio.sleep(0.05)
    return await gather_status(store)


async def test_the_rate_comes_from_the_tier_and_shows_in_status_and_metrics(
    store: Store,
) -> None:
    await enroll(store, phones(20))
    registry = CollectorRegistry()
    config = FakeConfig(access_token=TOKEN, rate_per_s=0, throughput_level="HIGH")
    async with running_fake(config) as fake:
        settings = tier_settings()
        assert settings.rate_from_tier
        observer = PrometheusObserver(registry)
        async with dispatching(store, fake, settings, observer=observer) as d:
            status = await status_with(store, 1000.0)
        reads = fake.state.stats.number_reads
    assert reads == 1  # at start; no throttling, no second read
    assert d.stats.tier_level == "HIGH"
    assert status["tier"] == {"level": "HIGH", "rate_per_s": 1000.0, "source": "tier"}
    assert status["workers"]["rate_per_s"] == 1000.0  # the worker's share: the whole tier
    text = generate_latest(registry).decode()
    assert "dripline_throughput_tier_rate_per_second 1000.0" in text
    assert 'dripline_throughput_tier{level="HIGH",source="tier"} 1.0' in text


async def test_a_set_rate_wins_over_the_tier(store: Store) -> None:
    await enroll(store, phones(5))
    config = FakeConfig(access_token=TOKEN, rate_per_s=0, throughput_level="HIGH")
    async with running_fake(config) as fake:
        settings = tier_settings(rate_per_s=25)
        assert not settings.rate_from_tier
        async with dispatching(store, fake, settings):
            status = await status_with(store, 25.0)
    assert status["tier"] == {"level": "HIGH", "rate_per_s": 25.0, "source": "operator"}
    assert status["workers"]["rate_per_s"] == 25.0


async def test_the_standard_tier_by_default_and_a_burst_of_130429_reads_it_again(
    store: Store,
) -> None:
    """The fake reports STANDARD (80/s) by default but lets only 20/s through (as a
    number whose tier dropped would): throttling follows, and the burst makes the
    dispatcher read the tier again and pick up what it says now."""
    await enroll(store, phones(600))
    config = FakeConfig(access_token=TOKEN, rate_per_s=20, burst=5, pair_interval_s=0)
    assert config.reported_throughput_level == "STANDARD"
    async with running_fake(config) as fake, client_for(fake) as client:
        d = Dispatcher(store=store, client=client, flows=load_flows(None), settings=tier_settings())
        task = asyncio.ensure_future(d.run(max_seconds=30))
        while fake.state.stats.number_reads < 1:
            await asyncio.sleep(0.02)
        config.throughput_level = "HIGH"  # what a read after the burst will see
        for _ in range(400):
            if fake.state.stats.number_reads >= 2:
                break
            await asyncio.sleep(0.05)
        status = await status_with(store, 1000.0)
        d.request_stop()
        await task
        reads = fake.state.stats.number_reads
        throttled = fake.state.errors_by_code[130429]
    assert throttled >= 5
    assert reads == 2  # start, then once for the burst (not once per 130429)
    assert status["tier"] == {"level": "HIGH", "rate_per_s": 1000.0, "source": "tier"}


async def test_each_configured_number_gets_its_own_tier(store: Store) -> None:
    """Several numbers, no rate set: each number's tier is read and becomes its rate; a
    number with a rate of its own is not read. The worker's share is their sum."""
    second, third = "100000000000002", "100000000000003"
    await enroll(store, phones(5))
    config = FakeConfig(access_token=TOKEN, rate_per_s=0, number_rates={NUMBER: 80, second: 0})
    async with running_fake(config) as fake:
        settings = tier_settings(senders=f"{second},{third}:50")
        async with dispatching(store, fake, settings) as d:
            status = await status_with(store, 80.0 + 1000.0 + 50.0)
            rates = {n: d._pacing.ceiling(n) for n in (NUMBER, second, third)}
        reads = fake.state.stats.number_reads
    assert reads == 2  # NUMBER and `second`; `third` has its own rate
    assert rates == {NUMBER: 80.0, second: 1000.0, third: 50.0}
    assert status["workers"]["rate_per_s"] == 1130.0
