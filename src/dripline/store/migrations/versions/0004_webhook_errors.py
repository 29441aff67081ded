"""Value-level webhook errors: `entry[].changes[].value.errors[]`, problems Meta reports
for a business number or account that no message carries. The inbox processor keeps
each one (code, number, account, Meta's title and details, the inbox row it came in);
`dripline status` and `dripline_webhook_errors_total{code}` read them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "webhook_errors",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("code", sa.Integer(), nullable=False),
        sa.Column("phone_number_id", sa.String(length=64), nullable=True),
        sa.Column("account_id", sa.String(length=64), nullable=True),
        sa.Column("title", sa.String(length=255), nullable=True),
        sa.Column("details", sa.Text(), nullable=True),
        sa.Column("inbox_id", ID, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_errors")),
    )
    op.create_index(
        op.f("ix_webhook_errors_received_at"), "webhook_errors", ["received_at"], unique=False
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(op.f("ix_webhook_errors_received_at"), table_name="webhook_errors")
    op.drop_table("webhook_errors")
