"""Tables, in SQLAlchemy Core. Times are UNIX seconds (floats) so SQLite and PostgreSQL
compare them the same way and the claim query stays index-only.

Alembic migrations under ``migrations/`` create exactly this; a test keeps the two equal.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()

messages = Table(
    "messages",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("channel", String(16), nullable=False),
    Column("to_addr", Text, nullable=False),
    Column("content", Text, nullable=False),
    Column("topic", String(128)),
    Column("priority", SmallInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("accepted_state", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("next_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("lease_until", Float),
    Column("lease_owner", String(64)),
    Column("attempts", Integer, nullable=False, default=0),
    #: leases that expired under this message: a worker died while holding it.
    Column("lost_leases", Integer, nullable=False, default=0),
    Column("idem_scope", String(64)),
    Column("idem_key", String(255)),
    Column("request_hash", String(64)),
    Column("last_provider", String(64)),
    Column("avoid_provider", String(64)),
    Column("last_cause", String(32)),
    Column("failure", Text),
    Column("delivered_at", Float),
    Column("provider_message_id", String(255)),
    Column("fallback", Text),
    Column("parent_id", String(40)),
    UniqueConstraint("idem_scope", "idem_key", name="uq_messages_idem"),
)
#: states whose messages wait for a worker; the partial index below holds only these rows, so
#: a claim is a short range scan per priority however large the history grows.
READY_STATES = ("queued", "retry_scheduled", "deferred")
#: Literal SQL on purpose: a planner can only use a partial index when the query's condition
#: matches the index's, and ``state IN (?, ?, ?)`` with bound values never does.
READY = text("state IN ('queued', 'retry_scheduled', 'deferred')")
_ready = READY
Index(
    "ix_messages_ready",
    messages.c.priority,
    messages.c.next_at,
    sqlite_where=_ready,
    postgresql_where=_ready,
)
#: only leased rows, for the reaper: rows leave it when their outcome is recorded.
SENDING = text("state = 'sending'")
Index("ix_messages_lease", messages.c.lease_until, sqlite_where=SENDING,
      postgresql_where=SENDING)
# created_at, not updated_at: an index on a column every state change rewrites costs ~10 µs
# per message on the hot path, and listings order by creation anyway.
Index("ix_messages_cause", messages.c.last_cause, messages.c.created_at)
Index("ix_messages_created", messages.c.created_at)
Index("ix_messages_parent", messages.c.parent_id)

attempts = Table(
    "attempts",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("message_id", String(40), nullable=False),
    Column("number", Integer, nullable=False),
    Column("at", Float, nullable=False),
    Column("provider", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("latency_ms", Float),
    Column("status", Integer),
    Column("provider_code", String(128)),
    Column("cause", String(32)),
    Column("maybe_sent", Boolean, nullable=False, default=False),
    Column("detail", Text),
    Column("raw", Text),
)
Index("ix_attempts_message", attempts.c.message_id)

events = Table(
    "events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("message_id", String(40), nullable=False),
    Column("at", Float, nullable=False),
    Column("src", String(16)),
    Column("dst", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("cause", String(32)),
)
Index("ix_events_message", events.c.message_id)

suppressions = Table(
    "suppressions",
    metadata,
    Column("channel", String(16), primary_key=True),
    Column("address", Text, primary_key=True),
    Column("reason", String(32), nullable=False),
    Column("source", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
)
