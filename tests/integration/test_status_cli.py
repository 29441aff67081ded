"""`dripline status --json` reports what the database holds, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dripline.cli import app
from dripline.dispatcher.engine import Dispatcher
from dripline.fake import FakeConfig, running_fake
from dripline.flows import FlowSet
from dripline.settings import load_settings
from dripline.store import Enrollment, Store, WorkerInfo, open_store
from dripline.whatsapp import CloudApiClient
from tests.fixtures.dispatch import watch_flows

TOKEN = "tok"


async def _dispatch(store: Store, url: str, fake: FakeConfig, flows: FlowSet) -> None:
    async with (
        running_fake(fake) as api,
        CloudApiClient(phone_number_id="1", access_token=TOKEN, base_url=api.base_url) as client,
    ):
        settings = load_settings(
            database_url=url,
            rate_per_s=500,
            pair_interval_s=0,
            whatsapp_access_token=TOKEN,
            max_attempts=1,
        )
        dispatcher = Dispatcher(store=store, client=client, flows=flows, settings=settings)
        await dispatcher.run(once=True)


def _status_json(url: str, *extra: str) -> dict[str, object]:
    result = CliRunner().invoke(app, ["status", "--database-url", url, "--json", *extra])
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.stdout)
    return data


async def test_status_json_matches_the_database(store_url: str, tmp_path: Path) -> None:
    store = await open_store(store_url)
    try:
        now = datetime.now(UTC)
        due = [
            Enrollment(phone=f"+1555000{i:04d}", flow="watch", at=now - timedelta(seconds=5))
            for i in range(30)
        ]
        later = [
            Enrollment(phone=f"+1555100{i:04d}", flow="watch", at=now + timedelta(minutes=20))
            for i in range(4)
        ]
        await store.enroll(due + later, now)
        # Every fifth send answers HTTP 500 with code 1: one attempt allowed, so they fail.
        await _dispatch(
            store,
            store_url,
            FakeConfig(access_token=TOKEN, pair_interval_s=0, fail_500_fraction=0.2, seed=11),
            watch_flows(tmp_path),
        )
        await store.heartbeat(
            WorkerInfo(
                id="worker-a",
                hostname="host-a",
                pid=4242,
                started_at=now,
                heartbeat_at=datetime.now(UTC),
                rate_per_s=40.0,
                concurrency=16,
                policy="adaptive",
                stats={"sent": 1, "in_flight": 0},
            ),
            live_after_s=10,
        )
        # What the database holds, counted independently of the status queries.
        rows = await store.snapshot()
        sent = sum(m.status == "sent" for m in rows.messages)
        failed = sum(m.status == "failed" for m in rows.messages)
        in_progress = sum(c.state == "in_progress" for c in rows.conversations)
        failed_convs = sum(c.state == "failed" for c in rows.conversations)
    finally:
        await store.close()
    assert sent > 0 and failed > 0 and sent + failed == 30

    data = await asyncio.to_thread(_status_json, store_url)

    throughput = data["throughput"]
    assert isinstance(throughput, dict)
    assert throughput["1m"]["sent"] == sent
    assert throughput["15m"]["sent"] == sent
    assert throughput["1m"]["per_s"] == pytest.approx(sent / 60, abs=1e-3)
    assert data["conversations"] == {
        "pending": 4,
        "in_progress": in_progress,
        "awaiting_reply": 0,
        "completed": 0,
        "failed": failed_convs,
        "opted_out": 0,
        "cancelled": 0,
    }
    backlog = data["backlog"]
    assert isinstance(backlog, dict)
    assert backlog["due_now"] == 0
    assert backlog["overdue_1m"] == 0
    assert backlog["leased"] == 0
    # The 4 later enrollments, plus every sent conversation's second message (in 30 min).
    assert backlog["due_next_hour"] == 4 + in_progress
    lag = data["lag"]
    assert isinstance(lag, dict)
    assert lag["samples"] == sent
    assert 0 <= lag["p50_s"] <= lag["p99_s"] <= lag["max_s"]
    errors = data["errors"]
    assert isinstance(errors, dict)
    assert errors["total"] == failed
    assert errors["by_class"] == {"transient": failed}
    assert errors["by_code"] == [
        {
            "code": 1,
            "status": "failed",
            "count": failed,
            "error_class": "transient",
            "meaning": "Unknown API error",
        }
    ]
    workers = data["workers"]
    assert isinstance(workers, dict)
    assert workers["count"] == 1
    assert workers["rate_per_s"] == 40.0
    (worker,) = workers["list"]
    assert (worker["id"], worker["policy"], worker["concurrency"]) == ("worker-a", "adaptive", 16)
    # Nothing secret or personal in the document.
    text = json.dumps(data)
    assert TOKEN not in text and "+1555" not in text


async def test_status_counts_overdue_and_stale_workers(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        now = datetime.now(UTC)
        await store.enroll(
            [
                Enrollment(phone="+15550000001", flow="watch", at=now - timedelta(minutes=5)),
                Enrollment(phone="+15550000002", flow="watch", at=now - timedelta(seconds=10)),
                Enrollment(phone="+15550000003", flow="watch", at=now + timedelta(hours=2)),
            ],
            now,
        )
        await store.heartbeat(
            WorkerInfo(
                id="gone",
                hostname="h",
                pid=1,
                started_at=now - timedelta(hours=1),
                heartbeat_at=now - timedelta(minutes=5),
                rate_per_s=80.0,
                concurrency=8,
                policy="static",
            ),
            live_after_s=10,
        )
    finally:
        await store.close()
    data = await asyncio.to_thread(_status_json, store_url)
    assert data["backlog"] == {"due_now": 2, "overdue_1m": 1, "due_next_hour": 0, "leased": 0}
    workers = data["workers"]
    assert isinstance(workers, dict)
    assert workers["count"] == 0
    assert data["throughput"]["1m"]["sent"] == 0  # type: ignore[index]


def test_status_refuses_a_missing_sqlite_file(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/missing.db"
    result = CliRunner().invoke(app, ["status", "--database-url", url])
    assert result.exit_code != 0
    assert "no SQLite database" in result.output


def test_status_renders_one_screen(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/d.db"
    asyncio.run(_make_empty(url))
    result = CliRunner().invoke(app, ["status", "--database-url", url], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    for heading in ("backlog", "sent", "lag", "conversations", "errors", "live workers: 0"):
        assert heading in result.output


async def _make_empty(url: str) -> None:
    store = await open_store(url)
    await store.close()
