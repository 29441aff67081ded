"""The client with an injected transport: no server, no network."""

import json

import pytest
from pydantic import SecretStr

from dripline.errors import InputError, TransportError, WhatsAppError
from dripline.flows.base import TemplateMessage, TextMessage
from dripline.settings import Settings
from dripline.whatsapp.client import CloudApiClient, RawResponse

OK = json.dumps(
    {
        "messaging_product": "whatsapp",
        "contacts": [{"input": "+15551234567", "wa_id": "15551234567"}],
        "messages": [{"id": "wamid.ABC"}],
    }
).encode()


class Recorder:
    """A transport that records requests and answers from a script."""

    def __init__(self, *answers: RawResponse | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, dict[str, object]]] = []

    async def __call__(self, url: str, body: bytes) -> RawResponse:
        self.calls.append((url, json.loads(body)))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def make(transport: Recorder) -> CloudApiClient:
    return CloudApiClient(
        base_url="https://graph.example/",
        api_version="v23.0",
        phone_number_id="111",
        access_token="SECRET-TOKEN",
        transport=transport,
    )


async def test_send_text_builds_the_documented_body() -> None:
    rec = Recorder((200, OK, None))
    result = await make(rec).send_text("+15551234567", "Hello", callback_data="conv:1")
    assert result.wamid == "wamid.ABC"
    assert result.http_status == 200
    assert result.raw["contacts"][0]["wa_id"] == "15551234567"
    url, body = rec.calls[0]
    assert url == "https://graph.example/v23.0/111/messages"
    assert body == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "+15551234567",
        "type": "text",
        "text": {"preview_url": False, "body": "Hello"},
        "biz_opaque_callback_data": "conv:1",
    }


def _answer(contacts: object) -> bytes:
    return json.dumps({"contacts": contacts, "messages": [{"id": "wamid.X"}]}).encode()


@pytest.mark.parametrize(
    ("contacts", "wa_id"),
    [
        # Meta's send reference: the ID may differ from the number sent (Brazil, Mexico).
        ([{"input": "+5531988887777", "wa_id": "553188887777"}], "553188887777"),
        ([{"input": "+525512345678", "wa_id": "5215512345678"}], "5215512345678"),
        ([{"input": "+15551234567", "wa_id": "15551234567"}], "15551234567"),
        # Missing or odd values never fail a send the API accepted: just no wa_id.
        ([], None),
        ([{"input": "+15551234567"}], None),
        ([{"wa_id": 15551234567}], None),
        ([{"wa_id": "not-a-number"}], None),
        ("nonsense", None),
    ],
)
async def test_the_answers_wa_id_is_surfaced(contacts: object, wa_id: str | None) -> None:
    result = await make(Recorder((200, _answer(contacts), None))).send_text("+15551234567", "Hi")
    assert result.wamid == "wamid.X"
    assert result.wa_id == wa_id


async def test_send_template_with_parameters_and_sender_override() -> None:
    rec = Recorder((200, OK, None))
    await make(rec).send_template("+1555", "welcome", "en_US", ("Ana", "3"), sender="222")
    url, body = rec.calls[0]
    assert url == "https://graph.example/v23.0/222/messages"
    assert body["template"] == {
        "name": "welcome",
        "language": {"code": "en_US"},
        "components": [
            {
                "type": "body",
                "parameters": [{"type": "text", "text": "Ana"}, {"type": "text", "text": "3"}],
            }
        ],
    }
    assert "biz_opaque_callback_data" not in body


async def test_send_dispatches_on_the_message_type() -> None:
    rec = Recorder((200, OK, None))
    client = make(rec)
    await client.send("+1555", TextMessage("hi"))
    await client.send("+1555", TemplateMessage("t", "pt_BR"))
    assert [b["type"] for _, b in rec.calls] == ["text", "template"]
    assert "components" not in rec.calls[1][1]["template"]  # type: ignore[operator]


async def test_callback_data_longer_than_512_is_refused() -> None:
    rec = Recorder((200, OK, None))
    await make(rec).send_text("+1555", "x", callback_data="a" * 512)
    with pytest.raises(InputError, match="callback_data"):
        await make(rec).send_text("+1555", "x", callback_data="a" * 513)


