"""The store contract, part two: the API's, the export's and the operator's queries, run
unchanged on every backend (the `store` fixture)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dripline.store import (
    ConversationUpdate,
    Enrollment,
    MessageUpdate,
    NewInbound,
    Outcome,
    Reservation,
    Store,
    WorkerInfo,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def phone(i: int) -> str:
    return f"+1415555{i:04d}"


def sec(s: float) -> timedelta:
    return timedelta(seconds=s)


async def enroll(
    store: Store, n: int, *, flow: str = "f", start: int = 0, at: datetime = NOW
) -> list[int]:
    items = [Enrollment(phone(start + i), flow, at=at) for i in range(n)]
    return [r.id for r in await store.enroll(items, NOW)]


async def send(
    store: Store,
    cid: int,
    *,
    status: str = "sent",
    at: datetime = NOW,
    step: int = 0,
    latency_ms: float | None = 5.0,
    code: int | None = None,
    state: str = "awaiting_reply",
) -> int:
    """Claim `cid`, reserve its step, record `status` (as the dispatcher does)."""
    claimed = await store.claim_due(1000, 60, "w", at)
    assert cid in {c.id for c in claimed}
    await store.release([c.id for c in claimed if c.id != cid], "w")
    [r] = await store.reserve([Reservation(cid, step, "question", at - sec(2))], "w", at)
    wamid = f"wamid.{cid}.{step}" if status == "sent" else None
    msg = MessageUpdate(
        r.message_id,
        status,
        wamid=wamid,
        error_code=code,
        error_title="boom" if code else None,
        sent_at=at if status == "sent" else None,
        latency_ms=latency_ms if status == "sent" else None,
    )
    nxt = at if state != "completed" else None
    upd = ConversationUpdate(cid, state, step, "question", nxt, 0)
    assert await store.record_results([Outcome(upd, msg)], "w", at) == 1
    return r.message_id


async def answer(store: Store, cid: int | None, wamid: str, step: int | None, kind: str) -> None:
    async with store.webhook_transaction() as tx:
        row = NewInbound(wamid, cid, phone(0), step, kind, f"text {wamid}", NOW)
        assert await tx.insert_inbound([row]) == {wamid}


# the API ----------------------------------------------------------------------------
async def test_conversations_by_ids_and_flows_in_use(store: Store) -> None:
    assert await store.flows_in_use() == set()
    [a, b] = await enroll(store, 2)
    [c] = await enroll(store, 1, flow="g", start=5)
    [r] = await store.enroll(
        [Enrollment(phone(9), "g", name="Ann", timezone="Europe/Paris", fields={"k": "v"})], NOW
    )
    found = await store.conversations_by_ids([b, 999_999, a, r.id, a])
    assert sorted(found) == sorted([a, b, r.id])
    rec = found[r.id]
    assert (rec.phone, rec.flow, rec.name, rec.timezone, dict(rec.fields)) == (
        phone(9),
        "g",
        "Ann",
        "Europe/Paris",
        {"k": "v"},
    )
    assert (rec.state, rec.step, rec.purpose, rec.attempts) == ("pending", 0, "question", 0)
    assert (rec.next_send_at, rec.created_at, rec.updated_at) == (NOW, NOW, NOW)
    assert (rec.last_error, rec.last_inbound_at) == (None, None)
    assert dict(found[a].fields) == {}
    assert await store.flows_in_use() == {"f", "g"}
    assert c in await store.conversations_by_ids([c])


async def test_list_is_keyset_paged_and_filtered(store: Store) -> None:
    ids = await enroll(store, 5) + await enroll(store, 2, flow="g", start=10)
    await send(store, ids[1], state="completed")
    page = await store.list_conversations(limit=3)
    assert [c.id for c in page] == ids[:3]
    page = await store.list_conversations(limit=3, after_id=ids[2])
    assert [c.id for c in page] == ids[3:6]
    assert [c.id for c in await store.list_conversations(flow="g")] == ids[5:]
    assert [c.id for c in await store.list_conversations(state="completed")] == [ids[1]]
    pending = await store.list_conversations(state="pending", flow="f", limit=10)
    assert [c.id for c in pending] == [ids[0], *ids[2:5]]


async def test_detail_has_messages_and_inbound_in_order(store: Store) -> None:
    assert await store.conversation_detail(12345) is None
    [cid] = await enroll(store, 1)
    mid = await send(store, cid, state="in_progress")
    await answer(store, cid, "wamid.in.2", 0, "text")
    await answer(store, cid, "wamid.in.1", None, "image")
    found = await store.conversation_detail(cid)
    assert found is not None
    conv, msgs, inbound = found
    assert (conv.id, conv.state) == (cid, "in_progress")
    assert [(m.id, m.status, m.wamid, m.sent_at) for m in msgs] == [
        (mid, "sent", f"wamid.{cid}.0", NOW)
    ]
    assert [(a.wamid, a.step, a.kind, a.body) for a in inbound] == [
        ("wamid.in.2", 0, "text", "text wamid.in.2"),
        ("wamid.in.1", None, "image", "text wamid.in.1"),
    ]


async def test_cancel(store: Store) -> None:
    [a, b, c] = await enroll(store, 3)
    assert (await store.cancel_conversation(999_999, NOW)).result == "missing"
    out = await store.cancel_conversation(a, NOW)
    assert out.result == "cancelled" and out.record is not None
    assert (out.record.state, out.record.next_send_at) == ("cancelled", None)
    assert out.record.last_error == "cancelled through the API"
    assert (await store.cancel_conversation(a, NOW)).result == "already"
    await send(store, b, state="completed")
    assert (await store.cancel_conversation(b, NOW)).result == "final"
    # A live lease: the dispatcher's write would overwrite the cancel.
    [claimed] = await store.claim_due(10, 30, "w", NOW)
    assert claimed.id == c
    busy = await store.cancel_conversation(c, NOW + sec(29.999999))
    assert busy.result == "busy" and busy.record is not None and busy.record.state == "pending"
    # Once the lease has run out it can be cancelled, and the late write is refused.
    assert (await store.cancel_conversation(c, NOW + sec(30))).result == "cancelled"
    done = Outcome(ConversationUpdate(c, "completed", 1, "question", None, 0))
    assert await store.record_results([done], "w", NOW + sec(31)) == 0
    assert await store.claim_due(10, 30, "w", NOW + sec(3600)) == []
    # Cancelled is final: the same phone and flow may be enrolled again.
    [again] = await store.enroll([Enrollment(phone(0), "f")], NOW)
    assert again.created and again.id != a


async def test_answer_pages(store: Store) -> None:
    ids = await enroll(store, 5)
    await enroll(store, 1, flow="other", start=20)
    await answer(store, ids[0], "wamid.a", 0, "text")
    await answer(store, ids[0], "wamid.b", None, "text")  # no step: not an answer
    await answer(store, ids[3], "wamid.c", 1, "text")
    await answer(store, ids[3], "wamid.d", None, "opt_out")
    await answer(store, ids[3], "wamid.e", 2, "opt_out")  # an opt-out keyword
    pages = [page async for page in store.answer_pages("f", page_size=2)]
    assert [[c.id for c, _ in page] for page in pages] == [ids[0:2], ids[2:4], ids[4:]]
    answers = {c.id: [a.wamid for a in got] for page in pages for c, got in page}
    assert answers == {ids[0]: ["wamid.a"], ids[1]: [], ids[2]: [], ids[3]: ["wamid.c"], ids[4]: []}
    assert [page async for page in store.answer_pages("nope")] == []


# the inbox --------------------------------------------------------------------------
async def test_inbox_intake_and_backlog(store: Store) -> None:
    backlog = await store.inbox_backlog()
    assert (backlog.waiting, backlog.errors) == (0, 0)
    await store.insert_inbox([], NOW)
    await store.insert_inbox(["a", "b"], NOW)
    await store.insert_inbox(["c"], NOW + sec(5))
    async with store.webhook_transaction() as tx:
        rows = await tx.take_inbox(10)
        assert [r.body for r in rows] == ["a", "b", "c"]
        await tx.finish_inbox([(rows[0].id, None), (rows[1].id, "bad json")], [], NOW)
    backlog = await store.inbox_backlog()
    assert (backlog.waiting, backlog.errors) == (1, 1)


# the operator's view ------------------------------------------------------------------
async def test_backlog_snapshot_and_states(store: Store) -> None:
    await store.enroll(
        [
            Enrollment(phone(1), "f", at=NOW - sec(120)),  # overdue by 2 min
            Enrollment(phone(2), "f", at=NOW - sec(30)),
            Enrollment(phone(3), "f", at=NOW),
            Enrollment(phone(4), "f", at=NOW + sec(600)),
            Enrollment(phone(5), "f", at=NOW + sec(7200)),  # beyond the hour
        ],
        NOW,
    )
    snap = await store.backlog_snapshot(NOW)
    assert (snap.due_now, snap.overdue_1m, snap.due_next_hour, snap.leased) == (3, 1, 1, 0)
    [first] = await store.claim_due(1, 60, "w", NOW)
    snap = await store.backlog_snapshot(NOW)
    assert (snap.due_now, snap.overdue_1m, snap.leased) == (2, 0, 1)
    states = await store.conversations_by_state()
    assert states["pending"] == 5 and states["cancelled"] == 0 and len(states) >= 7
    await store.record_results([Outcome(ConversationUpdate(first.id, "failed", 0, "q", None, 1))],
                               "w", NOW)  # fmt: skip
    assert (await store.conversations_by_state())["failed"] == 1


async def test_sent_counts_lag_and_latency(store: Store) -> None:
    ids = await enroll(store, 4, at=NOW - sec(1000))
    # Sent 10 s, 100 s and 400 s before NOW; the reservation's due_at is 2 s before.
    for cid, ago, latency in ((ids[0], 10, 5.0), (ids[1], 100, 50.0), (ids[2], 400, None)):
        await send(store, cid, at=NOW - sec(ago), latency_ms=latency)
    counts = await store.sent_counts(NOW, (60, 300, 900))
    assert counts == {60: 1, 300: 2, 900: 3}
    assert await store.sent_counts(NOW - sec(1000), (60,)) == {60: 0}
    lag = await store.lag_summary(NOW, window_s=300)
    assert (lag.samples, lag.p50_s, lag.max_s) == (2, 2.0, 2.0)
    assert (lag.latency_p50_ms, lag.latency_p99_ms) == (5.0, 50.0)  # nearest rank
    empty = await store.lag_summary(NOW + sec(10_000))
    assert (empty.samples, empty.p99_s, empty.latency_p50_ms) == (0, 0.0, 0.0)
    assert await store.latency_samples_ms() == [5.0, 50.0]  # newest first
    assert await store.latency_samples_ms(limit=1) == [5.0]


async def test_error_counts(store: Store) -> None:
    ids = await enroll(store, 4)
    await send(store, ids[0], status="failed", code=131026)
    await send(store, ids[1], status="failed", code=131026)
    await send(store, ids[2], status="pending", code=131000)
    await send(store, ids[3])  # sent: no error
    errors = await store.error_counts(NOW + sec(10), window_s=900)
    assert [(e.code, e.status, e.count) for e in errors] == [
        (131026, "failed", 2),
        (131000, "pending", 1),
    ]
    assert await store.error_counts(NOW + sec(1000), window_s=900) == []
    only_newest = await store.error_counts(NOW + sec(10), error_scan=1)
    assert only_newest == []  # the newest message (the sent one) has no error


async def test_live_workers(store: Store) -> None:
    def worker(wid: str, at: datetime) -> WorkerInfo:
        return WorkerInfo(wid, "host", 7, NOW, at, 25.0, 4, "static", {"in_flight": 3})

    await store.heartbeat(worker("b", NOW), 10)
    await store.heartbeat(worker("a", NOW - sec(20)), 60)
    live = await store.live_workers(NOW, live_after_s=10)
    assert [w.id for w in live] == ["b"]
    assert live[0].stats == {"in_flight": 3} and live[0].to_dict()["heartbeat_at"].startswith(
        "2026-03-01T12:00:00"
    )
    assert [w.id for w in await store.live_workers(NOW, live_after_s=30)] == ["a", "b"]


async def test_pool_usage_is_none_or_counts(store: Store) -> None:
    await enroll(store, 1)
    usage = store.pool_usage()
    assert usage is None or (usage.in_use == 0 and usage.size >= 1)
