"""A flow's results in memory: the same counts as `store/sql/results.py`, on a `View`
(definitions: `store/results_types.py`)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from dripline.store.memory_tables import View
from dripline.store.results_types import (
    FUNNEL_PURPOSES,
    AnswerCount,
    FlowResultsData,
    StepCounts,
    answer_of,
    answer_sort_key,
    median,
)
from dripline.store.types import OPT_OUT_KIND, Inbound, Message

__all__ = ["flow_results"]


def _reach(m: Message) -> int:
    if m.status == "read":
        return 3
    if m.status == "delivered":
        return 2
    if m.status == "sent" or (m.status == "failed" and m.wamid is not None):
        return 1
    return 0


def flow_results(v: View, flow: str) -> FlowResultsData:
    ids = {c.id for c in v.conversations.values() if c.flow == flow}
    if not ids:
        return FlowResultsData(flow, 0, (), ())
    reach: dict[tuple[int, int], int] = {}
    sent_at: dict[tuple[int, int], datetime] = {}
    for m in v.messages.values():
        if m.conversation_id not in ids or m.purpose not in FUNNEL_PURPOSES:
            continue
        key = (m.conversation_id, m.step)
        reach[key] = max(reach.get(key, 0), _reach(m))
        if m.sent_at is not None and (key not in sent_at or m.sent_at < sent_at[key]):
            sent_at[key] = m.sent_at
    steps: dict[int, dict[str, int]] = {}
    for (_, step), r in reach.items():
        entry = steps.setdefault(step, {"sent": 0, "delivered": 0, "read": 0})
        entry["sent"] += r >= 1
        entry["delivered"] += r >= 2
        entry["read"] += r >= 3
    grouped: dict[tuple[int, int], list[Inbound]] = {}
    for i in v.inbound.values():
        if i.conversation_id not in ids or i.step is None or i.kind == OPT_OUT_KIND:
            continue
        grouped.setdefault((i.conversation_id, i.step), []).append(i)
        entry = steps.setdefault(i.step, {})
        entry["replies"] = entry.get("replies", 0) + (i.valid is not None)
        entry["invalid"] = entry.get("invalid", 0) + (i.valid is False)
    counts: Counter[tuple[int, str | None, str | None, float | None]] = Counter()
    times: dict[int, list[float]] = {}
    for key, replies in grouped.items():
        answer = answer_of(replies)
        if answer is None:
            continue
        step = key[1]
        counts[(step, answer.answer_kind, answer.answer_option, answer.answer_number)] += 1
        asked = sent_at.get(key)
        if asked is not None:
            times.setdefault(step, []).append((answer.received_at - asked).total_seconds())
    answers = [AnswerCount(s, k, o, n, c) for (s, k, o, n), c in counts.items()]
    for a in answers:
        entry = steps[a.step]
        entry["answered"] = entry.get("answered", 0) + a.count
    return FlowResultsData(
        flow,
        len(ids),
        tuple(
            StepCounts(step, **steps[step], median_answer_s=median(sorted(times.get(step, []))))
            for step in sorted(steps)
        ),
        tuple(sorted(answers, key=answer_sort_key)),
    )
