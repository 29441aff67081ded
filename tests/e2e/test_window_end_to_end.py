"""Issue 12's "done when", over real loopback HTTP with signed webhooks, on the fake's
faithful defaults (the 24-hour window: text outside it is accepted, then failed 131047
by webhook).

1,000 users who never wrote are enrolled in the shipped free-trial flow, in a time zone
where it is midday (quiet hours satisfied). dripline runs on an injected clock that the
test moves from one due time to the next (the flow takes days); the users' answers are
signed webhooks stamped with that clock. Four kinds of users:

- A answer every question: the welcome template, then every question as text or
  buttons (23 h
  after an answer: the window is open);
- B answer the first question only: then questions go as the template again (after a
  reply timeout the window has closed);
- C never answer: every question as a template, no text reminder;
- D wrote to dripline but the Cloud API never saw it (its window stays closed): their
  step 2 buttons are accepted and then refused with 131047 by webhook; dripline sends the
  step's template once instead, and the refusal stays visible on the conversation.

A second test: the API accepts, then reports 131026 for 10 of 100 users; those 10
conversations end `failed` with the code and reason, the 90 others go on.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dripline.clock import FakeClock
from dripline.dispatcher.engine import Dispatcher
from dripline.fake import FakeConfig, running_fake
from dripline.fake.rules import is_undeliverable
from dripline.flows import load_flows
from dripline.server.app import create_app
from dripline.server.testing import running_server
from dripline.settings import Settings
from dripline.store import Store
from dripline.whatsapp import CloudApiClient
from dripline.whatsapp.webhooks import SIGNATURE_HEADER, sign
from tests.fixtures.clocked import REPO, Harness, clocked_settings, clocked_world, midday_zone

SECRET = "e2e-window-secret"
TOKEN = "test-token"
NUMBER = "100000000000001"
USERS = 1_000
API_TOKEN = "e2e-window-api-token"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def phone(n: int) -> str:
    return f"+1415{5500000 + n:07d}"


def kind(n: int) -> str:
    return "D" if n % 100 < 2 else "ABBC"[n % 4] if n % 10 < 8 else "C"


def settings_for(base_url: str) -> Settings:
    return clocked_settings(base_url, secret=SECRET, api_token=API_TOKEN)


# What A users type at each step of the shipped flow (score 8 goes straight to upgrade).
ANSWERS = {0: "yes", 1: "yes", 2: "1", 3: "8", 6: "yes"}


def inbound_body(items: list[tuple[str, str, datetime, str]]) -> bytes:
    messages = [
        {
            "from": p.lstrip("+"),
            "id": wamid,
            "timestamp": str(int(at.timestamp())),
            "type": "text",
            "text": {"body": text},
        }
        for p, wamid, at, text in items
    ]
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": NUMBER},
        "contacts": [{"profile": {"name": "u"}, "wa_id": p.lstrip("+")} for p, *_ in items],
        "messages": messages,
    }
    doc = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}],
    }
    return json.dumps(doc).encode()


class WebhookHarness(Harness):
    """Users answer with signed webhooks posted straight to dripline (stamped with the
    clock); the fake's window opens only where the test says so."""

    async def reply(
        self, http: aiohttp.ClientSession, asked: list[tuple[str, int]], at: datetime
    ) -> None:
        for start in range(0, len(asked), 200):
            items = []
            for p, step in asked[start : start + 200]:
                self.seq += 1
                items.append((p, f"wamid.IN{self.seq:06d}", at, ANSWERS[step]))
            body = inbound_body(items)
            headers = {SIGNATURE_HEADER: sign(body, SECRET)}
            async with http.post(f"{self.base}/webhook", data=body, headers=headers) as resp:
                assert resp.status == 200


