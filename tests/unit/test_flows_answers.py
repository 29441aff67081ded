"""Replies read as typed answers (flows/answers.py): taps, typed options, numbers."""

from __future__ import annotations

import pytest

from dripline.flows.answers import Answer, Reply, interpret, normalize
from dripline.flows.model import StepSpec

CHOICE = StepSpec.model_validate(
    {
        "text": "Which one?",
        "kind": "choice",
        "wait_for_reply": True,
        "reply_timeout": "1d",
        "options": [
            {"id": "reports", "title": "Reports"},
            {"id": "automations", "title": "Automações"},
            {"id": "other", "title": "Something else"},
        ],
    }
)
YES_NO = StepSpec.model_validate(
    {"text": "Done?", "kind": "yes_no", "wait_for_reply": True, "reply_timeout": "1d"}
)
NUMBER = StepSpec.model_validate(
    {
        "text": "0-10?",
        "kind": "number",
        "min": 0,
        "max": 10,
        "wait_for_reply": True,
        "reply_timeout": "1d",
    }
)
TEXT = StepSpec.model_validate({"text": "Why?", "wait_for_reply": True, "reply_timeout": "1d"})


def test_a_tap_is_its_option_id() -> None:
    assert interpret(CHOICE, Reply("Reports", "reports")) == Answer(
        "option", True, option="reports", text="Reports"
    )
    # A tap whose id is not an option (an older message's button) is read by its title.
    assert interpret(CHOICE, Reply("Something else", "old-id")).option == "other"
    assert not interpret(CHOICE, Reply(None, "old-id")).valid


@pytest.mark.parametrize(
    ("said", "option"),
    [
        ("reports", "reports"),
        ("  REPORTS!! ", "reports"),
        ("automacoes", "automations"),  # accents stripped on both sides
        ("Automações", "automations"),
        ("2", "automations"),  # the option's number
        ("3.", "other"),
        ("something   else", "other"),
        ("4", None),
        ("0", None),
        ("pizza", None),
        ("", None),
    ],
)
def test_typed_choice(said: str, option: str | None) -> None:
    answer = interpret(CHOICE, Reply(said))
    assert (answer.kind, answer.option, answer.valid) == ("option", option, option is not None)


@pytest.mark.parametrize(
    ("said", "option"),
    [
        ("yes", "yes"),
        ("Sim", "yes"),
        ("sí", "yes"),
        ("si", "yes"),
        ("Yes, all done", "yes"),
        ("👍", "yes"),
        ("1", "yes"),
        ("no", "no"),
        ("Não", "no"),
        ("não, ainda não", "no"),
        ("nope", "no"),
        ("2", "no"),
        ("maybe", None),
        ("nothing", None),  # starts with "no" but is not the word
        ("sometimes", None),
    ],
)
def test_typed_yes_no(said: str, option: str | None) -> None:
    assert interpret(YES_NO, Reply(said)).option == option


@pytest.mark.parametrize(
    ("said", "number"),
    [
        ("7", 7.0),
        (" 10 ", 10.0),
        ("0", 0.0),
        ("9/10", 9.0),
        ("8 out of 10", 8.0),
        ("8,5", 8.5),
        ("6.5", 6.5),
        ("11", None),  # out of range
        ("-1", None),
        ("maybe later", None),
        ("7 or 8", None),
    ],
)
def test_typed_number(said: str, number: float | None) -> None:
    answer = interpret(NUMBER, Reply(said))
    assert (answer.kind, answer.number, answer.valid) == ("number", number, number is not None)


def test_a_number_tap_uses_its_id() -> None:
    assert interpret(NUMBER, Reply("Nine", "9")).number == 9.0


def test_text_takes_any_words() -> None:
    assert interpret(TEXT, Reply("Faster setup")) == Answer("text", True, text="Faster setup")
    assert not interpret(TEXT, Reply("   ")).valid


def test_normalize() -> None:
    assert normalize("  Ação  RÁPIDA?! ") == "acao rapida"
