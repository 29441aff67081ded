"""The in-memory store answers exactly as SQL does: the same seeded sequence of calls
(enrollments, claims by two workers with lapsing leases, reservations, results, webhook
batches, cancels) on SQLite or PostgreSQL and on memory gives the same answers, call by
call, and the same rows at the end.

The sequence avoids the one thing SQL leaves undefined, ties in due order (every due
time is distinct), so any difference is a difference in semantics.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dripline.inbox.recipients import wa_ids_to_learn
from dripline.store import (
    ConversationChange,
    ConversationUpdate,
    Enrollment,
    MemoryStore,
    MessageUpdate,
    NewInbound,
    Outcome,
    Reservation,
    StatusUpdate,
    Store,
    open_store,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STATUSES = ("sent", "pending", "unknown", "failed", None)


class Driver:
    """Draws calls from `rng` and records every answer."""

    def __init__(self, store: Store, seed: int, *, row_counts: bool = True) -> None:
        self.store = store
        self.row_counts = row_counts
        self.rng = random.Random(seed)
        self.log: list[Any] = []
        self.now = T0
        self.tick = 0

    def at(self, seconds: float) -> datetime:
        self.tick += 1  # a distinct microsecond for every time drawn: no ties
        return self.now + timedelta(seconds=seconds, microseconds=self.tick)

    async def step(self) -> None:
        rng, store = self.rng, self.store
        self.now += timedelta(seconds=rng.choice((0, 1, 5, 40)))
        op = rng.choice(("enroll", "dispatch", "dispatch", "webhook", "lease", "cancel"))
        if op == "enroll":
            items = [
                Enrollment(f"+1555{rng.randrange(30):07d}", rng.choice("ab"), at=self.at(-5))
                for _ in range(rng.randrange(1, 6))
            ]
            self.log.append(await store.enroll(items, self.now))
        elif op == "dispatch":
            await self.dispatch(rng.choice(("w1", "w2")))
        elif op == "webhook":
            await self.webhook()
        elif op == "lease":
            ids = [c.id for c in (await store.snapshot()).conversations]
            pick = rng.sample(ids, min(len(ids), 3))
            worker = rng.choice(("w1", "w2"))
            self.log.append(await store.extend_leases(pick, worker, 30, self.now))
            self.log.append(await store.release(pick[:1], worker))
        else:
            ids = [c.id for c in (await store.snapshot()).conversations] or [1]
            self.log.append(await store.cancel_conversation(rng.choice(ids), self.now))
        self.log.append(await store.backlog(self.now))
        self.log.append(await store.next_due_at(self.now))

    async def dispatch(self, worker: str) -> None:
        rng, store = self.rng, self.store
        claimed = await store.claim_due(rng.randrange(1, 5), 30, worker, self.now)
        self.log.append(claimed)
        if not claimed:
            return
        items = [
            Reservation(c.id, c.step, c.purpose, c.next_send_at, resend_unknown=rng.random() < 0.2)
            for c in claimed
        ]
        results = await store.reserve(items, worker, self.now)
        self.log.append(results)
        if rng.random() < 0.2:
            return  # the worker "crashes": leases lapse, rows stay `sending`
        outcomes = []
        for c, r in zip(claimed, results, strict=True):
            status = rng.choice(STATUSES)
            message = None
            if r.ok and status is not None:
                message = MessageUpdate(
                    r.message_id,
                    status,
                    wamid=f"wamid.{r.message_id}" if status == "sent" else None,
                    error_code=131026 if status == "failed" else None,
                    sent_at=self.now if status == "sent" else None,
                    latency_ms=float(rng.randrange(5, 500)) if status == "sent" else None,
                )
            state = rng.choice(("awaiting_reply", "in_progress", "completed", "pending"))
            nxt = None if state == "completed" else self.at(rng.choice((0, 60, 600)))
            # Now and then the send's answer names the user's WhatsApp ID.
            wa_id = f"1555{c.id:07d}" if rng.random() < 0.3 else None
            update = ConversationUpdate(
                c.id, state, c.step + 1, "question", nxt, r.attempts, wa_id=wa_id
            )
            outcomes.append(Outcome(update, message))
        later = self.now + timedelta(seconds=rng.choice((0, 45)))  # maybe after the lease
        self.log.append(await store.record_results(outcomes, worker, later))

    async def webhook(self) -> None:
        rng, store = self.rng, self.store
        state = await store.snapshot()
        bodies = [f"body {self.tick}-{i}" for i in range(rng.randrange(0, 3))]
        await store.insert_inbox(bodies, self.now)
        async with store.webhook_transaction() as tx:
            rows = await tx.take_inbox(rng.randrange(1, 4))
            updates = [
                StatusUpdate(
                    f"wamid.{m.id}" if rng.random() < 0.8 else f"wamid.lost{m.id}",
                    rng.choice(("sent", "delivered", "read", "failed")),
                    self.at(0),
                    message_id=m.id if rng.random() < 0.5 else None,
                    error_code=131047,
                    recipient_id=rng.choice((None, f"1555{m.conversation_id:07d}", "1555999")),
                )
                for m in rng.sample(state.messages, min(len(state.messages), 4))
            ]
            result = await tx.apply_statuses(updates, self.now)
            # applied + unchanged, not each: on PostgreSQL `applied` undercounts batches.
            self.log.append((result.applied + result.unchanged, result.unmatched, result.busy))
            self.log.append(sorted(result.matched.items()))
            self.log.append(await tx.learn_wa_ids(wa_ids_to_learn(updates, result.matched)))
            phones = sorted({c.phone for c in state.conversations})[:3]
            found = await tx.conversations_for(phones, self.now)
            self.log.append(found)
            keys = [(c.id, c.step) for pc in found.values() for c in pc.active]
            self.log.append(sorted(await tx.sent_steps(keys)))
            inbound = [
                NewInbound(f"wamid.in{rng.randrange(8)}", pc.latest_id, p, None, "text", "x", T0)
                for p, pc in found.items()
            ]
            self.log.append(sorted(await tx.insert_inbound(inbound)))
            changes = [
                ConversationChange(
                    c.id, "in_progress", c.step + 1, "question", self.at(30), 0, None, self.now
                )
                for pc in found.values()
                if not pc.busy
                for c in pc.active[:1]
            ]
            written = await tx.update_conversations(changes, self.now)
            if self.row_counts:
                self.log.append(written)
            await tx.finish_inbox([(r.id, None) for r in rows[:1]], [(r.id, "w") for r in rows[1:]],
                                  self.now)  # fmt: skip
        self.log.append(await store.inbox_backlog())


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
async def test_memory_matches_sql_call_by_call(store_url: str, seed: int) -> None:
    sql = await open_store(store_url)
    try:
        # asyncpg reports no rowcount for executemany: PostgreSQL's counts read 0.
        counts = sql.backend != "postgresql"
        on_sql = Driver(sql, seed, row_counts=counts)
        on_memory = Driver(MemoryStore(), seed, row_counts=counts)
        for n in range(80):
            await on_sql.step()
            await on_memory.step()
            assert on_memory.log == on_sql.log, f"step {n}"
        mine, theirs = await on_memory.store.snapshot(), await sql.snapshot()
        if sql.backend == "postgresql":
            # A sequence value is spent on an insert ON CONFLICT skips: ids have gaps.
            mine = replace(mine, inbound=tuple(replace(i, id=0) for i in mine.inbound))
            theirs = replace(theirs, inbound=tuple(replace(i, id=0) for i in theirs.inbound))
        assert mine == theirs
        assert len(on_sql.log) > 150
    finally:
        await sql.close()