@pytest.mark.slow
async def test_a_thousand_new_users_through_the_free_trial_flow(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'window.db'}"
    start = datetime.now(UTC).replace(microsecond=0)
    clock = FakeClock(start)
    zone = midday_zone(start)
    flows = load_flows(REPO / "flows")
    config = FakeConfig(
        access_token=TOKEN,
        rate_per_s=0,
        pair_interval_s=0,
        app_secret=SECRET,
        sent_delay_s=0.01,
        delivered_delay_s=0.02,
        read_fraction=0.0,
        seed=12,
    )
    async with clocked_world(url, clock, config, secret=SECRET, api_token=API_TOKEN) as w:
        app, base, fake, http, client, store = w.app, w.base, w.fake, w.http, w.client, w.store
        h = WebhookHarness(store, flows, fake, base, clock, w.settings)
        items = [{"phone": phone(n), "flow": "free-trial", "timezone": zone} for n in range(USERS)]
        async with http.post(f"{base}/v1/conversations", json=items) as resp:
            assert resp.status == 201, await resp.text()
        answered: set[tuple[str, int]] = set()
        for _ in range(120):
            await h.send_due(client)
            await h.settle(app)
            snap = await store.snapshot()
            # Each user answers what their kind answers, 10 minutes after it was asked.
            asked = {(c.phone, c.step) for c in snap.conversations if c.state == "awaiting_reply"}
            due = []
            for p, step in sorted(asked - answered):
                k = kind(int(p[-4:]))
                if k == "A" or (k in "BD" and step == 0):
                    due.append((p, step))
                    answered.add((p, step))
            if due:
                at = clock.now() + timedelta(minutes=10)
                clock.set(at)
                # A and B wrote to the business number: the API's window opens too.
                for p, _ in due:
                    if kind(int(p[-4:])) != "D":
                        fake.state.open_window(NUMBER, p.lstrip("+"))
                await h.reply(http, due, at)
                await h.settle(app)
                continue
            nxt = await store.next_due_at(clock.now() - timedelta(days=3650))
            if nxt is None:
                break
            clock.set(max(nxt, clock.now()))
        snap = await store.snapshot()
        sent = list(fake.state.messages)

    by_user: dict[str, list[Any]] = defaultdict(list)
    for m in sent:
        by_user["+" + m.to].append(m)
    convs = {c.phone: c for c in snap.conversations}
    msgs_of: dict[int, list[Any]] = defaultdict(list)
    for row in snap.messages:
        msgs_of[row.conversation_id].append(row)
    assert len(convs) == USERS
    for n in range(USERS):
        p, k = phone(n), kind(n)
        conv, got = convs[p], by_user[p]
        # Everyone's welcome went as the welcome template, accepted and never refused.
        assert (got[0].type, got[0].body) == ("template", "trial_welcome"), (p, got[0])
        assert got[0].failure_code is None
        # Never completed while one of its questions was refused.
        refused = [m for m in got if m.failure_code is not None]
        assert conv.state == "completed", (p, k, conv)
        types = [(m.type, m.body if m.type == "template" else "-") for m in got]
        if k == "A":
            # Yes/no and the feature list as interactive messages, the score as text.
            assert types == [
                ("template", "trial_welcome"),
                ("interactive", "-"),
                ("interactive", "-"),
                ("text", "-"),
                ("interactive", "-"),
            ], (p, types)
            assert refused == []
        elif k == "B":
            # Answered the first: step 2 inside the window; then the template again.
            assert types == [
                ("template", "trial_welcome"),
                ("interactive", "-"),
                ("template", "trial_checkin"),
                ("template", "trial_checkin"),
            ], (p, types)
            assert refused == []
        elif k == "C":
            # Setup's own template (with Yes/No quick replies), then the flow's.
            assert types == [
                ("template", "trial_welcome"),
                ("template", "trial_setup"),
                ("template", "trial_checkin"),
                ("template", "trial_checkin"),
            ], (p, types)
            assert refused == []
        else:
            # D: step 2's buttons refused by webhook (131047), then its template, once.
            assert [m.failure_code for m in refused] == [131047], (p, types)
            assert types[1:3] == [("interactive", "-"), ("template", "trial_setup")], types
            rows = {(r.step, r.purpose): r for r in msgs_of[conv.id]}
            assert (rows[(1, "question")].status, rows[(1, "question")].error_code) == (
                "failed",
                131047,
            )
            assert rows[(1, "question")].error_title
            assert rows[(1, "fallback")].status in ("sent", "delivered", "read")


@pytest.mark.slow
async def test_undeliverable_users_fail_with_the_code_and_reason(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'undeliverable.db'}"
    flows = load_flows(REPO / "flows")
    zone = midday_zone(datetime.now(UTC))
    # Users the fake cannot deliver to: 10 of 100, by the fake's own stable hash.
    fraction = 0.1
    candidates = [phone(n) for n in range(5_000)]
    bad = [p for p in candidates if is_undeliverable(p.lstrip("+"), fraction)][:10]
    good = [p for p in candidates if not is_undeliverable(p.lstrip("+"), fraction)][:90]
    config = FakeConfig(
        access_token=TOKEN,
        rate_per_s=0,
        pair_interval_s=0,
        app_secret=SECRET,
        sent_delay_s=0.01,
        delivered_delay_s=0.02,
        undeliverable_fraction=fraction,
        seed=26,
    )
    settings = settings_for("http://unused").model_copy(update={"database_url": url})
    app = create_app(settings)
    async with running_server(app) as base:
        config.webhook_url = f"{base}/webhook"
        async with (
            running_fake(config) as fake,
            aiohttp.ClientSession(headers=AUTH) as http,
            CloudApiClient(
                base_url=fake.base_url, access_token=TOKEN, phone_number_id=NUMBER
            ) as client,
        ):
            store: Store = app.state.store
            items = [{"phone": p, "flow": "free-trial", "timezone": zone} for p in bad + good]
            async with http.post(f"{base}/v1/conversations", json=items) as resp:
                assert resp.status == 201, await resp.text()
                ids = {r["conversation"]["phone"]: r["id"] for r in (await resp.json())["results"]}
            d = Dispatcher(store=store, client=client, flows=flows, settings=settings)
            await d.run(once=True)
            async with asyncio.timeout(20):
                while True:
                    await app.state.processor.drain()
                    states = await store.conversations_by_ids(list(ids.values()))
                    if sum(c.state == "failed" for c in states.values()) >= 10:
                        break
                    await asyncio.sleep(0.1)
            await asyncio.sleep(0.3)
            await app.state.processor.drain()
            details = {}
            for p in bad + good[:5]:
                async with http.get(f"{base}/v1/conversations/{ids[p]}") as resp:
                    details[p] = await resp.json()
            convs = await store.conversations_by_ids(list(ids.values()))
    accepted = {m.to for m in fake.state.messages}
    assert {p.lstrip("+") for p in bad} <= accepted  # the API took them (200 and a wamid)
    for p in bad:
        conv = convs[ids[p]]
        assert conv.state == "failed", (p, conv)
        assert "131026" in (conv.last_error or "") and "undeliverable" in (conv.last_error or "")
        detail = details[p]
        assert detail["state"] == "failed" and "131026" in detail["last_error"]
        [msg] = detail["messages"]
        assert (msg["status"], msg["error_code"]) == ("failed", 131026)
        assert msg["error_title"]
    for p in good:
        assert convs[ids[p]].state == "awaiting_reply", (p, convs[ids[p]])
