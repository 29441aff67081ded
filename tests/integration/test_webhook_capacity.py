"""Webhook capacity: how many status updates per second intake + processor sustain.

Run with `-s` to see the numbers (docs/api.md quotes them):

    .venv/bin/pytest tests/integration/test_webhook_capacity.py -s -m slow

Asserts only correctness (every status applied); speed is reported, never asserted.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from dripline.server.app import create_app
from dripline.server.testing import running_server
from dripline.settings import load_settings
from dripline.store import (
    ConversationUpdate,
    Enrollment,
    MessageUpdate,
    Outcome,
    Reservation,
    Store,
)
from dripline.whatsapp.webhooks import SIGNATURE_HEADER, sign

SECRET = "bench-secret"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
MESSAGES = 4_000


async def seed(store: Store, n: int) -> list[str]:
    """n sent messages with wamids, the way the dispatcher leaves them."""
    wamids: list[str] = []
    for start in range(0, n, 1_000):
        items = [
            Enrollment(phone=f"+1415{5550000 + i:07d}", flow="demo")
            for i in range(start, min(n, start + 1_000))
        ]
        await store.enroll(items, NOW)
        claimed = await store.claim_due(1_000, 600, "w", NOW)
        res = await store.reserve(
            [Reservation(c.id, 0, "question", NOW) for c in claimed], "w", NOW
        )
        outcomes = []
        for c, r in zip(claimed, res, strict=True):
            wamid = f"wamid.B{c.id}"
            wamids.append(wamid)
            outcomes.append(
                Outcome(
                    ConversationUpdate(
                        c.id, "in_progress", 1, "question", NOW + timedelta(days=1), 0
                    ),
                    MessageUpdate(r.message_id, "sent", wamid=wamid, sent_at=NOW),
                )
            )
        await store.record_results(outcomes, "w", NOW)
    return wamids


def body(wamids: list[str], status: str) -> bytes:
    statuses = [
        {"id": w, "status": status, "timestamp": "1772452800", "recipient_id": "1"} for w in wamids
    ]
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"phone_number_id": "1"},
        "statuses": statuses,
    }
    doc = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}],
    }
    return json.dumps(doc).encode()


@pytest.mark.slow
@pytest.mark.parametrize("per_post", [1, 50])
async def test_status_capacity(tmp_path: Path, store: Store, per_post: int) -> None:
    wamids = await seed(store, MESSAGES)
    bodies = [
        body(wamids[i : i + per_post], status)
        for status in ("delivered", "read")
        for i in range(0, len(wamids), per_post)
    ]
    total = len(wamids) * 2
    settings = load_settings(
        database_url="sqlite:///unused.db",
        flows_dir=tmp_path,
        whatsapp_app_secret=SECRET,
        api_token="t" * 32,
    )
    app = create_app(settings, store=store)
    acks: list[float] = []
    async with running_server(app) as base:
        queue = list(reversed(bodies))
        start = time.perf_counter()

        async def worker(http: aiohttp.ClientSession) -> None:
            while queue:
                raw = queue.pop()
                t0 = time.perf_counter()
                async with http.post(
                    f"{base}/webhook", data=raw, headers={SIGNATURE_HEADER: sign(raw, SECRET)}
                ) as resp:
                    assert resp.status == 200
                acks.append(time.perf_counter() - t0)

        async with aiohttp.ClientSession() as http:
            await asyncio.gather(*(worker(http) for _ in range(32)))
        intake_s = time.perf_counter() - start
        while (await store.inbox_backlog()).waiting:
            await asyncio.sleep(0.05)
        applied_s = time.perf_counter() - start
    acks.sort()
    print(
        f"\n[{store.backend}] {total} statuses in {len(bodies)} POSTs of {per_post}: "
        f"intake {total / intake_s:,.0f} statuses/s ({len(bodies) / intake_s:,.0f} POST/s), "
        f"applied {total / applied_s:,.0f} statuses/s; ack p50 "
        f"{statistics.median(acks) * 1000:.1f} ms, p99 {acks[int(len(acks) * 0.99)] * 1000:.1f} ms"
    )
    statuses = Counter(m.status for m in (await store.snapshot()).messages)
    assert statuses == {"read": MESSAGES}
