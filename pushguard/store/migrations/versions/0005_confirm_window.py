"""confirm window: fall back when a delivered message is not confirmed in time

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

WAITING = sa.text("confirm_by IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("confirm_within", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("confirm_by", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("confirmed_at", sa.Float(), nullable=True))
    op.create_index("ix_messages_confirm", "messages", ["confirm_by"],
                    sqlite_where=WAITING, postgresql_where=WAITING)


def downgrade() -> None:
    op.drop_index("ix_messages_confirm", table_name="messages")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("confirmed_at")
        batch_op.drop_column("confirm_by")
        batch_op.drop_column("confirm_within")
