"""Placeholders: `{name}` filled from the conversation, stray braces caught early."""

from __future__ import annotations

import pytest

from dripline.flows.placeholders import compiled, placeholders_in, render, render_parts


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


TEXTS = [
    "",
    "no placeholders",
    "Hi {name}!",
    "{name}",
    "{a}{b} and {{c}} {a}",
    "{{}} {{name}} }}{{",
    "tail {x_1}",
]
VALUES: list[dict[str, object]] = [
    {},
    {"name": "Ana", "a": 1, "b": "", "x_1": "  "},
    {"name": "Ana", "a": 1, "b": "two", "x_1": "y"},
    {"name": None, "a": 0.5, "b": "b", "x_1": "z"},
]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("values", VALUES)
def test_compiled_text_renders_as_render_does(text: str, values: dict[str, object]) -> None:
    """The dispatcher's path (parsed once, values asked one by one) gives what `render`
    gives, and the same KeyError when a value is missing or blank."""
    parts = compiled(text)
    assert parts is not None
    try:
        expected: object = render(text, values)
    except KeyError as exc:
        expected = exc.args
    try:
        got: object = render_parts(parts, values.get)
    except KeyError as exc:
        got = exc.args
    assert got == expected
    assert compiled(text) is parts  # parsed once


@pytest.mark.parametrize("text", ["{", "a {b", "a} b", "{name} {0}"])
def test_a_stray_brace_is_not_compiled(text: str) -> None:
    assert compiled(text) is None
    with pytest.raises(ValueError, match="stray"):
        render(text, {"name": "x"})
