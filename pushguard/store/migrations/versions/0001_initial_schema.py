"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('revoked_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_hash')
    )
    op.create_table('attempts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('message_id', sa.String(length=40), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('provider', sa.String(length=64), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('latency_ms', sa.Float(), nullable=True),
    sa.Column('status', sa.Integer(), nullable=True),
    sa.Column('provider_code', sa.String(length=128), nullable=True),
    sa.Column('cause', sa.String(length=32), nullable=True),
    sa.Column('maybe_sent', sa.Boolean(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('raw', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('attempts', schema=None) as batch_op:
        batch_op.create_index('ix_attempts_message', ['message_id'], unique=False)

    op.create_table('events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('message_id', sa.String(length=40), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('src', sa.String(length=16), nullable=True),
    sa.Column('dst', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('cause', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_message', ['message_id'], unique=False)

    op.create_table('messages',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('to_addr', sa.Text(), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('topic', sa.String(length=128), nullable=True),
    sa.Column('priority', sa.SmallInteger(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('accepted_state', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.Column('next_at', sa.Float(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.Column('lease_until', sa.Float(), nullable=True),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('lost_leases', sa.Integer(), nullable=False),
    sa.Column('idem_scope', sa.String(length=64), nullable=True),
    sa.Column('idem_key', sa.String(length=255), nullable=True),
    sa.Column('request_hash', sa.String(length=64), nullable=True),
    sa.Column('last_provider', sa.String(length=64), nullable=True),
    sa.Column('avoid_provider', sa.String(length=64), nullable=True),
    sa.Column('last_cause', sa.String(length=32), nullable=True),
    sa.Column('failure', sa.Text(), nullable=True),
    sa.Column('delivered_at', sa.Float(), nullable=True),
    sa.Column('provider_message_id', sa.String(length=255), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('idem_scope', 'idem_key', name='uq_messages_idem')
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index('ix_messages_cause', ['last_cause', 'updated_at'], unique=False)
        batch_op.create_index('ix_messages_created', ['created_at'], unique=False)
        batch_op.create_index('ix_messages_lease', ['state', 'lease_until'], unique=False)
        batch_op.create_index('ix_messages_ready', ['priority', 'next_at'], unique=False, sqlite_where=sa.text("state IN ('queued', 'retry_scheduled', 'deferred')"), postgresql_where=sa.text("state IN ('queued', 'retry_scheduled', 'deferred')"))

    op.create_table('suppressions',
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('address', sa.Text(), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('channel', 'address')
    )


def downgrade() -> None:
    op.drop_table('suppressions')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_ready', sqlite_where=sa.text("state IN ('queued', 'retry_scheduled', 'deferred')"), postgresql_where=sa.text("state IN ('queued', 'retry_scheduled', 'deferred')"))
        batch_op.drop_index('ix_messages_lease')
        batch_op.drop_index('ix_messages_created')
        batch_op.drop_index('ix_messages_cause')

    op.drop_table('messages')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_message')

    op.drop_table('events')
    with op.batch_alter_table('attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_attempts_message')

    op.drop_table('attempts')
    op.drop_table('api_keys')
