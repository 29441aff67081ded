"""Metrics move with a real dispatcher run against the fake Cloud API, and `/metrics`
serves them over HTTP with backlog gauges read from the database."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dripline.dispatcher.engine import Dispatcher
from dripline.dispatcher.pacing import SenderPacing
from dripline.errors import DatabaseUnavailable
from dripline.fake import FakeConfig, running_fake
from dripline.flows import FlowSet
from dripline.metrics import PrometheusObserver, new_registry
from dripline.metrics_export import BacklogCollector, metrics_exporter
from dripline.server import metrics_http
from dripline.server.testing import running_server
from dripline.settings import load_settings
from dripline.store import Enrollment, MemoryStore, Store
from dripline.whatsapp import CloudApiClient
from tests.fixtures.dispatch import watch_flows

TOKEN = "tok"


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def scraped(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


async def run_dispatcher(
    store: Store, url: str, observer: PrometheusObserver, flows: FlowSet
) -> Dispatcher:
    """Enroll 40 due conversations and 3 for later; send once; a quarter of the calls fail
    with HTTP 500 (code 1, transient: retried within 10 to 20 minutes, full jitter)."""
    now = datetime.now(UTC)
    await store.enroll(
        [Enrollment(phone=f"+1555000{i:04d}", flow="watch", at=now) for i in range(40)]
        + [
            Enrollment(phone=f"+1555100{i:04d}", flow="watch", at=now + timedelta(minutes=30))
            for i in range(3)
        ],
        now,
    )
    config = FakeConfig(access_token=TOKEN, pair_interval_s=0, fail_500_fraction=0.25, seed=5)
    async with (
        running_fake(config) as api,
        CloudApiClient(phone_number_id="1", access_token=TOKEN, base_url=api.base_url) as client,
    ):
        # Retries far enough out that nothing becomes due while the test reads.
        settings = load_settings(
            database_url=url,
            rate_per_s=500,
            pair_interval_s=0,
            whatsapp_access_token=TOKEN,
            retry_base_s=600,
            retry_cap_s=1200,
        )
        dispatcher = Dispatcher(
            store=store,
            client=client,
            flows=flows,
            settings=settings,
            observer=observer,
        )
        await dispatcher.run(once=True)
    return dispatcher


async def test_observer_counts_match_the_run(
    sql_store: Store, store_url: str, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry)
    dispatcher = await run_dispatcher(sql_store, store_url, observer, watch_flows(tmp_path))
    stats = dispatcher.stats
    assert stats.sent > 0 and stats.retries > 0

    sent = value(registry, "dripline_sends_total", outcome="sent", error_class="none", code="none")
    retried = value(
        registry, "dripline_sends_total", outcome="retry", error_class="transient", code="1"
    )
    assert sent == stats.sent
    assert retried == stats.retries
    assert value(registry, "dripline_retries_total") == stats.retries
    assert value(registry, "dripline_send_latency_seconds_count") == stats.sent
    assert value(registry, "dripline_schedule_lag_seconds_count") == stats.sent
    assert value(registry, "dripline_claimed_total") == stats.claimed
    assert value(registry, "dripline_claim_duration_seconds_count") == stats.claims
    assert value(registry, "dripline_recorded_total") == stats.sent + stats.retries
    assert value(registry, "dripline_record_duration_seconds_count") >= 1
    assert value(registry, "dripline_in_flight") == 0
    assert value(registry, "dripline_concurrency_limit") == dispatcher.concurrency
    assert value(registry, "dripline_rate_limit_per_second") == 500
    assert value(registry, "dripline_circuit_breaker_open") == 0

    text = generate_latest(registry).decode()
    samples = scraped(text)
    key = (
        "dripline_sends_total",
        (("code", "none"), ("error_class", "none"), ("outcome", "sent")),
    )
    assert samples[key] == stats.sent
    assert "+1555" not in text and TOKEN not in text


async def test_metrics_endpoint_over_http(sql_store: Store, store_url: str, tmp_path: Path) -> None:
    store = sql_store
    registry = new_registry()
    observer = PrometheusObserver(registry)
    dispatcher = await run_dispatcher(store, store_url, observer, watch_flows(tmp_path))
    app = FastAPI()
    app.state.store = store
    app.state.metrics_registry = registry
    app.include_router(metrics_http.router)

    async with (
        running_server(app) as base,
        aiohttp.ClientSession() as http,
        http.get(f"{base}/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples = scraped(text)
    backlog = await store.backlog(datetime.now(UTC))

    def one(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert one("dripline_sends_total", outcome="sent", error_class="none", code="none") == (
        dispatcher.stats.sent
    )
    assert one("dripline_backlog_due_now") == backlog.due_now
    assert one("dripline_backlog_overdue") == backlog.overdue_1m
    assert one("dripline_backlog_due_next_hour") == backlog.due_next_hour
    # Every one of the 43 conversations waits within the hour unless due again now: the 3
    # enrolled for later, each sent one's next step (30 min), each retried one (full
    # jitter up to 20 min: now and then one is due again at once and sent in the same run,
    # so sent + retries can count a conversation twice).
    assert one("dripline_backlog_due_next_hour") == 43 - backlog.due_now
    assert dispatcher.stats.sent + dispatcher.stats.retries == dispatcher.stats.claimed
    assert one("dripline_backlog_leased") == 0
    assert one("dripline_conversations", state="in_progress") == backlog.by_state["in_progress"]
    assert one("dripline_backlog_refresh_errors_total") == 0
    if store.backend == "postgresql" or "dripline_db_pool_size" in text:
        assert one("dripline_db_pool_in_use") >= 0
    assert any(name.startswith("process_") or name.startswith("python_") for name, _ in samples)


async def test_backlog_collector_caches_between_refreshes(store: Store) -> None:
    registry = CollectorRegistry()
    collector = BacklogCollector(store, registry, refresh_s=3600)
    assert registry.get_sample_value("dripline_backlog_due_now") is None  # not read yet
    await collector.refresh_if_stale()
    assert registry.get_sample_value("dripline_backlog_due_now") == 0
    now = datetime.now(UTC)
    await store.enroll([Enrollment(phone="+15550000001", flow="watch", at=now)], now)
    await collector.refresh_if_stale()  # fresh enough: no query, old value
    assert registry.get_sample_value("dripline_backlog_due_now") == 0
    await collector.refresh()
    assert registry.get_sample_value("dripline_backlog_due_now") == 1


async def test_backlog_collector_keeps_values_when_the_database_fails() -> None:
    down = False

    async def outage(_method: str) -> None:
        if down:
            raise DatabaseUnavailable("database memory is unavailable: connection refused")

    store = MemoryStore(hook=outage)
    registry = CollectorRegistry()
    collector = BacklogCollector(store, registry, refresh_s=0)
    await collector.refresh()
    down = True  # the database goes away: the next read fails
    await collector.refresh()
    assert registry.get_sample_value("dripline_backlog_refresh_errors_total") == 1
    assert registry.get_sample_value("dripline_backlog_due_now") == 0


async def test_timer_refresh(store: Store) -> None:
    registry = CollectorRegistry()
    collector = BacklogCollector(store, registry, refresh_s=0.01)
    now = datetime.now(UTC)
    await store.enroll([Enrollment(phone="+15550000001", flow="watch", at=now)], now)
    async with collector.running():
        for _ in range(500):
            if registry.get_sample_value("dripline_backlog_due_now") == 1:
                break
            await asyncio.sleep(0.01)
    assert registry.get_sample_value("dripline_backlog_due_now") == 1


async def test_metrics_exporter_for_dripline_run(sql_store: Store, store_url: str) -> None:
    store = sql_store
    settings = load_settings(database_url=store_url)
    now = datetime.now(UTC)
    await store.enroll([Enrollment(phone="+15550000001", flow="watch", at=now)], now)
    async with metrics_exporter(settings, 0, addr="127.0.0.1", refresh_s=0.05) as exporter:
        exporter.observer.on_sent(0.02, 0.5)
        # What `dripline run` hands it: the dispatcher's per-number state.
        pacing = SenderPacing(80.0)
        pacing.on_accept("1111")
        exporter.senders.source = pacing.snapshot
        port = exporter.port
        async with aiohttp.ClientSession() as http:
            text = ""
            for _ in range(200):
                async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                    assert response.status == 200
                    text = await response.text()
                if "dripline_backlog_due_now 1.0" in text:
                    break
                await asyncio.sleep(0.02)
    samples = scraped(text)
    assert samples[("dripline_backlog_due_now", ())] == 1
    assert samples[("dripline_schedule_lag_seconds_count", ())] == 1
    assert samples[("dripline_sender_sent_total", (("sender", "1111"),))] == 1
    assert samples[("dripline_sender_rate_per_second", (("sender", "1111"),))] == 80
    assert "process_resident_memory_bytes" in text or "python_info" in text
    with pytest.raises(OSError):  # the server was shut down with the block
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
