"""The JSON text the client posts for a text or a plain template (written directly,
issue 14) is exactly what encoding the payload dict gives."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dripline.errors import InputError
from dripline.flows.base import TemplateButton, TemplateHeader, TemplateMessage
from dripline.whatsapp.payloads import template_json, template_payload, text_json, text_payload


def _encoded(payload: dict[str, object]) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


# Any text, lone surrogates and control characters included.
TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=40)
CALLBACK = st.none() | st.text(max_size=20)


@given(to=TEXT, body=TEXT, callback=CALLBACK)
def test_a_text_is_written_as_its_payload_encodes(to: str, body: str, callback: str | None) -> None:
    assert text_json(to, body, callback_data=callback) == _encoded(
        text_payload(to, body, callback_data=callback)
    )


@given(
    to=TEXT,
    name=TEXT,
    language=TEXT,
    params=st.lists(TEXT, max_size=4).map(tuple),
    callback=CALLBACK,
)
def test_a_plain_template_is_written_as_its_payload_encodes(
    to: str, name: str, language: str, params: tuple[str, ...], callback: str | None
) -> None:
    message = TemplateMessage(name, language, params)
    assert template_json(to, message, callback_data=callback) == _encoded(
        template_payload(to, message, callback_data=callback)
    )


@pytest.mark.parametrize(
    "message",
    [
        TemplateMessage("t", "en", header=TemplateHeader("text", "x")),
        TemplateMessage("t", "en", buttons=(TemplateButton(0, "quick_reply", "yes"),)),
        TemplateMessage("t", "en", named_body_params=(("first_name", "Ana"),)),
    ],
)
def test_other_templates_are_left_to_the_payload(message: TemplateMessage) -> None:
    assert template_json("+1", message) is None


def test_a_long_callback_is_refused_either_way() -> None:
    with pytest.raises(InputError, match="longer than 512"):
        text_json("+1", "hi", callback_data="x" * 513)
    with pytest.raises(InputError, match="longer than 512"):
        template_json("+1", TemplateMessage("t", "en"), callback_data="x" * 513)
