"""audience: contacts, addresses, topics, consent ledger, confirmations, caps, audit

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("contact_id", sa.String(length=40), nullable=True))
        batch_op.create_index("ix_messages_contact", ["contact_id"], unique=False)

    op.create_table(
        "contacts",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("external_id", sa.String(length=255), nullable=False, unique=True),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("locale", sa.String(length=35), nullable=True),
        sa.Column("quiet_hours", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "contact_addresses",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("contact_id", sa.String(length=40), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("platform", sa.String(length=16), nullable=True),
        sa.Column("environment", sa.String(length=16), nullable=True),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("last_seen", sa.Float(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.String(length=64), nullable=True),
        sa.Column("status_evidence", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("contact_id", "channel", "address", name="uq_contact_addresses"),
    )
    op.create_index("ix_contact_addresses_addr", "contact_addresses", ["channel", "address"])
    op.create_table(
        "topics",
        sa.Column("name", sa.String(length=128), primary_key=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("double_opt_in", sa.Boolean(), nullable=False),
        sa.Column("cap", sa.String(length=32), nullable=True),
        sa.Column("quiet_hours", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "consent_ledger",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("contact_id", sa.String(length=40), nullable=False),
        sa.Column("topic", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("proof", sa.Text(), nullable=True),
        sa.Column("policy_version", sa.String(length=64), nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=False),
    )
    op.create_index("ix_consent_ledger_contact", "consent_ledger", ["contact_id", "id"])
    op.create_table(
        "consent",
        sa.Column("contact_id", sa.String(length=40), primary_key=True),
        sa.Column("topic", sa.String(length=128), primary_key=True),
        sa.Column("channel", sa.String(length=16), primary_key=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("ledger_id", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "confirmations",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("contact_id", sa.String(length=40), nullable=False),
        sa.Column("topic", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("confirmed_at", sa.Float(), nullable=True),
        sa.Column("message_id", sa.String(length=40), nullable=True),
        sa.Column("policy_version", sa.String(length=64), nullable=True),
    )
    op.create_index("ix_confirmations_contact", "confirmations", ["contact_id"])
    op.create_table(
        "contact_sends",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("contact_id", sa.String(length=40), nullable=False),
        sa.Column("topic", sa.String(length=128), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("message_id", sa.String(length=40), nullable=False),
    )
    op.create_index("ix_contact_sends", "contact_sends", ["contact_id", "at"])
    op.create_table(
        "audit_log",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    op.create_index("ix_audit_log_subject", "audit_log", ["subject"])
    gen = op.create_table(
        "audience_generation",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(gen, [{"id": 1, "n": 0}])


def downgrade() -> None:
    for name in ("audience_generation", "audit_log", "contact_sends", "confirmations",
                 "consent", "consent_ledger", "topics", "contact_addresses", "contacts"):
        op.drop_table(name)
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_contact")
        batch_op.drop_column("contact_id")
