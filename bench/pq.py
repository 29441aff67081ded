"""Procrastinate doing dripline's job: one task per message, scheduled at its due time.

The task sends through dripline's own `CloudApiClient` (the same aiohttp stack), so the
comparison is about scheduling and claiming, not HTTP. A worker process:

    python -m bench.pq --dsn postgresql://... --concurrency 150 --poll-s 5 \
        --base-url http://127.0.0.1:PORT

runs until SIGTERM (Procrastinate's own graceful shutdown). Procrastinate is a
dev-only dependency of the benchmark (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime

from procrastinate import App, PsycopgConnector
from procrastinate.types import JSONValue

from dripline.whatsapp import CloudApiClient

TASK_NAME = "send_question"
TEXT = "Hi there! This is the dripline demo: three messages in all."
_client: CloudApiClient | None = None


def make_app(dsn: str) -> App:
    app = App(connector=PsycopgConnector(conninfo=dsn, min_size=1, max_size=10))

    @app.task(name=TASK_NAME)
    async def send_question(phone: str, ref: str) -> None:
        assert _client is not None
        await _client.send_text(phone, TEXT, callback_data=ref)

    return app


async def prepare(dsn: str) -> None:
    """Create Procrastinate's schema in an empty database."""
    app = make_app(dsn)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def defer(dsn: str, jobs: Sequence[tuple[str, str, datetime]], chunk: int = 1_000) -> None:
    """One job per (phone, ref, due), each scheduled at its due time."""
    app = make_app(dsn)
    async with app.open_async():
        task = app.tasks[TASK_NAME]
        by_due: dict[datetime, list[dict[str, JSONValue]]] = {}
        for phone, ref, due in jobs:
            by_due.setdefault(due, []).append({"phone": phone, "ref": ref})
        for due, kwargs in by_due.items():
            for lo in range(0, len(kwargs), chunk):
                await task.configure(schedule_at=due).batch_defer_async(*kwargs[lo : lo + chunk])


async def work(dsn: str, concurrency: int, poll_s: float | None, base_url: str, token: str) -> None:
    global _client
    app = make_app(dsn)
    _client = CloudApiClient(
        base_url=base_url, access_token=token, phone_number_id="100000000000001"
    )
    try:
        async with app.open_async():
            options: dict[str, float] = {}
            if poll_s is not None:
                options["fetch_job_polling_interval"] = poll_s
            await app.run_worker_async(concurrency=concurrency, **options)  # type: ignore[arg-type]
    finally:
        await _client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--concurrency", type=int, default=150)
    parser.add_argument("--poll-s", type=float, default=None, help="default: Procrastinate's")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--token", default="bench-token")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(work(args.dsn, args.concurrency, args.poll_s, args.base_url, args.token))


if __name__ == "__main__":
    main()
