"""Question kinds in flow files: Meta's interactive limits and branch checks at load."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from dripline.flows.branches import draw, target_for
from dripline.flows.loader import FlowFileError, parse_flow_text
from dripline.flows.model import FlowSpec


def _flow(*steps: dict[str, Any]) -> str:
    return yaml.safe_dump({"name": "f", "steps": list(steps)}, sort_keys=False)


def _ask(**extra: Any) -> dict[str, Any]:
    return {"text": "Q?", "wait_for_reply": True, "reply_timeout": "1d", **extra}


def _options(n: int, title: str = "Option") -> list[dict[str, str]]:
    return [{"id": f"o{i}", "title": f"{title} {i}"} for i in range(n)]


def _problems(text: str) -> list[str]:
    with pytest.raises(FlowFileError) as info:
        parse_flow_text(text, "f.yaml", "f")
    return info.value.problems


def _spec(text: str) -> FlowSpec:
    return parse_flow_text(text, "f.yaml", "f").spec


def test_choice_within_limits_loads() -> None:
    spec = _spec(_flow(_ask(kind="choice", options=_options(10, "Row"), list_button="Pick")))
    assert len(spec.steps[0].options) == 10


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (_ask(kind="choice", options=_options(11)), "11 options; a list message holds at most 10"),
        (
            _ask(kind="choice", options=[{"id": "a", "title": "x" * 21}]),
            "a button title is 21 characters; WhatsApp allows 20",
        ),
        (
            _ask(kind="choice", options=[*_options(3), {"id": "b", "title": "y" * 25}]),
            "a list row title is 25 characters; WhatsApp allows 24",
        ),
        (
            _ask(
                kind="choice",
                options=[*_options(3), {"id": "b", "title": "B", "description": "d" * 73}],
            ),
            "a list row description is 73 characters; WhatsApp allows 72",
        ),
        (
            _ask(kind="choice", options=_options(4), list_button="z" * 21),
            "the list button label is 21 characters; WhatsApp allows 20",
        ),
        (
            _ask(kind="choice", options=[{"id": "a", "title": "A"}, {"id": "a", "title": "B"}]),
            "option id 'a' is used twice",
        ),
        (
            {**_ask(kind="choice", options=_options(2)), "text": "t" * 1025},
            "an interactive message's body is 1025 characters; WhatsApp allows 1024",
        ),
        (_ask(kind="choice"), "a choice question needs options (1 to 10)"),
        ({"text": "Q?", "kind": "yes_no"}, "a yes_no question needs wait_for_reply: true"),
        (_ask(kind="number", min=10, max=0), "min (10) is above max (0)"),
        (_ask(min=1), "min/max only apply to kind number"),
        (_ask(kind="number", options=_options(2)), "options only apply to kind choice or yes_no"),
        (_ask(kind="choice", options=[{"id": "a b", "title": "A"}]), "must be letters"),
        (_ask(max_reasks=6), "less than or equal to 5"),
        (_ask(reask="  "), "reask is empty"),
    ],
)
def test_limits_and_rules(step: dict[str, Any], message: str) -> None:
    problems = _problems(_flow(step))
    assert any(message in p for p in problems), problems


def test_yaml_yes_and_no_keys_stay_words() -> None:
    # YAML 1.1 reads the keys yes/no as booleans; they are option ids.
    text = """
name: f
steps:
  - {text: "Q?", kind: yes_no, wait_for_reply: true, reply_timeout: 1d,
     next: {yes: a, no: b}}
  - {id: a, text: "A"}
  - {id: b, text: "B"}
"""
    spec = _spec(text)
    assert spec.steps[0].next == {"yes": "a", "no": "b"}
    assert target_for(spec.steps, 0, "no", None) == "b"


BRANCHY = """
name: f
steps:
  - id: score
    text: "0-10?"
    kind: number
    min: 0
    max: 10
    wait_for_reply: true
    reply_timeout: 1d
    next: {"0-6": sorry, "9-10": review, default: bye}
  - {id: sorry, text: "Sorry", next: bye}
  - {id: review, text: "Review?", kind: yes_no, wait_for_reply: true, reply_timeout: 1d}
  - {id: bye, text: "Bye"}
"""


@pytest.mark.parametrize(
    ("number", "target"),
    [(0, "sorry"), (6, "sorry"), (6.5, "bye"), (7, "bye"), (9, "review"), (10, "review")],
)
def test_number_ranges(number: float, target: str) -> None:
    assert target_for(_spec(BRANCHY).steps, 0, None, number) == target


def test_unmatched_answer_goes_to_the_following_step_without_a_default() -> None:
    spec = _spec(BRANCHY.replace(", default: bye", ""))
    assert target_for(spec.steps, 0, None, 7) == "sorry"


def test_draw() -> None:
    assert draw(_spec(BRANCHY).steps) == [
        "1. score [number 0-10] waits",
        "   0-6 -> sorry",
        "   9-10 -> review",
        "   otherwise -> bye",
        "2. sorry [text]",
        "   -> bye",
        "3. review [yes_no] waits",
        "   -> bye",
        "4. bye [text]",
        "   -> end",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("review, default", "reviw, default"), "'reviw' is no step id"),
        (('"9-10"', '"nine"'), "'nine' is not a number range"),
        (('"9-10"', '"5-10"'), "ranges '0-6' and '5-10' overlap"),
        (('"9-10"', '"11-12"'), "range '11-12' is outside the question's min/max"),
        (('"9-10": review, ', ""), "step 'review' is unreachable"),
        (("next: bye}", "next: score}"), "cycle without a wait_for_reply step"),
    ],
)
def test_branch_problems(change: tuple[str, str], message: str) -> None:
    text = BRANCHY.replace(*change)
    if "score}" in change[1]:
        # sorry -> score would wait at score: make a cycle of steps that do not wait.
        text = text.replace("next: score}", "next: sorry}")
    problems = _problems(text)
    assert any(message in p for p in problems), problems


def test_option_keys_must_be_options() -> None:
    step = _ask(kind="yes_no", next={"maybe": "b"})
    problems = _problems(_flow(step, {"id": "b", "text": "B"}))
    assert any("'maybe' is not an option id (options: yes, no)" in p for p in problems)


def test_a_text_step_branches_only_with_one_target() -> None:
    problems = _problems(_flow(_ask(next={"x": "b"}), {"id": "b", "text": "B"}))
    assert any("per-answer `next` needs kind choice" in p for p in problems)


def test_the_line_of_a_bad_option_is_reported() -> None:
    text = _flow(_ask(kind="choice", options=[{"id": "a", "title": "x" * 21}]))
    [problem] = _problems(text)
    assert problem.startswith("f.yaml:") and "steps[0].options[0].title" in problem
