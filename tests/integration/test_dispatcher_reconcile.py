"""Sends whose outcome was lost (a hung request) are settled by status webhooks.

At most once: a read timeout leaves the message `unknown`; it is resent only when
webhooks kept arriving long enough after it without mentioning it, which proves the
API never accepted it. The fake's hangs are requests it never accepted, so every
conversation still gets its question exactly once.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from dripline.dispatcher.engine import Dispatcher
from dripline.fake import FakeConfig
from dripline.flows import load_flows
from dripline.store import Store
from tests.fixtures.dispatch import (
    TOKEN,
    UNUSED_URL,
    WEBHOOK_SECRET,
    client_for,
    enroll,
    fake_with_webhooks,
    fast_settings,
    message_rows,
    phones,
    received,
)


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_hung_sends_are_resent_once_webhooks_prove_they_never_landed(
    store: Store,
) -> None:
    numbers = phones(1000)
    await enroll(store, numbers)
    settings = fast_settings(
        UNUSED_URL,
        rate_per_s=300,
        concurrency=100,
        unknown_after_s=1.0,
        http_read_timeout_s=0.5,
        whatsapp_app_secret=WEBHOOK_SECRET,
    )
    config = FakeConfig(
        access_token=TOKEN,
        rate_per_s=0,
        pair_interval_s=0,
        latency_ms=5,
        hang_fraction=0.03,
        hang_s=2.0,
        read_fraction=1.0,
        read_delay_s=4.0,
        # The read receipts 4 s later keep webhooks coming, which is what proves a
        # hung send never landed (dripline sends the demo's templates to these users
        # who never wrote, so they are delivered and read).
        seed=11,
    )
    async with fake_with_webhooks(store, settings, config) as fake:
        client = client_for(fake, read_timeout_s=0.5)
        d = Dispatcher(store=store, client=client, flows=load_flows(None), settings=settings)
        task = asyncio.ensure_future(d.run(max_seconds=120))
        try:
            while not task.done() and len(received(fake)) < len(numbers):
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
        finally:
            d.request_stop()
            summary = await task
            await client.close()
        hangs = fake.state.stats.hangs
    assert hangs > 10
    assert summary.stats.unknown >= hangs // 2
    assert received(fake) == Counter({p: 1 for p in numbers})
    rows = await message_rows(store)
    assert not [r for r in rows if r.status in ("unknown", "sending", "pending")]
