"""The in-memory store's tables: committed rows, and a layered view to change them.

Rows are the store's frozen record types, kept in dicts by id. Python dicts iterate in
insertion order and ids are assigned in insertion order, so every scan is in id order,
on every run. Nothing here iterates a set.

A change happens in a `View` over the committed `Tables`: writes go to a layer on top of
each dict (reads see them, nobody else does) and `commit()` applies them all at once.
Dropping the view applies nothing, which is what makes every method all-or-nothing,
and a webhook transaction invisible to other readers until it commits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from dripline.errors import StoreError
from dripline.store.report_types import NewWebhookError, StoreSnapshot
from dripline.store.types import (
    ACTIVE_STATES,
    Conversation,
    Inbound,
    InboxEntry,
    Message,
    Suppression,
    WorkerInfo,
)

__all__ = ["Tables", "View", "utc", "utc_or_none"]

K = TypeVar("K")
V = TypeVar("V")


def utc(value: datetime) -> datetime:
    """An aware datetime in UTC (as the SQL backends return them); naive ones refused."""
    if value.tzinfo is None:
        raise StoreError("naive datetime given to the store; use aware UTC datetimes")
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


class _Gone:
    """A deleted row in a layer."""


_GONE = _Gone()


class _Layer(Generic[K, V]):
    """A dict seen through uncommitted changes."""

    __slots__ = ("base", "changes")

    def __init__(self, base: dict[K, V]) -> None:
        self.base = base
        self.changes: dict[K, V | _Gone] = {}

    def get(self, key: K) -> V | None:
        if key in self.changes:
            value = self.changes[key]
            return None if isinstance(value, _Gone) else value
        return self.base.get(key)

    def __contains__(self, key: K) -> bool:
        return self.get(key) is not None

    def __setitem__(self, key: K, value: V) -> None:
        self.changes[key] = value

    def delete(self, key: K) -> None:
        self.changes[key] = _GONE

    def values(self) -> Iterator[V]:
        """In key insertion order: changed rows keep their place, new ones come last."""
        return (value for _, value in self.items())

    def items(self) -> Iterator[tuple[K, V]]:
        """(key, value) in the order of `values()`."""
        changes = self.changes
        for key, value in self.base.items():
            if key in changes:
                new = changes[key]
                if not isinstance(new, _Gone):
                    yield key, new
            else:
                yield key, value
        for key, new in changes.items():
            if key not in self.base and not isinstance(new, _Gone):
                yield key, new

    def commit(self) -> None:
        for key, value in self.changes.items():
            if isinstance(value, _Gone):
                self.base.pop(key, None)
            else:
                self.base[key] = value
        self.changes = {}


@dataclass
class Tables:
    """The committed state of one in-memory database."""

    conversations: dict[int, Conversation] = field(default_factory=dict)
    messages: dict[int, Message] = field(default_factory=dict)
    inbound: dict[int, Inbound] = field(default_factory=dict)
    inbox: dict[int, InboxEntry] = field(default_factory=dict)
    workers: dict[str, WorkerInfo] = field(default_factory=dict)
    intake: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)
    suppressions: dict[tuple[str, str], Suppression] = field(default_factory=dict)
    # Value-level webhook errors by id: (when recorded, the error).
    webhook_errors: dict[int, tuple[datetime, NewWebhookError]] = field(default_factory=dict)
    # Unique keys, as the schema's indexes enforce them.
    active_keys: dict[tuple[str, str], int] = field(default_factory=dict)  # (phone, flow)
    message_keys: dict[tuple[int, int, str], int] = field(default_factory=dict)
    inbound_wamids: dict[str, int] = field(default_factory=dict)
    # The last id given out per table (autoincrement).
    last_ids: dict[str, int] = field(default_factory=dict)

    def snapshot(self) -> StoreSnapshot:
        return StoreSnapshot(
            conversations=tuple(self.conversations.values()),
            messages=tuple(self.messages.values()),
            inbound=tuple(self.inbound.values()),
            inbox=tuple(self.inbox.values()),
            workers=tuple(sorted(self.workers.values(), key=lambda w: w.id)),
            suppressions=tuple(self.suppressions[k] for k in sorted(self.suppressions)),
        )


class View:
    """The tables as one transaction sees them; `commit()` applies its changes."""

    def __init__(self, tables: Tables) -> None:
        self._tables = tables
        self.conversations = _Layer(tables.conversations)
        self.messages = _Layer(tables.messages)
        self.inbound = _Layer(tables.inbound)
        self.inbox = _Layer(tables.inbox)
        self.workers = _Layer(tables.workers)
        self.intake = _Layer(tables.intake)
        self.suppressions = _Layer(tables.suppressions)
        self.webhook_errors = _Layer(tables.webhook_errors)
        self.active_keys = _Layer(tables.active_keys)
        self.message_keys = _Layer(tables.message_keys)
        self.inbound_wamids = _Layer(tables.inbound_wamids)
        self._last_ids = dict(tables.last_ids)

    def commit(self) -> None:
        layers: tuple[_Layer[Any, Any], ...] = (
            self.conversations,
            self.messages,
            self.inbound,
            self.inbox,
            self.workers,
            self.intake,
            self.suppressions,
            self.webhook_errors,
            self.active_keys,
            self.message_keys,
            self.inbound_wamids,
        )
        for layer in layers:
            layer.commit()
        self._tables.last_ids = dict(self._last_ids)

    def next_id(self, table: str) -> int:
        value = self._last_ids.get(table, 0) + 1
        self._last_ids[table] = value
        return value

    # conversations -----------------------------------------------------------
    def put_conversation(self, new: Conversation) -> None:
        """Insert or replace a row, keeping one active conversation per (phone, flow)."""
        old = self.conversations.get(new.id)
        if old is not None and old.state in ACTIVE_STATES:
            self.active_keys.delete((old.phone, old.flow))
        if new.state in ACTIVE_STATES:
            key = (new.phone, new.flow)
            holder = self.active_keys.get(key)
            if holder is not None and holder != new.id:
                raise StoreError(
                    "database memory: UNIQUE constraint failed: "
                    f"uq_conversations_active_phone_flow ({new.phone}, {new.flow})"
                )
            self.active_keys[key] = new.id
        self.conversations[new.id] = new

    def change_conversation(self, row: Conversation, **values: Any) -> Conversation:
        new = dataclasses.replace(row, **values)
        self.put_conversation(new)
        return new

    # messages ------------------------------------------------------------------
    def put_message(self, new: Message) -> None:
        self.message_keys[(new.conversation_id, new.step, new.purpose)] = new.id
        self.messages[new.id] = new

    def change_message(self, row: Message, **values: Any) -> Message:
        new = dataclasses.replace(row, **values)
        self.put_message(new)
        return new

    # inbound -------------------------------------------------------------------
    def add_inbound(self, row: Inbound) -> None:
        self.inbound_wamids[row.wamid] = row.id
        self.inbound[row.id] = row
