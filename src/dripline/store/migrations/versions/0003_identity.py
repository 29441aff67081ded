"""Recipient identity and the suppression list.

- `conversations.wa_id`: the user's WhatsApp ID as the send response reported it
  (`contacts[0].wa_id`); Meta warns it may differ from the number sent (Brazil's ninth
  digit, Mexico's 521). Inbound messages come `from` it, so replies match it first
  (`ix_conversations_wa_id`), then the number's known variants (dripline.phones), in any
  state (`ix_conversations_phone`: the lookup of a sender's newest conversation scanned
  the table before).
- `suppressions`: numbers that opted out (STOP, or 131050), per business number;
  enrollment refuses them unless the caller states a new opt-in.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("wa_id", sa.String(length=20), nullable=True))
    op.create_index(op.f("ix_conversations_wa_id"), "conversations", ["wa_id"], unique=False)
    op.create_index(op.f("ix_conversations_phone"), "conversations", ["phone"], unique=False)
    op.create_table(
        "suppressions",
        sa.Column("sender", sa.String(length=64), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("sender", "phone", name=op.f("pk_suppressions")),
    )
    op.create_index(op.f("ix_suppressions_phone"), "suppressions", ["phone"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(op.f("ix_suppressions_phone"), table_name="suppressions")
    op.drop_table("suppressions")
    op.drop_index(op.f("ix_conversations_phone"), table_name="conversations")
    op.drop_index(op.f("ix_conversations_wa_id"), table_name="conversations")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("wa_id")
