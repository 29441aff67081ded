"""The demo's simulated users: what each answers to a flow's questions, and how. Pure.

    user = SimulatedUser.scripted(phone, flow.questions(), random.Random(seed))
    body = user.reply(step, purpose, message)   # a `/_fake/inbound` body, or None

Each user's script comes from a seeded RNG: per question, no answer at all (the step's
reply timeout applies), or an answer given by tapping a reply button, list row or
template quick-reply, by typing the option's title or number or a yes/no synonym, or a
number as "8" or "9/10" — sometimes after an invalid answer, which dripline re-asks.
Users answer questions, fallbacks and re-asks, never reminders. `said` records every
reply as its user meant it: what the flow's results must add up to.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dripline.fake import AcceptedMessage
from dripline.flows.base import Question

__all__ = ["Act", "Said", "SimulatedUser", "script_for"]

SILENT_SHARE = 0.1  # of the questions a user leaves unanswered
INVALID_SHARE = 0.1  # answers given only after an invalid one
TYPED_SHARE = 0.3  # option answers typed rather than tapped
# 0-10 answers: most people are kind, some are not (an NPS of about 20).
SCORE_WEIGHTS = (1, 1, 1, 1, 2, 3, 4, 9, 14, 14, 10)
GOALS = (
    "Ship my first campaign",
    "Automate the weekly report",
    "Get the team onto one tool",
    "Save time on follow-ups",
)
# Neither a number nor anything a yes/no or option title could be read as.
NONSENSE = ("maybe", "pizza", "hmm", "what?", "later")
YES_WORDS = ("Yes", "sim", "yes please", "Sure")
NO_WORDS = ("No", "não", "not yet", "nope")


@dataclass(frozen=True, slots=True)
class Act:
    """One reply of a script. `how`: tap, type (the option's title or number), text
    (these exact words) or silent. `option`/`number`: what a valid reply means."""

    how: str
    text: str = ""
    option: str | None = None
    number: float | None = None
    valid: bool = True


@dataclass(frozen=True, slots=True)
class Said:
    """One reply a user sent, as they meant it."""

    step: int
    valid: bool
    kind: str  # option, number or text (what the step asked for)
    option: str | None = None
    number: float | None = None
    text: str | None = None


SILENT = Act("silent")


def _nonsense(rng: random.Random) -> Act:
    return Act("text", rng.choice(NONSENSE), valid=False)


def _option_acts(q: Question, rng: random.Random) -> list[Act]:
    if q.kind == "yes_no":
        option = "yes" if rng.random() < 0.6 else "no"
    else:
        # Earlier options a little more popular, so the counts differ.
        option = rng.choices(q.options, weights=range(len(q.options) + 1, 1, -1))[0]
    r = rng.random()
    if r < TYPED_SHARE and q.kind == "yes_no":
        words = YES_WORDS if option == "yes" else NO_WORDS
        act = Act("text", rng.choice(words), option=option)
    elif r < TYPED_SHARE:
        act = Act("type", option=option)
    else:
        act = Act("tap", option=option)
    return [_nonsense(rng), act] if rng.random() < INVALID_SHARE else [act]


def _number_acts(q: Question, rng: random.Random) -> list[Act]:
    low, high = q.number_range or (0.0, 10.0)
    if (low, high) == (0.0, 10.0):
        value = float(rng.choices(range(11), weights=SCORE_WEIGHTS)[0])
    else:
        value = float(rng.randint(int(low), int(high)))
    shown = str(int(value))
    text = f"{shown}/{int(high)}" if rng.random() < 0.2 else shown
    act = Act("text", text, number=value)
    r = rng.random()
    if r < 0.03:  # never gets it right: re-asked until the step's `on_invalid`
        return [_nonsense(rng), Act("text", str(int(high) + 1), valid=False), _nonsense(rng)]
    if r < INVALID_SHARE:  # out of range first, then a number
        return [Act("text", str(int(high) + 1), valid=False), act]
    return [act]


def script_for(questions: Sequence[Question], rng: random.Random) -> dict[int, list[Act]]:
    """What a user replies to each question: the question's reply, then each re-ask's."""
    acts: dict[int, list[Act]] = {}
    for q in questions:
        if not q.expects_reply or rng.random() < SILENT_SHARE:
            acts[q.index] = [SILENT]
        elif q.kind in ("choice", "yes_no") and q.options:
            acts[q.index] = _option_acts(q, rng)
        elif q.kind == "number":
            acts[q.index] = _number_acts(q, rng)
        else:
            acts[q.index] = [Act("text", rng.choice(GOALS))]
    return acts


def _typed_option(q: Question, option: str, message: AcceptedMessage) -> str:
    """An option as a user types it: its title when the message showed one, else its
    number in the list (yes/no: the word)."""
    for option_id, title, _ in message.choices:
        if option_id == option:
            return title.upper() if len(title) > 3 else title
    if q.kind == "yes_no":
        return option.capitalize()
    return str(q.options.index(option) + 1)


@dataclass
class SimulatedUser:
    """One user: their script, how far they are in it, and what they said so far."""

    phone: str
    questions: dict[int, Question]
    script: dict[int, list[Act]]
    said: list[Said] = field(default_factory=list)
    _used: dict[int, int] = field(default_factory=dict)

    @classmethod
    def scripted(
        cls, phone: str, questions: Sequence[Question], rng: random.Random
    ) -> SimulatedUser:
        return cls(phone, {q.index: q for q in questions}, script_for(questions, rng))

    def reply(self, step: int, purpose: str, message: AcceptedMessage) -> dict[str, Any] | None:
        """The `/_fake/inbound` body of this user's reply to `message` (sent for `purpose`
        at `step`), or None when they do not answer it."""
        if purpose == "reminder" or step not in self.script:
            return None
        queue = self.script[step]
        done = self._used.get(step, 0)
        if done >= len(queue):
            return None
        act = queue[done]
        self._used[step] = done + 1
        if act.how == "silent":
            return None
        q = self.questions[step]
        kind = "option" if act.option is not None else "number" if q.kind == "number" else "text"
        if not act.valid:
            kind = {"choice": "option", "yes_no": "option", "number": "number"}.get(q.kind, kind)
        body: dict[str, Any] = {"from": self.phone}
        choices = {c[0]: c for c in message.choices}
        if act.how == "tap" and act.option in choices:
            option_id, title, description = choices[act.option]
            body["reply_to"] = message.wamid
            if message.type == "template":
                body.update(kind="button", payload=option_id, text=title)
            else:
                tap = "list_reply" if len(choices) > 3 else "button_reply"
                body.update(kind=tap, reply_id=option_id, text=title)
                if description:
                    body["description"] = description
        elif act.how in ("tap", "type") and act.option is not None:
            # Typed, or a tap where there is nothing to tap (a template without buttons).
            body.update(kind="text", text=_typed_option(q, act.option, message))
        else:
            body.update(kind="text", text=act.text)
        self.said.append(
            Said(
                step,
                act.valid,
                kind,
                act.option if act.valid else None,
                act.number if act.valid else None,
                body.get("text") if kind == "text" else None,
            )
        )
        return body
