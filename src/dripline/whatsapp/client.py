"""The Cloud API client: sends text and template messages, maps every answer to a result
or a typed error.

    CloudApiClient.send / send_text / send_template
        -> SendResult(wamid, raw, http_status, wa_id)   HTTP 2xx with messages[0].id
        -> WhatsAppError(code, error_class, ...)        the API answered an error
        -> TransportError(maybe_sent=...)               no usable answer

`maybe_sent` says whether the request may have reached the API (the Cloud API has no
idempotency key, so a resend can deliver twice):

    connect refused / DNS / connect timeout     maybe_sent=False  (nothing was written)
    the proxy refused or failed CONNECT         maybe_sent=False  (a 407 is an `auth`
                                                 WhatsAppError: fix the credentials)
    read timeout after the request was written  maybe_sent=True
    reset / disconnect before the response      maybe_sent=True   (the server may have
                                                 accepted it; aiohttp never resends a POST)
    2xx with a malformed body                   maybe_sent=True   (2xx means accepted)
    5xx without Meta's JSON error (bare 5xx)    maybe_sent=True   (see below)
    a final 1xx (101 Switching Protocols)       maybe_sent=True   (a protocol error)

A non-2xx answer that carries Meta's JSON error (`{"error": {"code": N, ...}}`) is Meta's
own decision and is classified by its code, whatever the status: code 1, 2 or 131000
on a 500 or 503 is transient and retried, because the Graph API said so. A 5xx without
that body was written by something between us and the Graph API (a load balancer, a
gateway, a TLS-inspecting proxy), and no status tells whether it had passed the
request on: RFC 9110 defines 502 and 504 as a gateway's answer about an upstream it
contacted for this request (sections 15.6.3, 15.6.5); a 503 (15.6.4) may be a shed
request, but gateways also send it after forwarding (Envoy answers 503 when the
upstream resets or closes mid-request: access-log flags UR and UC); and a client
"SHOULD NOT automatically retry a request with a non-idempotent method unless it has
some means to know ... that the original request was never applied" (section 9.2.2),
which no status code is. So every bare 5xx is `TransportError(maybe_sent=True,
http_status=...)`: the dispatcher holds the message as `unknown` until a status webhook
settles it (docs/reliability.md).

The HTTP layer is a `Transport`: an async callable `(url, body) -> (status, body,
retry_after)` raising `TransportError` (or an `auth` WhatsAppError when the proxy
refuses its credentials: 407, or 401 from tinyproxy). `Http1Transport` (`http1.py`, the
default) and `AiohttpTransport` (`aiohttp_transport.py`) are the real ones; both go
through the HTTPS proxy in `ProxyConfig` (`proxy.py`); unit tests inject a plain
function instead.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from pydantic import SecretStr

from dripline.errors import InputError, TransportError, WhatsAppError
from dripline.flows.base import InteractiveMessage, OutboundMessage, TemplateMessage, TextMessage
from dripline.settings import HttpClient, Settings
from dripline.whatsapp.errors import describe, parse_retry_after
from dripline.whatsapp.http1 import Http1Transport, RawResponse
from dripline.whatsapp.payloads import (
    MAX_CALLBACK_DATA_CHARS,
    interactive_payload,
    template_json,
    template_payload,
    text_json,
)
from dripline.whatsapp.proxy import ProxyConfig
from dripline.whatsapp.throughput import parse_throughput

if TYPE_CHECKING:
    import aiohttp

    from dripline.whatsapp.aiohttp_transport import AiohttpTransport


def __getattr__(name: str) -> Any:
    # `AiohttpTransport` stays importable from here without loading aiohttp up front.
    if name == "AiohttpTransport":
        from dripline.whatsapp.aiohttp_transport import AiohttpTransport

        return AiohttpTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MAX_CALLBACK_DATA_CHARS",
    "AiohttpTransport",
    "CloudApiClient",
    "HttpClient",
    "RawResponse",
    "Reader",
    "SendResult",
    "Transport",
    "build_error",
    "parse_send_response",
]

Transport = Callable[[str, bytes], Awaitable[RawResponse]]
Reader = Callable[[str], Awaitable[RawResponse]]  # a GET: url -> answer


class _ClosableTransport(Protocol):
    async def __call__(self, url: str, body: bytes) -> RawResponse: ...

    async def close(self) -> None: ...


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_MAX_ERROR_TEXT = 300


@dataclass(frozen=True, slots=True)
class SendResult:
    """The API accepted the message: `wamid` identifies it in status webhooks.

    `wa_id` is the user's WhatsApp ID (`contacts[0].wa_id`, digits), None when the answer
    had none. Meta warns it may differ from the number sent (Brazil's ninth digit,
    Mexico's 521); the user's replies come `from` it."""

    wamid: str
    raw: dict[str, Any]
    http_status: int
    wa_id: str | None = None


def _wa_id(data: Any) -> str | None:
    """`contacts[0].wa_id` when it is a plausible WhatsApp ID (digits), else None: an
    odd value must never fail a send the API accepted."""
    try:
        value = data["contacts"][0]["wa_id"]
    except (TypeError, KeyError, IndexError):
        return None
    if isinstance(value, str):
        value = value.strip().lstrip("+")
        if value.isascii() and value.isdigit() and 4 <= len(value) <= 15:
            return value
    return None


def parse_send_response(status: int, raw: bytes) -> SendResult:
    """A 2xx answer's wamid and wa_id; TransportError(maybe_sent=True) when the body is
    unusable (no wamid)."""
    try:
        data = json.loads(raw)
        wamid = data["messages"][0]["id"]
    except (ValueError, TypeError, KeyError, IndexError):
        wamid = None
        data = None
    if not isinstance(wamid, str) or not wamid:
        raise TransportError(
            f"Cloud API answered HTTP {status} with a malformed body (no messages[0].id); "
            "the message was probably accepted",
            maybe_sent=True,
            http_status=status,
        )
    return SendResult(wamid=wamid, raw=data, http_status=status, wa_id=_wa_id(data))


def build_error(status: int, raw: bytes, retry_after: str | None) -> WhatsAppError:
    """The error for a non-2xx answer: Meta's JSON error is classified by `error.code`;
    a bare 5xx or a final 1xx is `TransportError(maybe_sent=True)` (module docstring)."""
    code: int | None = None
    api_message = ""
    details: str | None = None
    fbtrace_id: str | None = None
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        raw_code = error.get("code")
        if isinstance(raw_code, int) and not isinstance(raw_code, bool):
            code = raw_code
        api_message = str(error.get("message") or "")[:_MAX_ERROR_TEXT]
        error_data = error.get("error_data")
        if isinstance(error_data, dict) and error_data.get("details") is not None:
            details = str(error_data["details"])[:_MAX_ERROR_TEXT]
        if error.get("fbtrace_id") is not None:
            fbtrace_id = str(error["fbtrace_id"])
    if code is None and (status >= 500 or status < 200):
        what = "a protocol error" if status < 200 else "not an answer from the Graph API"
        return TransportError(
            f"HTTP {status} without a Cloud API error body ({what}); "
            "the message may have been sent",
            maybe_sent=True,
            http_status=status,
        )
    info = describe(code, status)
    if code is None:
        message = f"Cloud API answered HTTP {status} without an error code ({info.meaning})"
    else:
        message = f"Cloud API error {code} ({info.meaning}), HTTP {status}"
        if api_message:
            message += f": {api_message}"
    return WhatsAppError(
        message,
        code=code,
        error_class=info.error_class.value,
        http_status=status,
        details=details,
        fbtrace_id=fbtrace_id,
        retry_after_s=parse_retry_after(retry_after),
    )


class CloudApiClient:
    """Sends messages through `POST /{version}/{phone_number_id}/messages`.

    One instance per process; it is safe to call from many tasks at once. Use it as an
    async context manager or call `close()`.
    """

    def __init__(
        self,
        *,
        phone_number_id: str,
        access_token: str | SecretStr = "",
        base_url: str = "https://graph.facebook.com",
        api_version: str = "v23.0",
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 15.0,
        connector_limit: int = 0,
        transport: Transport | None = None,
        reader: Reader | None = None,
        session: aiohttp.ClientSession | None = None,
        http_client: HttpClient = "builtin",
        proxy: ProxyConfig | None = None,
    ) -> None:
        token = (
            access_token.get_secret_value() if isinstance(access_token, SecretStr) else access_token
        )
        self._base = f"{base_url.rstrip('/')}/{api_version}/"
        self.phone_number_id = phone_number_id
        self._url = f"{self._base}{phone_number_id}/messages"
        self._urls: dict[str, str] = {phone_number_id: self._url}
        self._own_transport: _ClosableTransport | None = None
        if transport is None:
            if http_client == "aiohttp" or session is not None:
                # Imported only when chosen: aiohttp is a large part of a start-up.
                from dripline.whatsapp.aiohttp_transport import AiohttpTransport

                self._own_transport = AiohttpTransport(
                    access_token=token,
                    connect_timeout_s=connect_timeout_s,
                    read_timeout_s=read_timeout_s,
                    connector_limit=connector_limit,
                    session=session,
                    proxy=proxy,
                )
            else:
                self._own_transport = Http1Transport(
                    access_token=token,
                    connect_timeout_s=connect_timeout_s,
                    read_timeout_s=read_timeout_s,
                    proxy=proxy,
                )
            transport = self._own_transport
        self._transport: Transport = transport
        # GETs (the throughput tier: rare) go through the same transport: both real ones
        # read too, on the same connections and proxy.
        self._reader = reader

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> CloudApiClient:
        """A client for the base URL, version, number and token in `settings`."""
        kwargs: dict[str, Any] = {
            "phone_number_id": settings.whatsapp_phone_number_id,
            "access_token": settings.whatsapp_access_token,
            "base_url": settings.whatsapp_base_url,
            "api_version": settings.whatsapp_api_version,
            "connect_timeout_s": settings.http_connect_timeout_s,
            "read_timeout_s": settings.http_read_timeout_s,
            "http_client": settings.whatsapp_http_client,
            "proxy": ProxyConfig.from_strings(settings.proxy_url, settings.no_proxy),
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    def __repr__(self) -> str:
        return f"CloudApiClient(url={self._url!r})"

    def messages_url(self, sender: str | None = None) -> str:
        """The `/messages` URL for `sender` (a phone number id; default: the configured one)."""
        if sender is None:
            return self._url
        url = self._urls.get(sender)
        if url is None:
            url = self._urls[sender] = f"{self._base}{sender}/messages"
        return url

    async def send_text(
        self,
        to: str,
        body: str,
        *,
        sender: str | None = None,
        callback_data: str | None = None,
    ) -> SendResult:
        """Send a free-form text (only inside the recipient's 24 h window)."""
        return await self._post(sender, text_json(to, body, callback_data=callback_data))

    async def send_template(
        self,
        to: str,
        name: str,
        language: str,
        body_params: tuple[str, ...] | list[str] = (),
        *,
        sender: str | None = None,
        callback_data: str | None = None,
    ) -> SendResult:
        """Send an approved template; `body_params` fill {{1}}, {{2}}, ... in its body.

        For header, button and named parameters, `send` a `TemplateMessage`."""
        message = TemplateMessage(name, language, tuple(body_params))
        payload = template_payload(to, message, callback_data=callback_data)
        return await self._post(sender, payload)

    async def send(
        self,
        to: str,
        message: OutboundMessage,
        *,
        sender: str | None = None,
        callback_data: str | None = None,
    ) -> SendResult:
        """Send a flow's `TextMessage`, `TemplateMessage` or `InteractiveMessage`."""
        if isinstance(message, TextMessage):
            return await self.send_text(
                to, message.body, sender=sender, callback_data=callback_data
            )
        if isinstance(message, TemplateMessage):
            body = template_json(to, message, callback_data=callback_data)
            if body is not None:
                return await self._post(sender, body)
            payload = template_payload(to, message, callback_data=callback_data)
            return await self._post(sender, payload)
        if isinstance(message, InteractiveMessage):
            payload = interactive_payload(to, message, callback_data=callback_data)
            return await self._post(sender, payload)
        raise InputError(f"unsupported message type {type(message).__name__}", where="message")

    async def mark_read(self, message_id: str, *, sender: str | None = None) -> None:
        """Mark a message the user sent as read (and, Meta says, the earlier ones in the
        conversation): the user sees blue ticks. `sender` is the business number it was
        sent to. Meta's "Mark messages as read": `POST /{phone_number_id}/messages` with
        `{"messaging_product": "whatsapp", "status": "read", "message_id": WAMID}`,
        answered `{"success": true}`; an unknown message id is error 131009.

        Raises WhatsAppError (Meta's error) or TransportError (no usable answer)."""
        url = self._url if sender is None else self.messages_url(sender)
        payload = {"messaging_product": "whatsapp", "status": "read", "message_id": message_id}
        status, raw, retry_after = await self._transport(url, _encode(payload).encode())
        if not 200 <= status < 300:
            raise build_error(status, raw, retry_after)
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict) or data.get("success") is not True:
            raise TransportError(
                f"Cloud API answered HTTP {status} to mark-as-read without success: true",
                maybe_sent=True,
                http_status=status,
            )

    async def _post(self, sender: str | None, payload: dict[str, Any] | str) -> SendResult:
        """POST `payload` (a dict, or its JSON text already written)."""
        url = self._url if sender is None else self.messages_url(sender)
        try:
            body = (payload if isinstance(payload, str) else _encode(payload)).encode()
        except UnicodeEncodeError:
            # A lone surrogate (stored before enrollment refused them): nothing can be
            # sent, and nothing was; a failure with a reason, not an unknown send.
            raise WhatsAppError(
                "the message holds a lone UTF-16 surrogate (a broken character in a "
                "field or name); nothing was sent",
                code=None,
                error_class="permanent",
            ) from None
        status, raw, retry_after = await self._transport(url, body)
        if 200 <= status < 300:
            return parse_send_response(status, raw)
        raise build_error(status, raw, retry_after)

    async def throughput_level(self, sender: str | None = None) -> str | None:
        """The number's throughput level (`GET /{phone_number_id}?fields=throughput`:
        "STANDARD", "HIGH", ...; None when the answer has none, or when an injected
        transport without a `reader` cannot GET). Raises WhatsAppError or TransportError
        like a send; see `dripline.whatsapp.throughput`."""
        url = f"{self._base}{sender or self.phone_number_id}?fields=throughput"
        reader = self._reader or getattr(self._transport, "get", None)
        if reader is None:
            return None  # an injected POST-only transport: no way to read
        status, raw, retry_after = await reader(url)
        if 200 <= status < 300:
            return parse_throughput(raw)
        raise build_error(status, raw, retry_after)

    async def close(self) -> None:
        """Close the HTTP session this client opened (an injected transport is left alone)."""
        if self._own_transport is not None:
            await self._own_transport.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
