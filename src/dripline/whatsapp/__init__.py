"""The WhatsApp Cloud API: client, error classification and webhooks."""

from __future__ import annotations

from dripline.whatsapp.client import (
    AiohttpTransport,
    CloudApiClient,
    RawResponse,
    SendResult,
    Transport,
)
from dripline.whatsapp.errors import ERROR_TABLE, ErrorClass, ErrorInfo, classify, parse_retry_after
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
