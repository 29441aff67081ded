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
        ({"object": "whatsapp_business_account", "entry": {}}, "webhook.entry"),
    ],
)
def test_a_body_that_is_no_webhook_names_the_field(payload: Any, field: str) -> None:
    body = payload if isinstance(payload, bytes) else json.dumps(payload)
    with pytest.raises(InputError, match=field.replace(".", r"\.")):
        parse_webhook(body)


GOOD_STATUS = {"id": "wamid.ok", "status": "read", "timestamp": "1", "recipient_id": "1"}
GOOD_MESSAGE = {"from": "15551234567", "id": "wamid.in", "timestamp": "1", "type": "text",
                "text": {"body": "hi"}}  # fmt: skip


@pytest.mark.parametrize(
    ("value", "rejected"),
    [
        # an item without an id cannot be matched to anything: skipped, named
        ({"statuses": [{"status": "sent", "timestamp": 1}]}, ["statuses.0.id"]),
        ({"statuses": [{"id": "w", "timestamp": 1}]}, ["statuses.0.status"]),
        ({"messages": [{"from": "1", "timestamp": 1, "type": "text"}]}, ["messages.0.id"]),
        ({"statuses": ["not an object"]}, ["statuses.0"]),
        ({"statuses": {"id": "w"}}, ["statuses"]),
        # errors without a code: the error is skipped, its status kept
        (
            {"statuses": [{"id": "w", "status": "failed", "errors": [{"title": "no code"}]}]},
            ["statuses.0.errors.0.code"],
        ),
        ({"errors": [{"title": "value-level, no code"}]}, ["errors.0.code"]),
        # tolerated without a rejection: Meta adds values and omits fields
        ({"statuses": [{"id": "w", "status": "zap", "recipient_id": "1"}]}, []),
        ({"statuses": [{"id": "w", "status": "failed"}]}, []),
        ({"messages": [{"id": "w", "type": "text", "text": "not an object"}]}, []),
        ({"messages": [{"id": "w", "timestamp": "x", "type": "hologram"}]}, []),
    ],
)
def test_one_bad_item_never_discards_the_others(value: dict[str, Any], rejected: list[str]) -> None:
    bad = value.get("statuses", [])
    statuses = [*bad, GOOD_STATUS] if isinstance(bad, list) else bad
    messages = [*value.get("messages", []), GOOD_MESSAGE]
    body = batch({**value, "metadata": META, "statuses": statuses, "messages": messages})
    result = parse_webhook(json.dumps(body))
    assert [r.where.split("value.", 1)[1] for r in result.rejected] == rejected
    assert all(r.reason for r in result.rejected)
    assert any(m.id == "wamid.in" and m.text == "hi" for m in result.messages)
    if isinstance(bad, list):
        assert any(s.id == "wamid.ok" for s in result.statuses)


def test_unknown_statuses_and_senders_without_from_are_returned() -> None:
    body = batch(
        {
            "metadata": META,
            "contacts": [{"profile": {"name": "N", "username": "@n"}, "user_id": "US.13491208"}],
            "statuses": [{"id": "w", "status": "zap", "timestamp": "5", "recipient_user_id": "U"}],
            "messages": [
                {
                    "from_user_id": "US.13491208",
                    "id": "w2",
                    "timestamp": "5",
                    "type": "text",
                    "text": {"body": "by username"},
                },
            ],
        }
    )
    result = parse_webhook(body)
    (status,) = result.statuses
    assert (status.status, status.known_status, status.recipient_id) == ("zap", False, "")
    assert status.recipient_user_id == "U"
    (msg,) = result.messages
    assert (msg.from_, msg.from_user_id, msg.text) == ("", "US.13491208", "by username")
    assert (msg.contact_name, msg.username) == ("N", "@n")
    assert result.rejected == ()


def test_value_level_errors_are_returned_with_their_number() -> None:
    body = batch(
        {
            "metadata": META,
            "errors": [
                {"code": 130429, "title": "Rate limit hit", "error_data": {"details": "throughput"}}
            ],
            "statuses": [GOOD_STATUS],
        }
    )
    result = parse_webhook(body)
    (err,) = result.errors
    assert (err.error.code, err.error.details) == (130429, "throughput")
    assert (err.phone_number_id, err.account_id) == ("111", "WABA")
    assert len(result.statuses) == 1


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
