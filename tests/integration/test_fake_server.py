"""The fake over loopback HTTP: limiter, webhooks, stats and test endpoints."""

import asyncio
import json
import time

import aiohttp
import pytest

from dripline.errors import WhatsAppError
from dripline.fake import FakeConfig, RunningFake, running_fake
from dripline.flows.base import TemplateMessage
from dripline.whatsapp import CloudApiClient, parse_webhook, verify_signature
from tests.fixtures.fake import FAKE_NUMBER, FAKE_TOKEN, WebhookReceiver
from tests.fixtures.fake import webhook_config as fixture_webhook_config

SECRET = "fake-app-secret"
CHECKIN = TemplateMessage("trial_checkin", "en_US", ("friend",))  # in the default registry


def client_for(fake: RunningFake) -> CloudApiClient:
    return CloudApiClient(
        base_url=fake.base_url, access_token=FAKE_TOKEN, phone_number_id=FAKE_NUMBER
    )


async def test_limiter_at_twice_the_rate_throttles_about_half() -> None:
    rate = 100.0
    config = FakeConfig(access_token=FAKE_TOKEN, rate_per_s=rate, burst=10, pair_interval_s=0)
    async with running_fake(config) as fake, client_for(fake) as client:
        count = 400
        start = time.monotonic()

        async def fire(i: int) -> str:
            # Scheduled at 2x the rate; a late task fires at once, so the offered rate
            # never drops below 2x even on a slow machine.
            await asyncio.sleep(max(0.0, start + i / (2 * rate) - time.monotonic()))
            try:
                await client.send_text(f"+1555{i:07d}", "hi")
                return "ok"
            except WhatsAppError as exc:
                return exc.error_class

        results = await asyncio.gather(*(fire(i) for i in range(count)))
    throttled = results.count("throttle")
    assert results.count("ok") + throttled == count
    assert 0.3 <= throttled / count <= 0.65
    assert fake.state.snapshot()["throttled"] == throttled


async def http_json(method: str, url: str) -> object:
    async with aiohttp.ClientSession() as session, session.request(method, url) as resp:
        assert resp.status == 200
        return await resp.json()


async def test_stats_messages_and_reset_endpoints(
    fake_api: RunningFake, fake_client: CloudApiClient
) -> None:
    await fake_client.send_text("+15551230001", "same")
    await fake_client.send_text("+15551230001", "same")
    await fake_client.send_text("+15551230002", "same")
    with pytest.raises(WhatsAppError):
        await fake_client.send_text("bad", "x")
    stats = await http_json("GET", f"{fake_api.base_url}/_fake/stats")
    assert isinstance(stats, dict)
    assert stats["accepted"] == 3
    assert stats["errors_by_code"] == {"100": 1}
    assert stats["duplicates"] == 1
    assert stats["duplicate_examples"] == [{"to": "15551230001", "body": "same", "count": 2}]
    messages = await http_json("GET", f"{fake_api.base_url}/_fake/messages?to=%2B15551230002")
    assert isinstance(messages, list)
    assert [m["to"] for m in messages] == ["15551230002"]
    assert {"wamid", "received_monotonic", "received_wall", "callback_data"} <= set(messages[0])
    await http_json("POST", f"{fake_api.base_url}/_fake/reset")
    stats = await http_json("GET", f"{fake_api.base_url}/_fake/stats")
    assert isinstance(stats, dict)
    assert (stats["accepted"], stats["duplicates"]) == (0, 0)


def webhook_config(receiver: WebhookReceiver, **overrides: object) -> FakeConfig:
    base = {"read_delay_s": 0.04, "read_fraction": 1.0, "reply_delay_s": 0.05, "seed": 5}
    return fixture_webhook_config(receiver, SECRET, **{**base, **overrides})


def parsed_posts(receiver: WebhookReceiver) -> list[tuple[str, str]]:
    events = []
    for body, _ in receiver.posts:
        batch = parse_webhook(body)
        events += [(s.status, s.id) for s in batch.statuses]
        events += [("inbound:" + (m.text or ""), m.from_) for m in batch.messages]
    return events


