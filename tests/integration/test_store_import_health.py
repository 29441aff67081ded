"""The store contract for moving in (`import_conversations`) and readiness (`health`),
on SQLite, PostgreSQL and in memory (the `store` fixture)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dripline.store import Enrollment, ImportedConversation, Store
from dripline.store.migrate import head_revision

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def moved(i: int, *, step: int = 2, state: str = "in_progress", purpose: str = "question",
          at: datetime = NOW, flow: str = "f") -> ImportedConversation:  # fmt: skip
    return ImportedConversation(
        phone=f"+1415555{i:04d}",
        flow=flow,
        step=step,
        purpose=purpose,
        state=state,
        next_send_at=at,
        name=f"n{i}",
        timezone="Europe/Paris",
        fields={"plan": "Pro"},
    )


async def test_import_places_each_conversation_at_its_step(store: Store) -> None:
    items = [
        moved(0, step=3, at=NOW - timedelta(minutes=1)),
        moved(1, step=1, state="awaiting_reply", purpose="timeout", at=NOW + timedelta(hours=5)),
    ]
    results = await store.import_conversations(items, NOW)
    assert [r.created for r in results] == [True, True]
    rows = await store.conversations_by_ids([r.id for r in results])
    first, second = rows[results[0].id], rows[results[1].id]
    assert (first.step, first.state, first.purpose, first.next_send_at) == (
        3, "in_progress", "question", NOW - timedelta(minutes=1)
    )  # fmt: skip
    assert (second.step, second.state, second.purpose) == (1, "awaiting_reply", "timeout")
    assert (first.name, first.timezone) == ("n0", "Europe/Paris")
    assert dict(first.fields) == {"plan": "Pro"}
    # Only the one due now is claimed; the other waits for its reply deadline.
    claimed = await store.claim_due(10, 30, "w", NOW)
    assert [c.id for c in claimed] == [results[0].id]


async def test_reimport_creates_nothing_new(store: Store) -> None:
    items = [moved(i) for i in range(5)]
    first = await store.import_conversations(items, NOW)
    again = await store.import_conversations([*items, moved(5)], NOW + timedelta(hours=1))
    assert [r.id for r in again[:5]] == [r.id for r in first]
    assert [r.created for r in again] == [False] * 5 + [True]
    assert len((await store.snapshot()).conversations) == 6


async def test_import_never_restarts_a_finished_or_enrolled_conversation(store: Store) -> None:
    [enrolled] = await store.enroll([Enrollment("+14155550001", "f")], NOW)
    [done] = await store.enroll([Enrollment("+14155550002", "f")], NOW)
    outcome = await store.cancel_conversation(done.id, NOW)
    assert outcome.result == "cancelled"
    results = await store.import_conversations([moved(1), moved(2), moved(2, flow="g")], NOW)
    assert [(r.id, r.created) for r in results[:2]] == [(enrolled.id, False), (done.id, False)]
    assert results[2].created  # another flow is another conversation
    assert (await store.conversations_by_ids([done.id]))[done.id].state == "cancelled"


async def test_import_of_nothing_and_duplicates_in_the_input(store: Store) -> None:
    assert await store.import_conversations([], NOW) == []
    a, b = await store.import_conversations([moved(7), moved(7, step=4)], NOW)
    assert a.id == b.id and a.created
    assert (await store.conversations_by_ids([a.id]))[a.id].step == 2


async def test_health_reads_the_schema_and_the_inbox(store: Store) -> None:
    health = await store.health()
    assert health.schema_revision == head_revision()
    assert (health.inbox_waiting, health.inbox_oldest_waiting_at) == (0, None)
    await store.insert_inbox(["{}", "{}"], NOW)
    health = await store.health()
    assert (health.inbox_waiting, health.inbox_oldest_waiting_at) == (2, NOW)
