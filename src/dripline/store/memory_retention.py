"""Retention in memory: the same rules as `store/sql/retention.py`, on a `View`."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from dripline.store.memory_tables import View
from dripline.store.report_types import ForgetResult, PruneResult

__all__ = ["forget", "prune"]


def prune(v: View, before: datetime) -> PruneResult:
    old = [r.id for r in v.inbox.values() if r.processed_at is not None and r.processed_at < before]
    for row_id in old:
        v.inbox.delete(row_id)
    cleared = 0
    for row in list(v.inbound.values()):
        if row.step is None and row.body is not None and row.received_at < before:
            v.inbound[row.id] = dataclasses.replace(row, body=None)
            cleared += 1
    return PruneResult(len(old), cleared)


def forget(v: View, phone: str) -> ForgetResult:
    ids = {c.id for c in v.conversations.values() if c.phone == phone}
    inbound = [r for r in v.inbound.values() if r.phone == phone or r.conversation_id in ids]
    for row in inbound:
        v.inbound.delete(row.id)
        v.inbound_wamids.delete(row.wamid)
    sent = [m for m in v.messages.values() if m.conversation_id in ids]
    for m in sent:
        v.messages.delete(m.id)
        v.message_keys.delete((m.conversation_id, m.step, m.purpose))
    for cid in sorted(ids):
        conv = v.conversations.get(cid)
        if conv is not None and v.active_keys.get((conv.phone, conv.flow)) == cid:
            v.active_keys.delete((conv.phone, conv.flow))
        v.conversations.delete(cid)
    needle = '"' + phone.lstrip("+") + '"'
    named = [r for r in v.inbox.values() if needle in r.body]
    done = [r.id for r in named if r.processed_at is not None]
    for row_id in done:
        v.inbox.delete(row_id)
    return ForgetResult(
        conversations=len(ids),
        messages=len(sent),
        inbound=len(inbound),
        inbox_rows=len(done),
        inbox_waiting=len(named) - len(done),
    )
