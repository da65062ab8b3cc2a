"""Alembic migrations, run programmatically on a connection the store already holds.

``pushguard db upgrade`` and ``pushguard serve`` call :func:`upgrade`. Whether a database is
current is read without Alembic (``SQLStore.schema_is_current``, against ``HEAD_REVISION``,
which a test keeps equal to :func:`head`).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

HERE = Path(__file__).parent


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade(connection: Connection, revision: str = "head") -> None:
    command.upgrade(alembic_config(connection), revision)
