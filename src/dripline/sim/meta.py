"""Webhook bodies and API answers in the shapes Meta documents (see
/docs/reference and the webhook corpus in tests/corpus/webhooks), for the simulator.

Only shapes: what is sent when is the simulated world's business (`api.py`).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["error_body", "inbound_value", "send_answer", "status_value", "webhook_body"]

_encode = json.JSONEncoder(separators=(",", ":")).encode

WABA_ID = "100000000000000"
DISPLAY_NUMBER = "15550000000"


def send_answer(to: str, wa_id: str, wamid: str) -> bytes:
    """`POST /messages` 200: the message was accepted."""
    return _encode(
        {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": wa_id}],
            "messages": [{"id": wamid}],
        }
    ).encode()


def error_body(code: int, message: str, details: str = "") -> bytes:
    return _encode(
        {
            "error": {
                "message": f"(#{code}) {message}",
                "type": "OAuthException",
                "code": code,
                "error_data": {"messaging_product": "whatsapp", "details": details or message},
                "fbtrace_id": "Asim",
            }
        }
    ).encode()


def _metadata(phone_number_id: str) -> dict[str, str]:
    return {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": phone_number_id}


def status_value(
    phone_number_id: str,
    *,
    wamid: str,
    status: str,
    timestamp: int,
    recipient_id: str,
    callback_data: str | None,
    error: tuple[int, str] | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": str(timestamp),
        "recipient_id": recipient_id,
    }
    if callback_data is not None:
        item["biz_opaque_callback_data"] = callback_data
    if error is not None:
        code, title = error
        item["errors"] = [
            {"code": code, "title": title, "message": title, "error_data": {"details": title}}
        ]
    return {
        "messaging_product": "whatsapp",
        "metadata": _metadata(phone_number_id),
        "statuses": [item],
    }


def inbound_value(
    phone_number_id: str,
    *,
    wamid: str,
    wa_id: str,
    timestamp: int,
    text: str,
    context_id: str | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "from": wa_id,
        "id": wamid,
        "timestamp": str(timestamp),
        "type": "text",
        "text": {"body": text},
    }
    if context_id is not None:
        message["context"] = {"from": DISPLAY_NUMBER, "id": context_id}
    return {
        "messaging_product": "whatsapp",
        "metadata": _metadata(phone_number_id),
        "contacts": [{"profile": {"name": "Sim User"}, "wa_id": wa_id}],
        "messages": [message],
    }


def webhook_body(values: list[dict[str, Any]]) -> str:
    """One delivery: several changes of one account, as Meta batches them."""
    return _encode(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": WABA_ID,
                    "changes": [{"value": v, "field": "messages"} for v in values],
                }
            ],
        }
    )
