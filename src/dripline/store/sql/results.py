"""A flow's results on SQL: funnel, reply and answer counts, median time to answer.

Four reads in one read transaction, each a `GROUP BY` over the flow's rows (the
conversations by `ix_conversations_flow`, their messages and inbound messages by their
conversation), plus one small `ORDER BY ... OFFSET` per step for the median (SQLite has
no percentile function). Definitions: `store/results_types.py`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from dripline.store.results_types import (
    FUNNEL_PURPOSES,
    AnswerCount,
    FlowResultsData,
    StepCounts,
    answer_sort_key,
    median,
)
from dripline.store.schema import conversations, inbound_messages, messages
from dripline.store.sql.core import SqlCore
from dripline.store.types import OPT_OUT_KIND

__all__ = ["ResultsSql"]

C = conversations.c
M = messages.c
I = inbound_messages.c  # noqa: E741 -- mirrors C and M

# How far an asking message got: 1 accepted, 2 delivered, 3 read (0: never accepted).
_REACH = case(
    (M.status == "read", 3),
    (M.status == "delivered", 2),
    (M.status == "sent", 1),
    (and_(M.status == "failed", M.wamid.is_not(None)), 1),
    else_=0,
)


def _asked(flow: str) -> Any:
    """Per (conversation, step) of `flow`: how far its asking messages got, and when the
    first of them was accepted."""
    return (
        select(
            M.conversation_id.label("cid"),
            M.step.label("step"),
            func.max(_REACH).label("reach"),
            func.min(M.sent_at).label("sent_at"),
        )
        .join(conversations, C.id == M.conversation_id)
        .where(C.flow == flow, M.purpose.in_(FUNNEL_PURPOSES))
        .group_by(M.conversation_id, M.step)
        .subquery("asked")
    )


def _answers(flow: str) -> Any:
    """Per (conversation, step) of `flow` at most one row: its answer (see the module
    docstring of results_types), ranked in SQL with window functions."""
    preference = case((I.valid.is_(True), 0), (I.valid.is_(None), 1), else_=2)
    typed = func.max(case((I.valid.is_not(None), 1), else_=0)).over(
        partition_by=(I.conversation_id, I.step)
    )
    rank = func.row_number().over(
        partition_by=(I.conversation_id, I.step), order_by=(preference, I.received_at, I.id)
    )
    ranked = (
        select(
            I.conversation_id.label("cid"),
            I.step.label("step"),
            I.answer_kind.label("kind"),
            I.answer_option.label("option"),
            I.answer_number.label("number"),
            I.valid.label("valid"),
            I.received_at.label("received_at"),
            typed.label("typed"),
            rank.label("rank"),
        )
        .join(conversations, C.id == I.conversation_id)
        .where(C.flow == flow, I.step.is_not(None), I.kind != OPT_OUT_KIND)
        .subquery("ranked")
    )
    r = ranked.c
    # When the step was asked: a lookup by the unique (conversation, step, purpose)
    # index per answer. (A join of this subquery with a grouped one made SQLite loop
    # over every pair: minutes at 100,000 conversations.)
    asked_at = (
        select(func.min(M.sent_at))
        .where(M.conversation_id == r.cid, M.step == r.step, M.purpose.in_(FUNNEL_PURPOSES))
        .scalar_subquery()
    )
    return (
        select(r.cid, r.step, r.kind, r.option, r.number, r.received_at, asked_at.label("asked_at"))
        .where(r.rank == 1, (r.valid.is_(True)) | (r.valid.is_(None) & (r.typed == 0)))
        .subquery("answers")
    )


class ResultsSql(SqlCore):
    def _seconds(self, later: Any, earlier: Any) -> Any:
        """`later - earlier` in seconds, as a float, in this dialect."""
        if self.backend == "postgresql":
            return func.extract("epoch", later - earlier)
        return (func.julianday(later) - func.julianday(earlier)) * literal(86_400.0)

    async def flow_results(self, flow: str) -> FlowResultsData:
        async with self._read() as conn:
            total = (await conn.execute(select(func.count()).where(C.flow == flow))).scalar_one()
            if not total:
                return FlowResultsData(flow, 0, (), ())
            steps: dict[int, dict[str, Any]] = {}
            asked = _asked(flow)
            a = asked.c
            funnel = await conn.execute(
                select(
                    a.step,
                    func.sum(case((a.reach >= 1, 1), else_=0)),
                    func.sum(case((a.reach >= 2, 1), else_=0)),
                    func.sum(case((a.reach >= 3, 1), else_=0)),
                ).group_by(a.step)
            )
            for step, sent, delivered, read in funnel:
                steps.setdefault(step, {}).update(
                    sent=int(sent or 0), delivered=int(delivered or 0), read=int(read or 0)
                )
            replies = await conn.execute(
                select(
                    I.step,
                    func.count(I.valid),
                    func.sum(case((I.valid.is_(False), 1), else_=0)),
                )
                .join(conversations, C.id == I.conversation_id)
                .where(C.flow == flow, I.step.is_not(None), I.kind != OPT_OUT_KIND)
                .group_by(I.step)
            )
            for step, count, invalid in replies:
                steps.setdefault(step, {}).update(replies=int(count), invalid=int(invalid or 0))
            answers = _answers(flow)
            s = answers.c
            counted = await conn.execute(
                select(s.step, s.kind, s.option, s.number, func.count()).group_by(
                    s.step, s.kind, s.option, s.number
                )
            )
            found = [
                AnswerCount(int(step), kind, option, None if n is None else float(n), int(c))
                for step, kind, option, n, c in counted
            ]
            for row in found:
                entry = steps.setdefault(row.step, {})
                entry["answered"] = entry.get("answered", 0) + row.count
            for step, value in (await self._medians(conn, answers)).items():
                steps.setdefault(step, {})["median_answer_s"] = value
        return FlowResultsData(
            flow,
            int(total),
            tuple(StepCounts(step, **steps[step]) for step in sorted(steps)),
            tuple(sorted(found, key=answer_sort_key)),
        )

    async def _medians(self, conn: AsyncConnection, answers: Any) -> dict[int, float | None]:
        """Per step, the median seconds from the send to the answer: one query that
        ranks each step's times and keeps the middle one or two."""
        s = answers.c
        timed = (
            select(s.step, self._seconds(s.received_at, s.asked_at).label("seconds"))
            .where(s.asked_at.is_not(None))
            .subquery("timed")
        )
        t = timed.c
        ranked = select(
            t.step,
            t.seconds,
            func.row_number().over(partition_by=t.step, order_by=t.seconds).label("rn"),
            func.count().over(partition_by=t.step).label("n"),
        ).subquery("ranked_times")
        k = ranked.c
        # Integer division on both dialects: rows (n+1)/2 and (n+2)/2 are the middle.
        middle = await conn.execute(
            select(k.step, k.seconds)
            .where((k.rn == (k.n + 1) // 2) | (k.rn == (k.n + 2) // 2))
            .order_by(k.step, k.seconds)
        )
        found: dict[int, list[float]] = {}
        for step, seconds in middle:
            found.setdefault(int(step), []).append(float(seconds))
        return {step: median(values) for step, values in found.items()}
