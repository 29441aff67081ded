import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dripline.errors import InputError
from dripline.whatsapp.webhooks import WebhookBatch, parse_webhook, sign, verify_signature

SECRET = "app-secret"


def test_sign_is_meta_format() -> None:
    # printf '{}' | openssl dgst -sha256 -hmac app-secret
    expected = "bd9549eb87a414d3df28b5a60ea86d4a11e2f1c6258edbd18f56d3c23c0f908d"
    assert sign(b"{}", SECRET) == f"sha256={expected}"


def test_verify_accepts_its_own_signature_and_rejects_changes() -> None:
    body = b'{"object":"whatsapp_business_account","entry":[]}'
    header = sign(body, SECRET)
    assert verify_signature(body, header, SECRET)
    assert not verify_signature(body + b" ", header, SECRET)
    assert not verify_signature(body.replace(b"[]", b"[0]"), header, SECRET)
    assert not verify_signature(body, header, "other-secret")
    assert not verify_signature(body, header[:-1] + ("0" if header[-1] != "0" else "1"), SECRET)
    assert not verify_signature(body, None, SECRET)
    assert not verify_signature(body, "", SECRET)
    assert not verify_signature(body, header, "")  # no secret configured: never valid


@given(st.binary(), st.binary(min_size=1, max_size=1), st.integers(min_value=0))
def test_any_changed_byte_fails(body: bytes, byte: bytes, where: int) -> None:
    header = sign(body, SECRET)
    changed = bytearray(body + b"x")
    i = where % len(changed)
    changed[i] = (changed[i] + 1 + byte[0] % 255) % 256
    assert not verify_signature(bytes(changed), header, SECRET)


def batch(value: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": value}]}],
    }


META = {"display_phone_number": "15550000000", "phone_number_id": "111"}


def test_parses_statuses_with_errors_and_callback_data() -> None:
    payload = batch(
        {
            "messaging_product": "whatsapp",
            "metadata": META,
            "statuses": [
                {
                    "id": "wamid.1",
                    "status": "delivered",
                    "timestamp": "1700000000",
                    "recipient_id": "15551234567",
                    "biz_opaque_callback_data": "conv:9",
                    "conversation": {"id": "x", "origin": {"type": "utility"}},
                    "pricing": {"billable": True},
                },
                {
                    "id": "wamid.2",
                    "status": "failed",
                    "timestamp": 1700000001,
                    "recipient_id": "15551234567",
                    "errors": [
                        {
                            "code": 131026,
                            "title": "Message undeliverable",
                            "error_data": {"details": "not on WhatsApp"},
                        }
                    ],
                },
            ],
        }
    )
    result = parse_webhook(json.dumps(payload).encode())
    first, second = result.statuses
    assert (first.id, first.status, first.timestamp) == ("wamid.1", "delivered", 1700000000)
    assert first.biz_opaque_callback_data == "conv:9"
    assert first.phone_number_id == "111"
    assert second.status == "failed"
    assert second.errors[0].code == 131026
    assert second.errors[0].details == "not on WhatsApp"
    assert result.messages == ()


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ({"type": "text", "text": {"body": "yes please"}}, "yes please"),
        ({"type": "button", "button": {"text": "Yes", "payload": "Y"}}, "Yes"),
        (
            {
                "type": "interactive",
                "interactive": {
                    "type": "button_reply",
                    "button_reply": {"id": "b1", "title": "No"},
                },
            },
            "No",
        ),
        (
            {
                "type": "interactive",
                "interactive": {"type": "list_reply", "list_reply": {"id": "r", "title": "Red"}},
            },
            "Red",
        ),
        ({"type": "image", "image": {"id": "media"}}, None),
    ],
)
def test_parses_inbound_messages(message: dict[str, Any], text: str | None) -> None:
    raw = {"from": "15551234567", "id": "wamid.IN", "timestamp": "1700000000", **message}
    payload = batch({"metadata": META, "contacts": [{"wa_id": "15551234567"}], "messages": [raw]})
    (parsed,) = parse_webhook(payload).messages
    assert parsed.from_ == "15551234567"
    assert parsed.text == text
    assert parsed.type == message["type"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"{not json", "webhook body"),
        ([], "webhook"),
        ({"entry": []}, "webhook.object"),
        (batch({"statuses": [{"id": "w", "status": "sent", "recipient_id": "1"}]}), "timestamp"),
        (
            batch(
                {"statuses": [{"id": "w", "status": "zap", "timestamp": 1, "recipient_id": "1"}]}
            ),
            "status",
        ),
        (batch({"messages": [{"id": "w", "timestamp": 1, "type": "text"}]}), "from"),
        (
            batch(
                {
                    "statuses": [
                        {
                            "id": "w",
                            "status": "failed",
                            "timestamp": 1,
                            "recipient_id": "1",
                            "errors": [{"title": "no code"}],
                        }
                    ]
                }
            ),
            "errors.0.code",
        ),
    ],
)
def test_malformed_payloads_name_the_field(payload: Any, field: str) -> None:
    body = payload if isinstance(payload, bytes) else json.dumps(payload)
    with pytest.raises(InputError, match=field.replace(".", r"\.")):
        parse_webhook(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)
keys = st.sampled_from(
    [
        "object",
        "entry",
        "changes",
        "value",
        "metadata",
        "statuses",
        "messages",
        "id",
        "status",
        "timestamp",
        "recipient_id",
        "errors",
        "code",
        "from",
        "type",
        "text",
        "body",
        "button",
        "interactive",
        "button_reply",
        "title",
        "biz_opaque_callback_data",
        "phone_number_id",
    ]
)
# Webhook-shaped JSON: the parser's own keys at every level, so deep paths get exercised.
shaped = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=5)
    | st.sampled_from(["sent", "failed", "whatsapp_business_account", "text", "1700000000"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=6),
    max_leaves=40,
)


@settings(max_examples=300)
@given(st.one_of(json_values, shaped))
def test_any_json_parses_or_raises_input_error(data: Any) -> None:
    try:
        result = parse_webhook(json.dumps(data).encode())
    except InputError:
        return
    assert isinstance(result, WebhookBatch)


@given(st.binary())
def test_any_bytes_parse_or_raise_input_error(data: bytes) -> None:
    try:
        result = parse_webhook(data)
    except InputError:
        return
    assert isinstance(result, WebhookBatch)
