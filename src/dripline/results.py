"""A flow's results from the store's counts and the flow's questions. Pure.

    summarize(data, questions) -> FlowResults

Per step: the funnel (sent -> delivered -> read -> answered, each a number of
conversations), the response rate (answered / asked), the median time to answer, the
invalid-answer rate (invalid replies / replies), and the answers: counts per option
(every option the question offers, even at zero, then any the flow no longer has), the
distribution of numbers, and for a 0-10 number question the NPS (% promoters, 9-10,
minus % detractors, 0-6). What the store counts and how is in `store/results_types.py`.

`to_json` is the shape of `GET /v1/flows/{name}/results`, `dripline results --json` and
the dashboard's flow view; `dripline.results_report` renders it as a table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dripline.flows import Flow, Question
from dripline.store import FlowResultsData, StepCounts, Store

__all__ = [
    "FlowResults",
    "Nps",
    "NumberCount",
    "OptionCount",
    "QuestionInfo",
    "QuestionResult",
    "flow_results",
    "nps",
    "question_info",
    "summarize",
    "to_json",
]

NPS_RANGE = (0.0, 10.0)


@dataclass(frozen=True, slots=True)
class QuestionInfo:
    """What results need of a step: its kind, option ids and a number question's range."""

    index: int
    id: str
    title: str
    expects_reply: bool
    kind: str = "text"
    options: tuple[str, ...] = ()
    number_range: tuple[float, float] | None = None


def question_info(q: Question) -> QuestionInfo:
    """A flow's `Question` as results read it. Question kinds, options and number ranges
    come with typed questions (issue 15, item 1); a flow without them is all text."""
    # getattr: `Question` gains these fields with the question kinds; until then (and
    # for any flow object that lacks them) a step is a text question.
    kind = getattr(q, "kind", "text")
    options = getattr(q, "options", ())
    number_range = getattr(q, "number_range", None)
    return QuestionInfo(
        q.index,
        q.id,
        q.title,
        q.expects_reply,
        str(kind),
        tuple(str(o) for o in options),
        None if number_range is None else (float(number_range[0]), float(number_range[1])),
    )


@dataclass(frozen=True, slots=True)
class OptionCount:
    id: str
    count: int
    share: float | None  # of the step's answers, 0..1


@dataclass(frozen=True, slots=True)
class NumberCount:
    value: float
    count: int


@dataclass(frozen=True, slots=True)
class Nps:
    """Net Promoter Score: `score` = % promoters - % detractors, -100..100."""

    score: float
    promoters: int
    passives: int
    detractors: int
    responses: int


@dataclass(frozen=True, slots=True)
class QuestionResult:
    step: int
    id: str
    title: str
    kind: str
    expects_reply: bool
    sent: int
    delivered: int
    read: int
    answered: int
    response_rate: float | None
    median_answer_s: float | None
    replies: int
    invalid: int
    invalid_rate: float | None
    options: tuple[OptionCount, ...]
    numbers: tuple[NumberCount, ...]
    number_mean: float | None
    nps: Nps | None
    texts: int  # answers that are text (typed as text, or untyped)


@dataclass(frozen=True, slots=True)
class FlowResults:
    flow: str
    conversations: int
    questions: tuple[QuestionResult, ...]


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def nps(numbers: Sequence[NumberCount]) -> Nps | None:
    """The NPS of 0-10 answers (None without any); values outside 0-10 are not counted."""
    promoters = passives = detractors = 0
    for n in numbers:
        if n.value < 0 or n.value > 10:
            continue
        if n.value >= 9:
            promoters += n.count
        elif n.value >= 7:
            passives += n.count
        else:
            detractors += n.count
    total = promoters + passives + detractors
    if not total:
        return None
    score = round(100 * (promoters - detractors) / total, 1)
    return Nps(score, promoters, passives, detractors, total)


def _question(info: QuestionInfo, counts: StepCounts, data: FlowResultsData) -> QuestionResult:
    answers = [a for a in data.answers if a.step == info.index]
    answered = sum(a.count for a in answers)
    by_option: dict[str, int] = dict.fromkeys(info.options, 0)
    numbers: list[NumberCount] = []
    texts = 0
    for a in answers:
        if a.kind == "option" and a.option is not None:
            by_option[a.option] = by_option.get(a.option, 0) + a.count
        elif a.kind == "number" and a.number is not None:
            numbers.append(NumberCount(a.number, a.count))
        else:
            texts += a.count
    numbers.sort(key=lambda n: n.value)
    how_many = sum(n.count for n in numbers)
    mean = round(sum(n.value * n.count for n in numbers) / how_many, 2) if how_many else None
    is_nps = info.kind == "number" and info.number_range == NPS_RANGE
    return QuestionResult(
        step=info.index,
        id=info.id,
        title=info.title,
        kind=info.kind,
        expects_reply=info.expects_reply,
        sent=counts.sent,
        delivered=counts.delivered,
        read=counts.read,
        answered=answered,
        response_rate=_rate(answered, counts.sent) if info.expects_reply else None,
        median_answer_s=counts.median_answer_s,
        replies=counts.replies,
        invalid=counts.invalid,
        invalid_rate=_rate(counts.invalid, counts.replies),
        options=tuple(OptionCount(k, v, _rate(v, answered)) for k, v in by_option.items()),
        numbers=tuple(numbers),
        number_mean=mean,
        nps=nps(numbers) if is_nps else None,
        texts=texts,
    )


def summarize(data: FlowResultsData, questions: Sequence[QuestionInfo]) -> FlowResults:
    """Results per question of the flow, in step order; steps the data has that the flow
    no longer does (it was edited) come last, as untitled text questions."""
    counts = {s.step: s for s in data.steps}
    known = {q.index for q in questions}
    extra = sorted({s.step for s in data.steps} - known)
    infos = [
        *questions,
        *(QuestionInfo(i, f"step{i}", f"step {i} (not in the flow)", True) for i in extra),
    ]
    return FlowResults(
        data.flow,
        data.conversations,
        tuple(_question(q, counts.get(q.index, StepCounts(q.index)), data) for q in infos),
    )


def _number(value: float) -> float | int:
    return int(value) if value.is_integer() else value


def to_json(results: FlowResults) -> dict[str, Any]:
    """The results as JSON (the API's `FlowResults` schema)."""
    return {
        "flow": results.flow,
        "conversations": results.conversations,
        "questions": [
            {
                "step": q.step,
                "id": q.id,
                "title": q.title,
                "kind": q.kind,
                "expects_reply": q.expects_reply,
                "funnel": {
                    "sent": q.sent,
                    "delivered": q.delivered,
                    "read": q.read,
                    "answered": q.answered,
                },
                "response_rate": q.response_rate,
                "median_answer_s": q.median_answer_s,
                "replies": q.replies,
                "invalid": q.invalid,
                "invalid_rate": q.invalid_rate,
                "options": [{"id": o.id, "count": o.count, "share": o.share} for o in q.options],
                "numbers": [{"value": _number(n.value), "count": n.count} for n in q.numbers],
                "number_mean": q.number_mean,
                "nps": None
                if q.nps is None
                else {
                    "score": q.nps.score,
                    "promoters": q.nps.promoters,
                    "passives": q.nps.passives,
                    "detractors": q.nps.detractors,
                    "responses": q.nps.responses,
                },
                "texts": q.texts,
            }
            for q in results.questions
        ],
    }


async def flow_results(store: Store, flow: Flow) -> FlowResults:
    """Read `flow`'s counts from the store and summarize them (the one I/O step)."""
    data = await store.flow_results(flow.name)
    return summarize(data, [question_info(q) for q in flow.questions()])
