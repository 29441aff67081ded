"""Inbox processing: webhook events applied to messages and conversations.

    plan.py        pure decisions: a status as a store update, what inbound messages do
    recipients.py  pure: which WhatsApp IDs statuses teach (a send's answer was lost)
    processor.py   the loop: batches of inbox rows, one store transaction each

The server only stores webhook bodies (`dripline.server.webhook`); this package decides
and applies what they mean, through the `Store` contract alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dripline.inbox.plan import (
        InboundEvent,
        InboundPlan,
        inbound_event,
        plan_inbound,
        status_update,
    )
    from dripline.inbox.processor import InboxProcessor, PassStats

__all__ = [
    "InboundEvent",
    "InboundPlan",
    "InboxProcessor",
    "PassStats",
    "inbound_event",
    "plan_inbound",
    "status_update",
]

_PROCESSOR = ("InboxProcessor", "PassStats")


def __getattr__(name: str) -> Any:
    # Loaded when asked (PEP 562): the dispatcher imports `inbox.intake` alone, and
    # must not pay for the webhook parser the processor needs at its start-up.
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    home = "processor" if name in _PROCESSOR else "plan"
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
