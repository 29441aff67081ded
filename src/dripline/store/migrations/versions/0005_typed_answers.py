"""Typed answers on `inbound_messages`: what a reply means for the question it answers.

A reply is kept whatever it says; these columns say how it was read (issue 15):
`answer_kind` "option" (a button, list row or typed text matched to an option id: in
`answer_option`), "number" (in `answer_number`) or "text" (the body is the answer);
`valid` false for a reply that did not answer its question (re-asked), NULL for a
message that answers no question. Rows older than 0005 have NULL everywhere: their
body is the answer, as before.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    # batch_alter_table: SQLite cannot drop columns in place on older versions; adding is
    # in place on both, and the batch keeps upgrade and downgrade symmetrical.
    with op.batch_alter_table("inbound_messages") as batch:
        batch.add_column(sa.Column("answer_kind", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("answer_option", sa.String(length=256), nullable=True))
        batch.add_column(sa.Column("answer_number", sa.Float(), nullable=True))
        batch.add_column(sa.Column("valid", sa.Boolean(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("inbound_messages") as batch:
        batch.drop_column("valid")
        batch.drop_column("answer_number")
        batch.drop_column("answer_option")
        batch.drop_column("answer_kind")
