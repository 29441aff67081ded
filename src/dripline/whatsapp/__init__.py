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
    "InboundMessage",
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
