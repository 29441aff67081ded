"""The WhatsApp Cloud API: client, error classification and webhooks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dripline.whatsapp.client import (
        AiohttpTransport,
        CloudApiClient,
        RawResponse,
        SendResult,
        Transport,
    )
    from dripline.whatsapp.errors import (
        ERROR_TABLE,
        ErrorClass,
        ErrorInfo,
        classify,
        parse_retry_after,
    )
    from dripline.whatsapp.http1 import Http1Transport
    from dripline.whatsapp.proxy import Proxy, ProxyConfig
    from dripline.whatsapp.webhooks import (
        InboundMessage,
        StatusEvent,
        WebhookBatch,
        parse_webhook,
        sign,
        verify_signature,
    )

__all__ = [
    "ERROR_TABLE",
    "AiohttpTransport",
    "CloudApiClient",
    "ErrorClass",
    "ErrorInfo",
    "Http1Transport",
    "InboundMessage",
    "Proxy",
    "ProxyConfig",
    "RawResponse",
    "SendResult",
    "StatusEvent",
    "Transport",
    "WebhookBatch",
    "classify",
    "parse_retry_after",
    "parse_webhook",
    "sign",
    "verify_signature",
]

# Where each name lives: importing the package loads none of them until asked, so the
# dispatcher's start-up does not pay for the webhook parser or aiohttp (PEP 562).
_HOMES = {
    "AiohttpTransport": "aiohttp_transport",
    "CloudApiClient": "client",
    "RawResponse": "client",
    "SendResult": "client",
    "Transport": "client",
    "ERROR_TABLE": "errors",
    "ErrorClass": "errors",
    "ErrorInfo": "errors",
    "classify": "errors",
    "parse_retry_after": "errors",
    "Http1Transport": "http1",
    "Proxy": "proxy",
    "ProxyConfig": "proxy",
    "InboundMessage": "webhooks",
    "StatusEvent": "webhooks",
    "WebhookBatch": "webhooks",
    "parse_webhook": "webhooks",
    "sign": "webhooks",
    "verify_signature": "webhooks",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
