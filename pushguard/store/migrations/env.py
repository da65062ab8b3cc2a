"""Alembic environment: always given a live connection by pushguard.store.migrations."""

from __future__ import annotations

from alembic import context

from pushguard.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reached by a bare `alembic` command
    raise SystemExit("run migrations with `pushguard db upgrade`")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
