"""The store's row types mirror the tables: every column, in table order (the SQL
backends build rows positionally, so a column added to one and not the other, or in
another order, would shift every value after it)."""

from __future__ import annotations

from dataclasses import fields

import pytest

from dripline.flows import ConversationLike
from dripline.store import Conversation, Inbound, InboxEntry, Message
from dripline.store.schema import conversations, inbound_messages, inbox, messages


@pytest.mark.parametrize(
    ("row_type", "table"),
    [
        (Conversation, conversations),
        (Message, messages),
        (Inbound, inbound_messages),
        (InboxEntry, inbox),
    ],
)
def test_row_types_have_every_column_in_table_order(row_type: type, table: object) -> None:
    assert [f.name for f in fields(row_type)] == [c.name for c in table.c]  # type: ignore[attr-defined]


def test_a_conversation_is_what_flows_read() -> None:
    names = {name for name in dir(ConversationLike) if not name.startswith("_")}
    assert names <= {f.name for f in fields(Conversation)}
