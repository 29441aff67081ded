"""Scenario 7: signed status webhooks at 3,000/s into `dripline serve`."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Sequence

import aiohttp

from bench import bulk
from bench.context import (
    BACKENDS,
    Bench,
)
from bench.harness import (
    APP_SECRET,
    DRIPLINE,
    PHONE_NUMBER_ID,
    ConnectionCounter,
    PostgresCpu,
    digits,
    free_port,
    spawn,
    stop_all,
)
from bench.measure import Row, pct
from dripline.store import open_store
from dripline.whatsapp.webhooks import SIGNATURE_HEADER, sign


# ---------------------------------------------------------------- scenario 7
def _status_body(ids: Sequence[int], status: str, ts: int) -> bytes:
    import json

    statuses = [
        {"id": f"wamid.B{i}", "status": status, "timestamp": str(ts), "recipient_id": digits(i)}
        for i in ids
    ]
    doc = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "100000000000000",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550000000",
                                "phone_number_id": PHONE_NUMBER_ID,
                            },
                            "statuses": statuses,
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


async def scenario_7(b: Bench) -> None:
    s = b.sizes
    total = int(s.webhook_rate * s.webhook_s)
    per_post = s.webhook_per_post
    n_msgs = total // 2  # each message gets `delivered`, then `read`
    for backend in BACKENDS:
        await _webhooks_on(b, backend, total, per_post, n_msgs)


async def _webhooks_on(b: Bench, backend: str, total: int, per_post: int, n_msgs: int) -> None:
    s = b.sizes
    url = await b.dbs.fresh(backend, "s7")
    if backend == "sqlite":
        store = await open_store(url, pool_size=1)
        await store.close()
    await bulk.load_sent_messages(url, n_msgs)
    port = free_port()
    counter = ConnectionCounter(url)
    counter.start()
    env = b.dripline_env(url, None)
    server = spawn("serve", [DRIPLINE, "serve", "--port", str(port)], env, b.workdir)
    base = f"http://127.0.0.1:{port}"
    bodies: list[bytes] = []
    ts = int(time.time())
    for status, offset in (("delivered", 0), ("read", 1)):
        for lo in range(1, n_msgs + 1, per_post):
            ids = range(lo, min(n_msgs, lo + per_post - 1) + 1)
            bodies.append(_status_body(list(ids), status, ts + offset))
    acks: list[float] = []
    errors = 0
    why_failed: Counter[str] = Counter()
    posts_per_s = s.webhook_rate / per_post
    pg = PostgresCpu() if backend == "postgres" else None
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=256)
    ) as http:
        deadline = time.monotonic() + 30
        while True:
            try:
                async with http.get(f"{base}/healthz") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline or not server.running():
                raise RuntimeError(f"dripline serve did not start: {server.stderr_tail()}")
            await asyncio.sleep(0.1)

        async def post(raw: bytes) -> None:
            nonlocal errors
            t0 = time.perf_counter()
            try:
                async with http.post(
                    f"{base}/webhook",
                    data=raw,
                    headers={
                        SIGNATURE_HEADER: sign(raw, APP_SECRET),
                        "Content-Type": "application/json",
                    },
                ) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                        why_failed[f"HTTP {resp.status}"] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors += 1
                why_failed[type(exc).__name__] += 1
            acks.append(time.perf_counter() - t0)

        b.progress.start(f"7 {backend} webhooks", len(bodies))
        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        for k, raw in enumerate(bodies):  # open loop: POST k goes at start + k / rate
            delay = start + k / posts_per_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(raw)))
            if k % 20 == 0:
                b.progress.advance(len(acks))
                server.sample_rss()
                if pg is not None:
                    pg.sample()
        await asyncio.gather(*tasks)
        intake_s = time.perf_counter() - start
        b.progress.advance(len(acks))
        # Wait (bounded) for the processor to apply the inbox.
        deadline = time.monotonic() + 120
        counts = await bulk.status_counts(url)
        while counts.get("_inbox_pending", 0) and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            if pg is not None:
                pg.sample()
            counts = await bulk.status_counts(url)
        applied_s = time.perf_counter() - start
        b.progress.finish()
    await stop_all([server], 30)
    conns = await counter.stop()
    pg_cpu = pg.used_s if pg is not None else None
    acks.sort()
    over_1s = sum(1 for a in acks if a > 1.0) / max(1, len(acks))
    applied = counts.get("read", 0) * 2
    lost = total - applied
    row = Row(
        scenario="7",
        run=f"webhooks {s.webhook_rate:,}/s for {s.webhook_s:g} s, {per_post} per POST",
        system="dripline serve",
        backend=backend,
        messages=total,
        wall_s=round(intake_s, 2),
        throughput_per_s=round(total / intake_s, 1),
        bound_per_s=float(s.webhook_rate),
        ratio_to_bound=round(total / intake_s / s.webhook_rate, 3),
        lag_p50_ms=round(statistics.median(acks) * 1000, 1) if acks else None,
        lag_p95_ms=round(pct(acks, 0.95) * 1000, 1),
        lag_p99_ms=round(pct(acks, 0.99) * 1000, 1),
        lag_max_ms=round(acks[-1] * 1000, 1) if acks else None,
        duplicates=0,
        missing=lost,
        db_connections=conns,
        notes=f"lag columns are POST ack times; {errors} failed POSTs; applied at "
        f"{total / applied_s:,.0f} statuses/s; {over_1s:.2%} acks over 1 s",
    )
    b._usage(row, [server], conns, pg_cpu, 0.0)
    row.extra.update(
        posts=len(bodies),
        failed_posts=errors,
        failed_posts_why=dict(why_failed),
        server_log_tail=server.stderr_tail(20) if errors else "",
        ack_over_1s=round(over_1s, 4),
        applied_s=round(applied_s, 2),
        status_counts=counts,
    )
    b.add(row)
    b.check(
        "7",
        f"{backend}: none lost",
        f"{lost} lost, {errors} failed POSTs",
        lost == 0 and errors == 0 and counts.get("_inbox_errors", 0) == 0,
    )
    b.check(
        "7",
        f"{backend}: median ack <= 250 ms",
        f"{row.lag_p50_ms} ms",
        (row.lag_p50_ms or 1e9) <= 250,
    )
    b.check("7", f"{backend}: < 1% of acks over 1 s", f"{over_1s:.2%}", over_1s < 0.01)
