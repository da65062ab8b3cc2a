"""alerts and incidents

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def _serial() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("scope", sa.String(length=160), nullable=False),
        sa.Column("open_key", sa.String(length=200), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("peak", sa.String(length=16), nullable=False),
        sa.Column("notified", sa.String(length=16), nullable=True),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("sample", sa.Integer(), nullable=False),
        sa.Column("baseline", sa.Float(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("opened_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("escalated_at", sa.Float(), nullable=True),
        sa.Column("clear_since", sa.Float(), nullable=True),
        sa.Column("resolved_at", sa.Float(), nullable=True),
        sa.Column("incident_id", sa.String(length=40), nullable=True),
        sa.UniqueConstraint("open_key", name="uq_alerts_open"),
    )
    op.create_index("ix_alerts_opened", "alerts", ["opened_at"])
    op.create_table(
        "incidents",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("scope", sa.String(length=160), nullable=False),
        sa.Column("open_key", sa.String(length=160), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("opened_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("window_start", sa.Float(), nullable=False),
        sa.Column("closed_at", sa.Float(), nullable=True),
        sa.Column("closed_by", sa.String(length=64), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.UniqueConstraint("open_key", name="uq_incidents_open"),
    )
    op.create_index("ix_incidents_opened", "incidents", ["opened_at"])
    op.create_table(
        "incident_events",
        sa.Column("id", _serial(), primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.String(length=40), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
    )
    op.create_index("ix_incident_events_incident", "incident_events", ["incident_id", "id"])
    op.create_table(
        "provider_holds",
        sa.Column("provider", sa.String(length=64), primary_key=True),
        sa.Column("held_until", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "circuit_events",
        sa.Column("id", _serial(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("breaker", sa.String(length=160), nullable=False),
        sa.Column("src", sa.String(length=16), nullable=False),
        sa.Column("dst", sa.String(length=16), nullable=False),
    )
    op.create_index("ix_circuit_events_at", "circuit_events", ["at"])
    op.create_index("ix_suppressions_created", "suppressions", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_suppressions_created", table_name="suppressions")
    op.drop_table("circuit_events")
    op.drop_table("provider_holds")
    op.drop_table("incident_events")
    op.drop_table("incidents")
    op.drop_table("alerts")
