"""Evidence for unknown sends: when a webhook applied each status, and when the webhook
intake was up.

- `messages.webhook_at`: when a status webhook first moved the row (our clock), and
  `messages.reserved_at`: when it was last reserved for a send. A send whose outcome was
  lost is proven never accepted by statuses applied to sends reserved since its last
  attempt (see dripline.dispatcher.reconcile); `ix_messages_reserved_at` finds those.
- `intake`: one row per running webhook receiver (`dripline serve`), its start and its
  latest heartbeat. Evidence only counts while the intake was up throughout: after an
  outage of the receiver, Meta redelivers on its own schedule, and fresh webhooks prove
  nothing about older ones still queued at Meta.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("webhook_at", TS, nullable=True))
        batch.add_column(sa.Column("reserved_at", TS, nullable=True))
    op.create_index(op.f("ix_messages_reserved_at"), "messages", ["reserved_at"], unique=False)
    op.create_table(
        "intake",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("heartbeat_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_intake")),
    )
    op.create_index(op.f("ix_intake_heartbeat_at"), "intake", ["heartbeat_at"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(op.f("ix_intake_heartbeat_at"), table_name="intake")
    op.drop_table("intake")
    op.drop_index(op.f("ix_messages_reserved_at"), table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("reserved_at")
        batch.drop_column("webhook_at")
