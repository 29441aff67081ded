"""Lone UTF-16 surrogates and NUL: refused at enrollment, replaced in Meta's webhooks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dripline.errors import InputError
from dripline.flows import load_flows
from dripline.server.enrollment import parse_enrollments
from dripline.text import scrub_surrogates, unstorable_reason
from dripline.whatsapp.webhooks import parse_webhook

FLOW = "name: survey\nsteps:\n  - id: q1\n    text: 'Hi {name}'\n"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("Ana", None),
        ("\U0001f600 ok", None),
        ("a\x00b", "NUL"),
        ("a\ud83d", "surrogate"),
        ("\ude00", "surrogate"),
    ],
)
def test_unstorable_reason(value: str, reason: str | None) -> None:
    found = unstorable_reason(value)
    assert (found is None) if reason is None else (found is not None and reason in found)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('{"a": ["x\\ud83dy", {"\\udc00": 1}]}', {"a": ["x\ufffdy", {"\ufffd": 1}]}),
        ('{"a": "\\ud83d\\ude00"}', {"a": "\U0001f600"}),
        ('{"a": "\\\\ud83d"}', {"a": "\\ud83d"}),  # an escaped backslash, not a surrogate
        ('["\\uD800"]', ["\ufffd"]),
    ],
)
def test_scrub_surrogates(source: str, expected: object) -> None:
    assert scrub_surrogates(json.loads(source), source) == expected
    assert scrub_surrogates(json.loads(source), source.encode()) == expected


def test_a_webhook_keeps_a_message_with_a_lone_surrogate() -> None:
    body = (
        '{"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"value":'
        ' {"messages": [{"from": "14155550123", "id": "wamid.1", "timestamp": "1",'
        ' "type": "text", "text": {"body": "hi \\ud83d"}}]}}]}]}'
    )
    [message] = parse_webhook(body.encode()).messages
    assert message.text == "hi \ufffd"
    message.text.encode("utf-8")  # storable


@pytest.mark.parametrize("field", ["name", "timezone", "flow"])
def test_enrollment_refuses_a_lone_surrogate(tmp_path: Path, field: str) -> None:
    (tmp_path / "survey.yaml").write_text(FLOW)
    flows = load_flows(tmp_path)
    item = {"phone": "+14155550123", "flow": "survey", field: "x\\ud800"}
    raw = json.dumps(item).replace("\\\\", "\\").encode()
    with pytest.raises(InputError, match=rf"^{field}: .*(surrogate|unicode)"):
        parse_enrollments(raw, flows)


def test_enrollment_refuses_a_lone_surrogate_in_fields(tmp_path: Path) -> None:
    (tmp_path / "survey.yaml").write_text(FLOW)
    raw = (
        b'{"phone": "+14155550123", "flow": "survey", "name": "Ana", "fields": {"plan": "\\udc80"}}'
    )
    with pytest.raises(InputError, match=r"^fields.*(surrogate|unicode)"):
        parse_enrollments(raw, load_flows(tmp_path))


async def test_a_message_that_cannot_be_encoded_is_refused_before_sending() -> None:
    """A lone surrogate stored before enrollment refused it: the send fails with a
    reason (permanent), it is not an `unknown` send, and nothing reaches the API."""
    from dripline.errors import WhatsAppError
    from tests.unit.test_whatsapp_client import Recorder, make

    transport = Recorder((200, b'{"messages": [{"id": "wamid.X"}]}', None))
    with pytest.raises(WhatsAppError) as info:
        await make(transport).send_text("14155550123", "Hi \ud83d")
    assert info.value.error_class == "permanent" and "surrogate" in str(info.value)
    assert transport.calls == []
