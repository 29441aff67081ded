"""Placeholders: `{name}` filled from the conversation, stray braces caught early."""

from __future__ import annotations

import pytest

from dripline.flows.placeholders import placeholders_in, render


def test_render_fills_and_unescapes() -> None:
    assert render("Hi {name}, {{literal}} {plan}", {"name": "Ana", "plan": 3}) == (
        "Hi Ana, {literal} 3"
    )


@pytest.mark.parametrize("values", [{}, {"name": None}, {"name": "  "}])
def test_render_missing_value(values: dict[str, object]) -> None:
    with pytest.raises(KeyError, match="name"):
        render("Hi {name}", values)


def test_no_attribute_access_or_format_specs() -> None:
    # str.format would evaluate these; a flow file must not reach into objects.
    for text in ("{name.__class__}", "{name!r}", "{name:>10}", "{0}"):
        with pytest.raises(ValueError, match="stray"):
            placeholders_in(text)


def test_placeholders_in_lists_names() -> None:
    assert placeholders_in("{a} {{b}} {c_1}") == ["a", "c_1"]


@pytest.mark.parametrize("text", ["{", "}", "a {b", "a} b", "{ name }"])
def test_stray_braces(text: str) -> None:
    with pytest.raises(ValueError, match="stray"):
        placeholders_in(text)
