"""Several sender numbers over real HTTP (issue 15 item 6): each number sends at its own
limit and the fake refuses beyond it with 130429; a user in two flows on two numbers
gets each reply on the right conversation, and a reply to one number opens only that
number's 24-hour window.

The dispatcher sends through the fake Cloud API; users answer through the fake, whose
signed webhooks (`metadata.phone_number_id` = the number written to) go through the
server's intake and the inbox processor.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from dripline.dispatcher.engine import Dispatcher
from dripline.fake import FakeConfig, running_fake
from dripline.flows import FlowSet, load_flows
from dripline.server.app import create_app
from dripline.server.testing import running_server
from dripline.store import Store
from tests.fixtures.dispatch import (
    API_TOKEN,
    NUMBER,
    TOKEN,
    WEBHOOK_SECRET,
    client_for,
    fast_settings,
)

B = "100000000000002"  # the second number; NUMBER is the default one

ASK = """\
name: {name}
{sender}steps:
  - id: q1
    template: {{name: trial_checkin, language: en_US, body_params: ["friend"]}}
    wait_for_reply: true
    reply_timeout: 1h
  - id: q2
    after: 1h
    text: "Thanks."
"""

USERS = [f"+1415{5510000 + i:07d}" for i in range(30)]


def two_flows(tmp_path: Path) -> FlowSet:
    """`on-a` sends from the default number; `on-b` says `sender:` B in its file."""
    (tmp_path / "flows").mkdir(exist_ok=True)
    (tmp_path / "flows" / "on-a.yaml").write_text(ASK.format(name="on-a", sender=""))
    (tmp_path / "flows" / "on-b.yaml").write_text(ASK.format(name="on-b", sender=f"sender: {B}\n"))
    return load_flows(tmp_path / "flows")


async def test_the_fake_limits_each_number_at_its_own_rate() -> None:
    """Meta's throughput is per business phone number [TP]: a burst beyond one number's
    bucket is refused with 130429 while another number with a bigger bucket takes it."""
    config = FakeConfig(access_token=TOKEN, number_rates={NUMBER: 50.0, B: 5.0})
    config.pair_interval_s = 0.0
    async with running_fake(config) as fake, aiohttp.ClientSession() as http:
        codes: dict[str, list[int]] = {NUMBER: [], B: []}
        for number in (NUMBER, B):
            for i in range(10):
                body = {
                    "messaging_product": "whatsapp",
                    "to": f"+1415555{i:04d}",
                    "type": "template",
                    "template": {
                        "name": "trial_checkin",
                        "language": {"code": "en_US"},
                        "components": [
                            {"type": "body", "parameters": [{"type": "text", "text": "x"}]}
                        ],
                    },
                }
                async with http.post(
                    f"{fake.base_url}/v23.0/{number}/messages",
                    json=body,
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ) as resp:
                    data = await resp.json()
                    codes[number].append(data["error"]["code"] if "error" in data else 200)
        async with http.get(
            f"{fake.base_url}/v23.0/{B}?fields=throughput",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as resp:
            level = (await resp.json())["throughput"]["level"]
    assert codes[NUMBER] == [200] * 10
    # A bucket of one second (5 tokens); the burst of 10 takes well under a second
    # here, and a token refilled meanwhile may let a sixth through.
    assert codes[B][:5] == [200] * 5 and 130429 in codes[B][5:]
    assert level == "STANDARD"


@pytest.mark.parametrize("sender_via", ["flow", "enrollment"])
async def test_a_user_in_two_flows_on_two_numbers_gets_each_reply_right(
    store: Store, tmp_path: Path, sender_via: str
) -> None:
    flows = two_flows(tmp_path)
    # Each number at its own rate, both within what the fake allows: no 130429.
    settings = fast_settings(
        "sqlite:///unused.db",
        whatsapp_app_secret=WEBHOOK_SECRET,
        rate_per_s=40.0,
        senders=f"{B}:20",
    )
    if sender_via == "flow":
        b_item: dict[str, str] = {"flow": "on-b"}
    else:
        # One active conversation per (phone, flow): a copy of on-a, B named at enrollment.
        (tmp_path / "flows" / "on-a2.yaml").write_text(ASK.format(name="on-a2", sender=""))
        flows = load_flows(tmp_path / "flows")
        b_item = {"flow": "on-a2", "sender": B}
    app = create_app(settings, store=store, flows=flows)
    config = FakeConfig(
        access_token=TOKEN,
        app_secret=WEBHOOK_SECRET,
        number_rates={NUMBER: 50.0, B: 25.0},
        sent_delay_s=0.0,
        delivered_delay_s=0.01,
        read_fraction=0.0,
        pair_interval_s=0.0,
        webhook_flush_s=0.01,
        seed=7,
    )
    async with running_server(app) as base:
        config.webhook_url = f"{base}/webhook"
        on_a = await enroll_over_http(base, [{"phone": p, "flow": "on-a"} for p in USERS])
        on_b = await enroll_over_http(base, [{"phone": p, **b_item} for p in USERS])
        ids = [*on_a.values(), *on_b.values()]
        stored = await store.conversations_by_ids(ids)
        assert {stored[i].sender for i in on_a.values()} == {None}  # the default number
        assert {stored[i].sender for i in on_b.values()} == {B}
        async with running_fake(config) as fake, client_for(fake) as client:
            d = Dispatcher(store=store, client=client, flows=flows, settings=settings)
            task = asyncio.ensure_future(d.run(max_seconds=90))
            try:
                async with asyncio.timeout(90):
                    while True:
                        rows = await store.conversations_by_ids(ids)
                        if all(c.state == "awaiting_reply" for c in rows.values()):
                            break
                        await asyncio.sleep(0.05)
            finally:
                d.request_stop()
            per_number = d.senders_snapshot()
            await task
            sent_from = {(m.phone_number_id, "+" + m.to.lstrip("+")) for m in fake.state.messages}
            throttled = fake.state.errors_by_code.get(130429, 0)
            async with aiohttp.ClientSession() as http:
                for i, phone in enumerate(USERS):
                    # Everyone answers B; the first half answer A too, after B, quoting
                    # nothing: only the number written to says which conversation.
                    writes = [(B, f"b{i}")] + ([(NUMBER, f"a{i}")] if i < 15 else [])
                    for number, text in writes:
                        body = {"from": phone, "text": text, "phone_number_id": number}
                        async with http.post(f"{fake.base_url}/_fake/inbound", json=body) as r:
                            assert r.status == 200, await r.text()
            wanted = len(USERS) + 15
            async with asyncio.timeout(30):
                while True:
                    snap = await store.snapshot()
                    if len(snap.inbound) >= wanted and (await store.inbox_backlog()).waiting == 0:
                        break
                    await asyncio.sleep(0.05)
    # Each conversation went out from its own number, and neither exceeded its limit.
    assert sent_from == {(NUMBER, p) for p in USERS} | {(B, p) for p in USERS}
    assert throttled == 0
    assert (per_number[NUMBER]["rate_per_s"], per_number[B]["rate_per_s"]) == (40.0, 20.0)
    assert (per_number[NUMBER]["sent"], per_number[B]["sent"]) == (30, 30)
    got = {(a.conversation_id, a.body, a.sender) for a in snap.inbound}
    assert got == {(on_b[p], f"b{i}", B) for i, p in enumerate(USERS)} | {
        (on_a[p], f"a{i}", None) for i, p in enumerate(USERS[:15])
    }
    rows = await store.conversations_by_ids(ids)
    # Both conversations of a user who answered both moved on; the window of A opened
    # only for those who wrote to A (a message to B does not open A's window).
    assert all(rows[on_b[p]].state != "awaiting_reply" for p in USERS)
    assert [p for p in USERS if rows[on_a[p]].state != "awaiting_reply"] == USERS[:15]
    assert [p for p in USERS if rows[on_a[p]].last_inbound_at is not None] == USERS[:15]


async def enroll_over_http(base: str, items: list[dict[str, str]]) -> dict[str, int]:
    """POST /v1/conversations; {phone: conversation id}."""
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base}/v1/conversations", json=items, headers=auth) as resp,
    ):
        assert resp.status == 201, await resp.text()
        body = await resp.json()
    return {i["phone"]: r["id"] for i, r in zip(items, body["results"], strict=True)}


async def test_an_unknown_sender_is_a_422_naming_the_field(store: Store, tmp_path: Path) -> None:
    flows = two_flows(tmp_path)
    settings = fast_settings("sqlite:///unused.db", senders=B)
    app = create_app(settings, store=store, flows=flows)
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    items = [
        {"phone": USERS[0], "flow": "on-a", "sender": B},
        {"phone": USERS[1], "flow": "on-a", "sender": "999"},
    ]
    async with (
        running_server(app) as base,
        aiohttp.ClientSession() as http,
        http.post(f"{base}/v1/conversations", json=items, headers=auth) as resp,
    ):
        assert resp.status == 422
        detail = (await resp.json())["detail"]
    assert detail.startswith("body[1].sender: '999' is not a configured phone number id")
    assert (await store.snapshot()).conversations == ()  # all or nothing
