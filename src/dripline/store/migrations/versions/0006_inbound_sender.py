"""Several sender numbers: `inbound_messages.sender`, the business phone number id a
user's message was sent to (`metadata.phone_number_id`; NULL: the default number, and
every row from before this migration, when there was only one).

The 24-hour customer service window is per (user, business number): a conversation
enrolled on one number must not start with a window the user opened by writing to
another. Enrollment reads the user's last message to the conversation's own number.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    # A nullable column without a default: no table rewrite on either backend.
    with op.batch_alter_table("inbound_messages") as batch:
        batch.add_column(sa.Column("sender", sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("inbound_messages") as batch:
        batch.drop_column("sender")
