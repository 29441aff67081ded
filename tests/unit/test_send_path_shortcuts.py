"""The per-message shortcuts of the send path (issue 14, full speed) give what the
plain code gives: placeholder values asked one by one, a conversation copied with a
new purpose, template parameters cleaned only when they need it."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from dripline.dispatcher.launcher import _with_purpose
from dripline.flows import YamlFlow, parse_flow_text
from dripline.flows.params import MAX_SPACES, sanitize
from dripline.store.types import Conversation

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _conv(**changes: Any) -> Conversation:
    base = Conversation(
        1, "+4915112345678", "t", 0, "question", "pending", NOW, 0, "w", NOW, None, None,
        "Ana", None, None, {}, NOW, NOW,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


FLOW = YamlFlow(
    parse_flow_text(
        """
defaults: {name: there, plan: basic, city: " "}
steps:
  - text: "Hi {name} ({phone}), plan {plan}"
""",
        "t.yaml",
        "t",
    ).spec
)


@pytest.mark.parametrize(
    "conv",
    [
        _conv(),
        _conv(name=None),
        _conv(name=""),
        _conv(fields={"plan": "gold", "phone": "+1", "name": "Field", "city": None}),
        _conv(name=None, fields={"name": "Field", "plan": None, "extra": 3}),
    ],
)
@pytest.mark.parametrize("key", ["name", "phone", "plan", "city", "extra", "missing"])
def test_a_placeholder_value_is_the_one_the_full_mapping_has(conv: Conversation, key: str) -> None:
    assert FLOW._value(conv, key) == FLOW._values(conv).get(key)


def test_with_purpose_copies_every_field() -> None:
    """Every field, whatever it is (one added later too), set to a value of its own."""
    values: dict[str, Any] = {f.name: object() for f in dataclasses.fields(Conversation)}
    conv = Conversation(**values)
    copied = _with_purpose(conv, "fallback")
    expected = dataclasses.replace(conv, purpose="fallback")
    for f in dataclasses.fields(Conversation):
        assert getattr(copied, f.name) is getattr(expected, f.name), f.name
    assert copied == expected and conv.purpose is values["purpose"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        copied.purpose = "question"  # type: ignore[misc]


def _sanitized_the_long_way(text: str) -> str:
    text = text.replace("\r\n", " ").translate({ord("\n"): " ", ord("\r"): " ", ord("\t"): " "})
    return re.sub(" {5,}", " " * MAX_SPACES, text)


@pytest.mark.parametrize(
    "text",
    ["", "Ana", "a    b", "a     b", "a\nb", "a\r\nb", "\t", "x" + " " * 9 + "y", "é \u2028 ü"],
)
def test_sanitize_leaves_clean_text_alone_and_cleans_the_rest(text: str) -> None:
    assert sanitize(text) == _sanitized_the_long_way(text)
