"""campaigns: segments, campaigns, their recipients; messages know their campaign and template

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_CAMPAIGN = sa.text("campaign_id IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("campaign_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("template", sa.String(length=128), nullable=True))
        batch_op.create_index("ix_messages_campaign", ["campaign_id", "state", "updated_at"],
                              unique=False,
                              sqlite_where=_CAMPAIGN, postgresql_where=_CAMPAIGN)
    op.create_table(
        "segments",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("name", sa.String(length=128), nullable=False, unique=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("filter", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("name", sa.String(length=128), nullable=False, unique=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("paused_reason", sa.Text(), nullable=True),
        sa.Column("paused_at", sa.Float(), nullable=True),
        sa.Column("override", sa.Text(), nullable=True),
        sa.Column("preflight", sa.Text(), nullable=True),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
    )
    op.create_table(
        "campaign_recipients",
        sa.Column("campaign_id", sa.String(length=40), primary_key=True),
        sa.Column("contact_id", sa.String(length=40), primary_key=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.Float(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("message_id", sa.String(length=40), nullable=True),
        sa.Column("variant", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
    )
    op.create_index("ix_campaign_recipients_due", "campaign_recipients",
                    ["campaign_id", "state", "due_at", "seq"])
    op.create_index("ix_campaign_recipients_contact", "campaign_recipients", ["contact_id"])


def downgrade() -> None:
    op.drop_table("campaign_recipients")
    op.drop_table("campaigns")
    op.drop_table("segments")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_campaign", sqlite_where=_CAMPAIGN,
                            postgresql_where=_CAMPAIGN)
        batch_op.drop_column("template")
        batch_op.drop_column("campaign_id")