async def test_status_webhooks_are_signed_and_echo_callback_data(
    webhook_receiver: WebhookReceiver,
) -> None:
    config = webhook_config(webhook_receiver, reply_fraction=1.0, reply_text="Sure")
    async with running_fake(config) as fake, client_for(fake) as client:
        # A template: the user never wrote, so nothing else may open the conversation.
        result = await client.send(
            "+15551234567",
            TemplateMessage("trial_checkin", "en_US", ("Ana",)),
            callback_data="conv:42",
        )
        assert not fake.state.window_open(FAKE_NUMBER, "15551234567", time.monotonic())
        await webhook_receiver.wait_for(lambda: len(parsed_posts(webhook_receiver)) >= 4)
    for body, signature in webhook_receiver.posts:
        assert verify_signature(body, signature, SECRET)
        doc = json.loads(body)
        assert doc["object"] == "whatsapp_business_account"
        assert doc["entry"][0]["changes"][0]["field"] == "messages"
        assert doc["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] == FAKE_NUMBER
    events = parsed_posts(webhook_receiver)
    assert sorted(events) == sorted(
        [
            ("sent", result.wamid),
            ("delivered", result.wamid),
            ("read", result.wamid),
            ("inbound:Sure", "15551234567"),
        ]
    )
    statuses = [s for body, _ in webhook_receiver.posts for s in parse_webhook(body).statuses]
    assert {s.biz_opaque_callback_data for s in statuses} == {"conv:42"}
    # The reply opened the window with this number only.
    assert fake.state.window_open(FAKE_NUMBER, "15551234567", time.monotonic())
    assert not fake.state.window_open("another-number", "15551234567", time.monotonic())


async def test_a_changed_byte_fails_the_fakes_signature(
    webhook_receiver: WebhookReceiver,
) -> None:
    async with running_fake(webhook_config(webhook_receiver)) as fake, client_for(fake) as client:
        await client.send_text("+15551234567", "hi")
        await webhook_receiver.wait_for(lambda: len(webhook_receiver.posts) >= 1)
    body, signature = webhook_receiver.posts[0]
    assert verify_signature(body, signature, SECRET)
    tampered = body.replace(b"whatsapp_business_account", b"whatsapp_business_accounT", 1)
    assert tampered != body
    assert not verify_signature(tampered, signature, SECRET)


async def test_undeliverable_numbers_fail_by_webhook_without_callback_data(
    webhook_receiver: WebhookReceiver,
) -> None:
    config = webhook_config(webhook_receiver, undeliverable_fraction=1.0)
    async with running_fake(config) as fake, client_for(fake) as client:
        sent = await client.send(
            "+15551234567", TemplateMessage("trial_checkin", "en_US", ("x",)), callback_data="c"
        )
        await webhook_receiver.wait_for(lambda: len(parsed_posts(webhook_receiver)) >= 1)
        await asyncio.sleep(0.1)  # nothing else follows
    statuses = [s for body, _ in webhook_receiver.posts for s in parse_webhook(body).statuses]
    assert [(s.status, s.id) for s in statuses] == [("failed", sent.wamid)]
    assert statuses[0].errors[0].code == 131026
    # Meta echoes biz_opaque_callback_data on sent/delivered/read only.
    assert statuses[0].biz_opaque_callback_data is None
    assert fake.state.snapshot()["failed_by_code"] == {"131026": 1}


async def test_duplicates_batching_and_stop_replies(webhook_receiver: WebhookReceiver) -> None:
    config = webhook_config(
        webhook_receiver,
        duplicate_fraction=1.0,
        read_fraction=0.0,
        stop_fraction=1.0,
        webhook_batch_max=2,
        sent_delay_s=0.0,
        delivered_delay_s=0.0,
        reply_delay_s=0.0,
        webhook_flush_s=0.05,
    )
    async with running_fake(config) as fake, client_for(fake) as client:
        await asyncio.gather(*(client.send(f"+1555000{i:04d}", CHECKIN) for i in range(5)))
        # 5 x (sent + delivered + STOP), each delivered twice.
        await webhook_receiver.wait_for(lambda: len(parsed_posts(webhook_receiver)) >= 30)
    events = parsed_posts(webhook_receiver)
    assert len(events) == 30
    assert events.count(("inbound:STOP", "15550000003")) == 2
    for body, _ in webhook_receiver.posts:
        value = json.loads(body)["entry"][0]["changes"][0]["value"]
        assert len(value.get("statuses", value.get("messages", []))) <= 2
    assert fake.state.stats.webhook_updates == 30


async def test_failed_webhook_posts_are_retried(webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.fail_next = 1
    config = webhook_config(webhook_receiver, read_fraction=0.0, delivered_delay_s=0.0)
    async with running_fake(config) as fake, client_for(fake) as client:
        result = await client.send("+15551234567", CHECKIN)
        await webhook_receiver.wait_for(lambda: len(parsed_posts(webhook_receiver)) >= 2)
    assert sorted(parsed_posts(webhook_receiver)) == [
        ("delivered", result.wamid),
        ("sent", result.wamid),
    ]
    assert fake.state.stats.webhook_failures == 1


async def test_a_dead_webhook_receiver_never_slows_sends() -> None:
    config = FakeConfig(
        access_token=FAKE_TOKEN, webhook_url="http://127.0.0.1:9/nowhere", webhook_flush_s=0.01
    )
    async with running_fake(config) as fake, client_for(fake) as client:
        results = await asyncio.gather(
            *(client.send_text(f"+1555000{i:04d}", "hi") for i in range(50))
        )
    assert len(results) == 50
    assert fake.state.stats.accepted == 50


async def test_inbound_endpoint_opens_the_window(fake_api: RunningFake) -> None:
    fake_api.state.config.window = "sync"
    async with client_for(fake_api) as client:
        with pytest.raises(WhatsAppError):
            await client.send_text("+15551234567", "hi")
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{fake_api.base_url}/_fake/inbound",
                json={"from": "+15551234567", "text": "hey", "phone_number_id": FAKE_NUMBER},
            ) as resp,
        ):
            assert resp.status == 200
        await client.send_text("+15551234567", "hi")


async def test_outage_endpoint_takes_the_api_down_from_now(
    fake_api: RunningFake, fake_client: CloudApiClient
) -> None:
    base = fake_api.base_url
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/_fake/outage", json={"duration_s": "soon"}) as resp:
            assert resp.status == 400
        async with http.post(f"{base}/_fake/outage", json={"duration_s": 1, "mode": "x"}) as r:
            assert r.status == 400
        await fake_client.send_text("+15551230001", "before")
        async with http.post(f"{base}/_fake/outage", json={"duration_s": 30}) as resp:
            assert resp.status == 200
        with pytest.raises(WhatsAppError):
            await fake_client.send_text("+15551230002", "during")
        async with http.post(f"{base}/_fake/outage", json={"duration_s": 0}) as resp:
            assert resp.status == 200  # over
    await fake_client.send_text("+15551230003", "after")
    stats = await http_json("GET", f"{base}/_fake/stats")
    assert isinstance(stats, dict)
    assert stats["outage_rejections"] >= 1
    assert stats["accepted"] == 2
