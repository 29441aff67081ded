"""What the store reads for a flow's results (`Store.flow_results`), and its contract.

The store only counts; `dripline.results` turns these counts and the flow's questions
into rates, distributions and NPS. Kept apart from `types.py` and `base.py` (the
contract's other parts) so neither grows: `Store` inherits `ResultsQueries`.

Definitions every backend follows (the contract tests hold them to it):

- a step is *asked* of a conversation when its `question` or `fallback` message was
  accepted by the API (status sent, delivered or read; or failed with a wamid: Meta
  accepted it, then reported it undeliverable); *delivered* / *read* when that message
  reached delivered / read (the furthest of the two rows, when both exist);
- the step's *answer* is the first reply at that step with `valid` true; for replies
  nobody typed (older than migration 0005, or a flow with no typed answers) the first
  reply whose `valid` is NULL, when no reply at that step was typed. Opt-out keywords
  never count;
- *replies* are the replies the flow read as an answer or not (`valid` not NULL),
  *invalid* those with `valid` false;
- time to answer: the answer's `received_at` minus the asked message's first `sent_at`
  (answers of steps asked without a recorded `sent_at` have none).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from dripline.store.types import Inbound

__all__ = [
    "FUNNEL_PURPOSES",
    "AnswerCount",
    "FlowResultsData",
    "ResultsQueries",
    "StepCounts",
    "answer_of",
    "answer_value",
    "median",
]

# The messages that ask a step's question: the question itself, or its template when the
# 24-hour window was closed. Reminders and re-asks ask again; they are not the funnel.
FUNNEL_PURPOSES = ("question", "fallback")


@dataclass(frozen=True, slots=True)
class StepCounts:
    """One step's funnel and reply counts, each a number of conversations except
    `replies` and `invalid` (messages). `median_answer_s` None when no answer is timed."""

    step: int
    sent: int = 0
    delivered: int = 0
    read: int = 0
    answered: int = 0
    replies: int = 0
    invalid: int = 0
    median_answer_s: float | None = None


@dataclass(frozen=True, slots=True)
class AnswerCount:
    """How many conversations answered `step` with this typed value: `kind` "option"
    (`option`), "number" (`number`), "text", or None (an untyped answer: its text)."""

    step: int
    kind: str | None
    option: str | None
    number: float | None
    count: int


@dataclass(frozen=True, slots=True)
class FlowResultsData:
    """Everything the results of one flow are computed from, steps in step order,
    answers ordered by (step, kind, option, number) with None first."""

    flow: str
    conversations: int
    steps: tuple[StepCounts, ...]
    answers: tuple[AnswerCount, ...]


def answer_of(replies: Sequence[Inbound]) -> Inbound | None:
    """The answer among one (conversation, step)'s replies, as defined above: the first
    valid one, else (no reply typed) the first untyped one; None when none answered."""
    if not replies:
        return None
    first = min(
        replies,
        key=lambda r: (0 if r.valid is True else 1 if r.valid is None else 2, r.received_at, r.id),
    )
    if first.valid is True:
        return first
    typed = any(r.valid is not None for r in replies)
    return first if first.valid is None and not typed else None


def answer_value(answer: Inbound) -> str | float | None:
    """The typed value of an answer: its option id, its number, or its text."""
    if answer.answer_kind == "option":
        return answer.answer_option
    if answer.answer_kind == "number":
        return answer.answer_number
    return answer.body


def median(values: list[float]) -> float | None:
    """The median of sorted `values` (the mean of the middle two for an even count),
    rounded to the millisecond so every backend's arithmetic agrees."""
    if not values:
        return None
    n = len(values)
    mid = (values[(n - 1) // 2] + values[n // 2]) / 2
    return round(mid, 3)


def answer_sort_key(a: AnswerCount) -> tuple[int, str, str, float]:
    """The order `FlowResultsData.answers` is in (None before any value)."""
    return (
        a.step,
        a.kind or "",
        a.option or "",
        float("-inf") if a.number is None else a.number,
    )


class ResultsQueries(ABC):
    """The results part of the `Store` contract."""

    @abstractmethod
    async def flow_results(self, flow: str) -> FlowResultsData:
        """The counts behind `flow`'s results (see the module's definitions); a flow
        with no conversations gives zero conversations and no steps."""
