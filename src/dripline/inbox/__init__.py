"""Inbox processing: webhook events applied to messages and conversations.

    plan.py        pure decisions: a status as a store update, what inbound messages do
    processor.py   the loop: batches of inbox rows, one store transaction each

The server only stores webhook bodies (`dripline.server.webhook`); this package decides
and applies what they mean, through the `Store` contract alone.
"""

from __future__ import annotations

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
