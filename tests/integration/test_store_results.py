"""The store contract, results part: `Store.flow_results` counts the funnel, replies and
typed answers of one flow the same way on every backend (definitions in
`dripline/store/results_types.py`). Typed answers are written through `insert_inbound`
as the inbox processor writes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dripline.store import (
    AnswerCount,
    ConversationUpdate,
    Enrollment,
    FlowResultsData,
    MessageUpdate,
    NewInbound,
    Outcome,
    Reservation,
    StatusUpdate,
    StepCounts,
    Store,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def ask(store: Store, cid: int, step: int, when: datetime, purpose: str = "question") -> str:
    """The dispatcher's part: claim, reserve and record `purpose` of `step` as sent at
    `when`, then make the next step due at once. Returns the wamid."""
    claimed = await store.claim_due(100, 60, "w", when)
    await store.release([c.id for c in claimed if c.id != cid], "w")
    assert cid in {c.id for c in claimed}
    [r] = await store.reserve([Reservation(cid, step, purpose, when)], "w", when)
    wamid = f"wamid.{cid}.{step}"
    msg = MessageUpdate(r.message_id, "sent", wamid=wamid, sent_at=when)
    upd = ConversationUpdate(cid, "pending", step + 1, "question", when, 0)
    await store.record_results([Outcome(upd, msg)], "w", when)
    return wamid


async def statuses(store: Store, *updates: tuple[str, str]) -> None:
    async with store.webhook_transaction() as tx:
        await tx.apply_statuses([StatusUpdate(w, s, at(1)) for w, s in updates], at(1))


def reply(
    cid: int,
    step: int,
    seconds: float,
    kind: str | None,
    *,
    option: str | None = None,
    number: float | None = None,
    valid: bool | None = True,
    inbound_kind: str = "text",
) -> NewInbound:
    return NewInbound(
        f"in.{cid}.{step}.{seconds}",
        cid,
        "+14155550000",
        step,
        inbound_kind,
        "body",
        at(seconds),
        answer_kind=kind,
        answer_option=option,
        answer_number=number,
        valid=valid,
    )


async def test_flow_results_count_funnel_replies_and_typed_answers(store: Store) -> None:
    enrolled = await store.enroll(
        [Enrollment(f"+1415555010{i}", "f", at=T0) for i in range(4)]
        + [Enrollment("+14155550200", "old", at=T0), Enrollment("+14155550300", "g", at=T0)],
        T0,
    )
    c1, c2, c3, c4, c5, c6 = (r.id for r in enrolled)
    w = {(cid, 0): await ask(store, cid, 0, T0) for cid in (c1, c3, c4, c5, c6)}
    w[(c2, 0)] = await ask(store, c2, 0, T0, purpose="fallback")
    w[(c1, 1)] = await ask(store, c1, 1, at(1000))
    w[(c2, 1)] = await ask(store, c2, 1, at(1000))
    w[(c1, 2)] = await ask(store, c1, 2, at(2000))
    await statuses(
        store,
        (w[(c1, 0)], "read"),
        (w[(c2, 0)], "delivered"),
        (w[(c4, 0)], "failed"),  # accepted, then undeliverable: asked, not delivered
        (w[(c1, 1)], "delivered"),
        (w[(c2, 1)], "read"),
        (w[(c6, 0)], "read"),
    )
    rows = [
        reply(c1, 0, 60, "option", option="yes"),
        reply(c1, 0, 500, "option", option="no"),  # a second valid answer: the first counts
        reply(c2, 0, 180, "option", option="no", inbound_kind="interactive"),
        reply(c3, 0, 30, None, valid=False),  # invalid only: not answered
        reply(c1, 0, 10, None, valid=None, inbound_kind="opt_out"),  # never a reply
        reply(c1, 1, 1050, None, valid=False),
        reply(c1, 1, 1120, "number", number=9),
        reply(c2, 1, 1010, "number", number=3),
        reply(c1, 2, 2030, "text"),
        reply(c1, 2, 2100, None, valid=None),  # after the typed answer: answers nothing
        reply(c5, 0, 45, None, valid=None),  # untyped (before 0005): its text is the answer
        reply(c6, 0, 5, "option", option="yes"),  # another flow
    ]
    async with store.webhook_transaction() as tx:
        await tx.insert_inbound(rows)

    assert await store.flow_results("f") == FlowResultsData(
        "f",
        4,
        (
            StepCounts(0, 4, 2, 1, answered=2, replies=4, invalid=1, median_answer_s=120.0),
            StepCounts(1, 2, 2, 1, answered=2, replies=3, invalid=1, median_answer_s=65.0),
            StepCounts(2, 1, 0, 0, answered=1, replies=1, invalid=0, median_answer_s=30.0),
        ),
        (
            AnswerCount(0, "option", "no", None, 1),
            AnswerCount(0, "option", "yes", None, 1),
            AnswerCount(1, "number", None, 3.0, 1),
            AnswerCount(1, "number", None, 9.0, 1),
            AnswerCount(2, "text", None, None, 1),
        ),
    )
    assert await store.flow_results("old") == FlowResultsData(
        "old",
        1,
        (StepCounts(0, 1, 0, 0, answered=1, replies=0, invalid=0, median_answer_s=45.0),),
        (AnswerCount(0, None, None, None, 1),),
    )
    assert await store.flow_results("nobody") == FlowResultsData("nobody", 0, (), ())


async def test_flow_results_with_asked_steps_and_no_replies(store: Store) -> None:
    [c] = await store.enroll([Enrollment("+14155550101", "f", at=T0)], T0)
    await ask(store, c.id, 0, T0)
    assert await store.flow_results("f") == FlowResultsData("f", 1, (StepCounts(0, 1, 0, 0),), ())
