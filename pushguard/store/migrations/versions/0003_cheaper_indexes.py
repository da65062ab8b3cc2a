"""cheaper indexes on the hot path: cause by creation time, leases only while sending

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SENDING = sa.text("state = 'sending'")


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_cause")
        batch_op.drop_index("ix_messages_lease")
        batch_op.create_index("ix_messages_cause", ["last_cause", "created_at"], unique=False)
        batch_op.create_index("ix_messages_lease", ["lease_until"], unique=False,
                              sqlite_where=SENDING, postgresql_where=SENDING)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_lease")
        batch_op.drop_index("ix_messages_cause")
        batch_op.create_index("ix_messages_lease", ["state", "lease_until"], unique=False)
        batch_op.create_index("ix_messages_cause", ["last_cause", "updated_at"], unique=False)
