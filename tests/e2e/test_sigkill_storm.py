"""Issue 11's trial, as a test: ten SIGKILLs at random moments while sending on
PostgreSQL, status webhooks flowing through a real `dripline serve`. Every conversation
gets its question exactly once.

Timings are scaled down (4 s leases, 3 s evidence margin) so the test takes about a
minute; docs/reliability.md reports the same trial with the default settings.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from dripline.fake import FakeConfig, running_fake
from dripline.store import open_store
from tests.e2e.test_dispatcher_processes import Worker, start_worker, worker_env
from tests.e2e.test_run_serve import free_port
from tests.fixtures.dispatch import TOKEN, WEBHOOK_SECRET, enroll, message_rows, phones, received

KILLS = 10
CONVERSATIONS = 3000


async def _wait_ready(base: str, server: Worker) -> None:
    async with aiohttp.ClientSession() as http, asyncio.timeout(30):
        while True:
            try:
                async with http.get(f"{base}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            assert server.proc.returncode is None, server.stderr()[-2000:]
            await asyncio.sleep(0.2)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_ten_sigkills_while_sending_lose_nothing_and_double_nothing(
    postgres_url: str, tmp_path: Path
) -> None:
    numbers = phones(CONVERSATIONS)
    store = await open_store(postgres_url)
    try:
        await enroll(store, numbers)
    finally:
        await store.close()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = FakeConfig(
        access_token=TOKEN,
        rate_per_s=0,
        pair_interval_s=0,
        latency_ms=40,
        webhook_url=f"{base}/webhook",
        app_secret=WEBHOOK_SECRET,
        read_fraction=0.3,
        window="off",  # this test is about crashes; the window has its own tests
        seed=5,
    )
    rng = random.Random(11)
    async with running_fake(config) as fake:
        env = worker_env(
            postgres_url,
            fake,
            DRIPLINE_RATE_PER_S="150",
            DRIPLINE_UNKNOWN_AFTER_S="3",
            DRIPLINE_WHATSAPP_APP_SECRET=WEBHOOK_SECRET,
            DRIPLINE_PORT=str(port),
        )
        server = await start_worker(env, tmp_path, command="serve")
        workers: list[Worker] = []
        try:
            await _wait_ready(base, server)
            workers = [await start_worker(env, tmp_path) for _ in range(3)]
            killed = 0
            while killed < KILLS:
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                victim = rng.choice([w for w in workers if w.proc.returncode is None])
                victim.proc.kill()
                await victim.wait(10)
                killed += 1
                workers.append(await start_worker(env, tmp_path))
            last_kill = time.monotonic()
            assert len(fake.state.messages) < len(numbers), "the kills came too late"
            async with asyncio.timeout(240):
                while len(received(fake)) < len(numbers):
                    await asyncio.sleep(0.2)
            after_last_kill_s = time.monotonic() - last_kill
            await asyncio.sleep(5.0)  # late duplicates would show up here
        finally:
            for w in workers:
                if w.proc.returncode is None:
                    await w.stop()
            await server.stop()
        got = received(fake)
    store = await open_store(postgres_url)
    try:
        rows = await message_rows(store)
    finally:
        await store.close()
    print(f"\nall {len(numbers)} sent {after_last_kill_s:.1f} s after the last of {KILLS} kills")
    assert got == Counter({p: 1 for p in numbers}), "a question was lost or sent twice"
    statuses = Counter(r.status for r in rows)
    assert statuses["unknown"] == statuses["sending"] == statuses["pending"] == 0, statuses
