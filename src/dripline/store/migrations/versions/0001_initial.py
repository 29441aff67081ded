"""Initial schema: conversations, messages, inbound_messages, inbox, workers.

Revision ID: 0001
Revises:
Create Date: 2026-11-28

Types are spelled out here (not imported from `dripline.store.schema`) so this revision
never changes when the code does; the migration test checks it equals the schema.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Aware timestamps; SQLite stores them as naive UTC text (see schema.UTCDateTime).
TS = sa.DateTime(timezone=True)
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# The due query's partial-index predicate; it must stay textually identical to the
# query's so both planners can prove the query implies it.
ACTIVE = sa.text("state IN ('pending', 'in_progress', 'awaiting_reply')")
UNPROCESSED = sa.text("processed_at IS NULL")


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "conversations",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("flow", sa.String(length=100), nullable=False),
        sa.Column("step", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "purpose", sa.String(length=16), server_default=sa.text("'question'"), nullable=False
        ),
        sa.Column(
            "state", sa.String(length=16), server_default=sa.text("'pending'"), nullable=False
        ),
        sa.Column("next_send_at", TS, nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", TS, nullable=True),
        sa.Column("last_inbound_at", TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("sender", sa.String(length=64), nullable=True),
        sa.Column("fields", sa.JSON(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
    )
    op.create_index(
        "ix_conversations_due",
        "conversations",
        ["next_send_at"],
        unique=False,
        postgresql_where=ACTIVE,
        sqlite_where=ACTIVE,
    )
    op.create_index("ix_conversations_flow", "conversations", ["flow"], unique=False)
    op.create_index("ix_conversations_state", "conversations", ["state"], unique=False)
    op.create_index(
        "uq_conversations_active_phone_flow",
        "conversations",
        ["phone", "flow"],
        unique=True,
        postgresql_where=ACTIVE,
        sqlite_where=ACTIVE,
    )
    op.create_table(
        "inbox",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("processed_at", TS, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox")),
    )
    op.create_index(
        "ix_inbox_unprocessed",
        "inbox",
        ["id"],
        unique=False,
        postgresql_where=UNPROCESSED,
        sqlite_where=UNPROCESSED,
    )
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("heartbeat_at", TS, nullable=False),
        sa.Column("rate_per_s", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("concurrency", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "policy", sa.String(length=32), server_default=sa.text("'static'"), nullable=False
        ),
        sa.Column("stats", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    op.create_table(
        "inbound_messages",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("wamid", sa.String(length=128), nullable=False),
        sa.Column("conversation_id", ID, nullable=True),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("received_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_inbound_messages_conversation_id_conversations"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_messages")),
        sa.UniqueConstraint("wamid", name=op.f("uq_inbound_messages_wamid")),
    )
    op.create_index(
        "ix_inbound_messages_conversation_id", "inbound_messages", ["conversation_id"], unique=False
    )
    op.create_table(
        "messages",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("conversation_id", ID, nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("sender", sa.String(length=64), nullable=True),
        sa.Column("wamid", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("error_title", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("due_at", TS, nullable=True),
        sa.Column("sent_at", TS, nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("status_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_messages_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint(
            "conversation_id", "step", "purpose", name="uq_messages_conv_step_purpose"
        ),
    )
    op.create_index("ix_messages_sent_at", "messages", ["sent_at"], unique=False)
    op.create_index("ix_messages_status", "messages", ["status"], unique=False)
    op.create_index("ix_messages_wamid", "messages", ["wamid"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_messages_wamid", table_name="messages")
    op.drop_index("ix_messages_status", table_name="messages")
    op.drop_index("ix_messages_sent_at", table_name="messages")
    op.drop_table("messages")
    op.drop_index("ix_inbound_messages_conversation_id", table_name="inbound_messages")
    op.drop_table("inbound_messages")
    op.drop_table("workers")
    op.drop_index(
        "ix_inbox_unprocessed",
        table_name="inbox",
        postgresql_where=UNPROCESSED,
        sqlite_where=UNPROCESSED,
    )
    op.drop_table("inbox")
    op.drop_index(
        "uq_conversations_active_phone_flow",
        table_name="conversations",
        postgresql_where=ACTIVE,
        sqlite_where=ACTIVE,
    )
    op.drop_index("ix_conversations_state", table_name="conversations")
    op.drop_index("ix_conversations_flow", table_name="conversations")
    op.drop_index(
        "ix_conversations_due",
        table_name="conversations",
        postgresql_where=ACTIVE,
        sqlite_where=ACTIVE,
    )
    op.drop_table("conversations")
