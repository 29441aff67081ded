"""Table definitions: the single source of the schema (Alembic migrations must equal it)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator

from dripline.store.types import ACTIVE_STATES, CONVERSATION_STATES, MESSAGE_STATUSES, PURPOSES

__all__ = [
    "ACTIVE_SQL",
    "ACTIVE_STATES",
    "CONVERSATION_STATES",
    "MESSAGE_STATUSES",
    "PURPOSES",
    "UTCDateTime",
    "conversations",
    "inbound_messages",
    "inbox",
    "intake",
    "messages",
    "metadata",
    "sqlite_timestamp",
    "suppressions",
    "webhook_errors",
    "workers",
]

# Literal, never bound: a planner can only prove a query implies a partial index
# predicate when the query spells the same constants (bound parameters defeat it).
ACTIVE_SQL = "state IN ('pending', 'in_progress', 'awaiting_reply')"

# The tables' metadata: read as `metadata` (below), which completes it first.
_metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only aliases INTEGER PRIMARY KEY to the rowid (and autoincrements it).
Id = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on both backends.

    PostgreSQL stores timestamptz; SQLite stores naive UTC text, which sorts and compares
    correctly because every value has the same format.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    # SQLite: one step instead of two. The default chain (process_bind_param, then the
    # SQLite DATETIME type's %-formatting) was 11% of the dispatcher's CPU samples at
    # 1,000 sends/s; the text is the same, 'YYYY-MM-DD HH:MM:SS.ffffff'.
    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        return sqlite_timestamp

    def result_processor(self, dialect: Dialect, coltype: Any) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return _sqlite_datetime
        if dialect.driver == "asyncpg":
            return _aware_utc  # asyncpg returns timestamptz as aware UTC already
        return super().result_processor(dialect, coltype)


def sqlite_timestamp(value: datetime | None) -> str | None:
    """An aware datetime as SQLite stores it: naive UTC text with microseconds."""
    global _last_timestamp
    if value is None:
        return None
    last = _last_timestamp
    if value is last[0]:
        return last[1]
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the store; use aware UTC datetimes")
    utc = value if value.tzinfo is UTC else value.astimezone(UTC)
    text_ = utc.replace(tzinfo=None).isoformat(" ", "microseconds")
    _last_timestamp = (value, text_)
    return text_


# A batch write passes the same `now` object for several columns of every row: the last
# conversion is kept (by identity; datetimes are immutable) so it is formatted once.
_last_timestamp: tuple[datetime | None, str | None] = (None, None)


def _aware_utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is UTC:
        return value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sqlite_datetime(value: str | datetime | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        parsed = _parsed.get(value)
        if parsed is not None:
            return parsed
    when = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    result = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    if isinstance(value, str):
        if len(_parsed) >= _PARSED_MAX:
            _parsed.clear()
        _parsed[value] = result
    return result


# The rows of one read repeat timestamps (a claim's rows share their lease expiry, bulk
# enrollments their created_at and due time), and `replace(tzinfo=...)` costs more than
# a dict lookup: recent texts map to their (immutable) datetimes. Measured on claims of
# 1,000 rows: about 2 us less CPU per row.
_PARSED_MAX = 4_096
_parsed: dict[str, datetime] = {}


conversations = Table(
    "conversations",
    _metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("phone", String(20), nullable=False),
    Column("flow", String(100), nullable=False),
    Column("step", Integer, nullable=False, server_default=text("0")),
    Column("purpose", String(16), nullable=False, server_default=text("'question'")),
    Column("state", String(16), nullable=False, server_default=text("'pending'")),
    Column("next_send_at", UTCDateTime, nullable=True),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("last_inbound_at", UTCDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("name", String(200), nullable=True),
    Column("timezone", String(64), nullable=True),
    Column("sender", String(64), nullable=True),
    # No fields is SQL NULL, not JSON 'null': a claim then decodes no JSON for the
    # (common) rows without fields. Reads treat both alike.
    Column("fields", JSON(none_as_null=True), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # The user's WhatsApp ID as the send response reported it (`contacts[0].wa_id`, digits
    # only; migration 0003). Meta warns it may differ from `phone` (Brazil's ninth digit,
    # Mexico's 521): inbound messages come `from` it, so replies are matched by it first.
    # NULL until a send was accepted.
    Column("wa_id", String(20), nullable=True),
    # Two partial indexes: `_add_partial_indexes`.
    Index("ix_conversations_state", "state"),
    Index("ix_conversations_flow", "flow"),
    # Replies find their user's conversations by WhatsApp ID, else by the number and its
    # variants, in any state (the newest keeps a message that answers nothing): 0003.
    Index("ix_conversations_wa_id", "wa_id"),
    Index("ix_conversations_phone", "phone"),
)

messages = Table(
    "messages",
    _metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column(
        "conversation_id",
        Id,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("step", Integer, nullable=False),
    Column("purpose", String(16), nullable=False),
    Column("sender", String(64), nullable=True),
    Column("wamid", String(128), nullable=True),
    Column("status", String(16), nullable=False),
    Column("error_code", Integer, nullable=True),
    Column("error_title", Text, nullable=True),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("due_at", UTCDateTime, nullable=True),
    Column("sent_at", UTCDateTime, nullable=True),
    Column("latency_ms", Float, nullable=True),
    Column("status_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # When a status webhook first moved this row, and when the row was last reserved for
    # a send: the evidence about unknown sends (migration 0002; see
    # dripline.dispatcher.reconcile). NULL reserved_at (rows older than 0002): created_at.
    Column("webhook_at", UTCDateTime, nullable=True),
    Column("reserved_at", UTCDateTime, nullable=True),
    # The idempotency key: one message per (conversation, step, purpose), ever.
    UniqueConstraint("conversation_id", "step", "purpose", name="uq_messages_conv_step_purpose"),
    Index("ix_messages_wamid", "wamid"),
    Index("ix_messages_sent_at", "sent_at"),
    Index("ix_messages_status", "status"),
    # Finds the sends attempted since an unknown one was (set at insert, changed only by
    # the rare resend: cheap to keep).
    Index("ix_messages_reserved_at", "reserved_at"),
)

# Answers and other inbound messages, one row per WhatsApp message id.
inbound_messages = Table(
    "inbound_messages",
    _metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("wamid", String(128), nullable=False, unique=True),
    Column(
        "conversation_id",
        Id,
        ForeignKey("conversations.id", ondelete="SET NULL"),
        nullable=True,
    ),
    Column("phone", String(20), nullable=False),
    Column("step", Integer, nullable=True),
    Column("kind", String(16), nullable=False),
    Column("body", Text, nullable=True),
    Column("received_at", UTCDateTime, nullable=False),
    # How the reply answers its question (migration 0005): `answer_kind` "option" (id in
    # `answer_option`), "number" (`answer_number`) or "text" (the body); `valid` false
    # for a reply that did not answer (re-asked), NULL for one that answers no question.
    Column("answer_kind", String(16), nullable=True),
    Column("answer_option", String(256), nullable=True),
    Column("answer_number", Float, nullable=True),
    Column("valid", Boolean, nullable=True),
    # The business phone number id it was sent to; NULL: the default number (migration
    # 0006). The 24-hour window is per (user, business number): a new conversation on a
    # number starts with the user's last message to that number only.
    Column("sender", String(64), nullable=True),
    Index("ix_inbound_messages_conversation_id", "conversation_id"),
)

# Raw webhook deliveries, stored before the 200 so a crash after it loses nothing.
inbox = Table(
    "inbox",
    _metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("received_at", UTCDateTime, nullable=False),
    Column("body", Text, nullable=False),
    Column("processed_at", UTCDateTime, nullable=True),
    Column("error", Text, nullable=True),
    # A partial index: `_add_partial_indexes`.
)

# Numbers that opted out (a STOP, or Meta's 131050 "user stopped marketing messages"),
# per business number (`sender`: a phone number id; "" when it was not known). Enrolling
# a suppressed number is refused unless the caller states a new opt-in, which deletes
# the row (migration 0003).
suppressions = Table(
    "suppressions",
    _metadata,
    Column("sender", String(64), primary_key=True),
    Column("phone", String(20), primary_key=True),
    Column("reason", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_suppressions_phone", "phone"),
)

# Webhook receivers (`dripline serve`): one row per process run, its start and its
# latest heartbeat. The union of [started_at, heartbeat_at] is when webhooks could be
# received; evidence about unknown sends only counts inside it.
intake = Table(
    "intake",
    _metadata,
    Column("id", String(64), primary_key=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Index("ix_intake_heartbeat_at", "heartbeat_at"),
)

# Value-level webhook errors (`entry[].changes[].value.errors[]`): problems Meta reports
# for a number or account, tied to no message. Kept for `dripline status` and metrics.
webhook_errors = Table(
    "webhook_errors",
    _metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("received_at", UTCDateTime, nullable=False),
    Column("code", Integer, nullable=False),
    Column("phone_number_id", String(64), nullable=True),
    Column("account_id", String(64), nullable=True),
    Column("title", String(255), nullable=True),
    Column("details", Text, nullable=True),
    Column("inbox_id", Id, nullable=True),
    Index("ix_webhook_errors_received_at", "received_at"),
)

# Live dispatchers: a heartbeat row each, so workers can split the rate limit and the
# operator can see who is sending from any machine.
workers = Table(
    "workers",
    _metadata,
    Column("id", String(64), primary_key=True),
    Column("hostname", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("rate_per_s", Float, nullable=False, server_default=text("0")),
    Column("concurrency", Integer, nullable=False, server_default=text("0")),
    Column("policy", String(32), nullable=False, server_default=text("'static'")),
    Column("stats", JSON, nullable=True),
)


def _add_partial_indexes() -> None:
    """The partial indexes, onto their tables.

    Made when the metadata is first asked for (DDL, Alembic's comparison), not at
    import: an index's `postgresql_where` and `sqlite_where` make SQLAlchemy load both
    dialects, PostgreSQL's with all its drivers' modules (about 30 ms of CPU, 4% of
    `dripline run --once`'s start-up on SQLite), and no query needs them.
    """
    # The due query reads `WHERE state IN (active) AND next_send_at <= now ORDER BY
    # next_send_at LIMIT n`. A partial index holds only active conversations, so the
    # millions that completed, failed or opted out are never scanned or even indexed,
    # and the claim walks the index in due order and stops after n rows.
    Index(
        "ix_conversations_due",
        conversations.c.next_send_at,
        postgresql_where=text(ACTIVE_SQL),
        sqlite_where=text(ACTIVE_SQL),
    )
    # One active conversation per (phone, flow); finished ones may be enrolled again.
    Index(
        "uq_conversations_active_phone_flow",
        conversations.c.phone,
        conversations.c.flow,
        unique=True,
        postgresql_where=text(ACTIVE_SQL),
        sqlite_where=text(ACTIVE_SQL),
    )
    Index(
        "ix_inbox_unprocessed",
        inbox.c.id,
        postgresql_where=text("processed_at IS NULL"),
        sqlite_where=text("processed_at IS NULL"),
    )


metadata: MetaData  # every table and index: `__getattr__`


def __getattr__(name: str) -> Any:
    if name == "metadata":
        _add_partial_indexes()
        globals()["metadata"] = _metadata
        return _metadata
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
