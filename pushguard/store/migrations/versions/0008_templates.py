"""templates: Jinja2 templates and their immutable versions per locale

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "templates",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("name", sa.String(length=128), nullable=False, unique=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("topic", sa.String(length=128), nullable=True),
        sa.Column("layout", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "template_versions",
        sa.Column("template_id", sa.String(length=40), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("locale", sa.String(length=35), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
    )
    op.create_index("ix_template_versions_locale", "template_versions",
                    ["template_id", "locale", "version"])


def downgrade() -> None:
    op.drop_table("template_versions")
    op.drop_table("templates")