def error(code: int, details: str = "why") -> bytes:
    return json.dumps(
        {
            "error": {
                "message": f"(#{code}) Something",
                "type": "OAuthException",
                "code": code,
                "error_data": {"messaging_product": "whatsapp", "details": details},
                "fbtrace_id": "Atrace",
            }
        }
    ).encode()


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "code", "error_class", "retry_s"),
    [
        (400, error(130429), None, 130429, "throttle", None),
        (400, error(130429), "7", 130429, "throttle", 7.0),
        (400, error(131056), None, 131056, "pair_throttle", None),
        (400, error(131048), None, 131048, "quality_throttle", None),
        (400, error(131047), None, 131047, "window", None),
        (400, error(100), None, 100, "permanent", None),
        (401, error(190), None, 190, "auth", None),
        (400, error(368), None, 368, "account", None),
        (500, error(131000), None, 131000, "transient", None),
        # Meta's own JSON error on a 5xx keeps its code's class (and is retried).
        (500, error(1), None, 1, "transient", None),
        (503, error(2), "3", 2, "transient", 3.0),
        (502, error(131016), None, 131016, "transient", None),
        (504, error(190), None, 190, "auth", None),
        (429, b"", "2", None, "throttle", 2.0),
        (400, b'{"error": "not an object"}', None, None, "transient", None),
        (400, b'{"error": {"code": "100"}}', None, None, "transient", None),
    ],
)
async def test_errors_are_classified(
    status: int,
    body: bytes,
    retry_after: str | None,
    code: int | None,
    error_class: str,
    retry_s: float | None,
) -> None:
    with pytest.raises(WhatsAppError) as info:
        await make(Recorder((status, body, retry_after))).send_text("+1555", "x")
    exc = info.value
    assert not isinstance(exc, TransportError)
    assert (exc.code, exc.error_class, exc.http_status, exc.retry_after_s) == (
        code,
        error_class,
        status,
        retry_s,
    )
    if code is not None:
        assert exc.details == "why"
        assert exc.fbtrace_id == "Atrace"


@pytest.mark.parametrize(
    ("status", "body", "retry_after"),
    [
        (500, b"", None),
        (500, b"Internal Server Error", None),
        (502, b"<html>bad gateway</html>", None),
        (503, b"", None),
        (503, b"Service Unavailable", "30"),  # Retry-After does not prove it was not applied
        (504, b"<html>gateway timeout</html>", None),
        (503, b'{"error": "overloaded"}', None),  # JSON, but not Meta's error object
        (501, b"", None),
        (101, b"", None),  # a final 1xx is a protocol error after the request was written
    ],
)
async def test_an_answer_without_metas_error_body_may_have_been_sent(
    status: int, body: bytes, retry_after: str | None
) -> None:
    """Something between us and the Graph API answered: it may have passed the request
    on, so the send is `unknown`, never resent blindly (the client's docstring)."""
    with pytest.raises(TransportError) as info:
        await make(Recorder((status, body, retry_after))).send_text("+1555", "x")
    assert info.value.maybe_sent is True
    assert info.value.http_status == status
    assert info.value.code is None
    assert "may have been sent" in str(info.value)


@pytest.mark.parametrize(
    "body", [b"", b"not json", b"[]", b"{}", b'{"messages": []}', b'{"messages": [{"id": 5}]}']
)
async def test_a_malformed_success_body_is_a_clear_maybe_sent_error(body: bytes) -> None:
    with pytest.raises(TransportError, match="malformed") as info:
        await make(Recorder((200, body, None))).send_text("+1555", "x")
    assert info.value.maybe_sent is True
    assert info.value.http_status == 200


async def test_transport_errors_pass_through() -> None:
    rec = Recorder(TransportError("read timeout", maybe_sent=True))
    with pytest.raises(TransportError) as info:
        await make(rec).send_text("+1555", "x")
    assert info.value.maybe_sent is True
    assert info.value.error_class == "transient"


def test_the_token_is_not_in_the_repr() -> None:
    client = CloudApiClient(phone_number_id="111", access_token="SECRET-TOKEN")
    assert "SECRET" not in repr(client)
    assert "SECRET" not in repr(client._transport)


def test_from_settings_uses_the_whatsapp_settings() -> None:
    settings = Settings(
        whatsapp_base_url="http://127.0.0.1:9/",
        whatsapp_api_version="v99.0",
        whatsapp_phone_number_id="333",
        whatsapp_access_token=SecretStr("SECRET-TOKEN"),
    )
    client = CloudApiClient.from_settings(settings)
    assert client.messages_url() == "http://127.0.0.1:9/v99.0/333/messages"
    assert client.messages_url("444") == "http://127.0.0.1:9/v99.0/444/messages"
    assert "SECRET" not in repr(client)
