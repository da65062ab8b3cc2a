"""The two databases a round runs on: a temp SQLite file, or a fresh PostgreSQL schema.

Progress is polled with one direct, cheap SQL count (non-terminal states, which the
``ix_messages_lease (state, lease_until)`` index answers), never through pushguard itself.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

#: the states a message may still leave (everything else is terminal).
OPEN_STATES = ("queued", "retry_scheduled", "deferred", "sending")
_OPEN_SQL = (
    "SELECT count(*) FROM messages WHERE state IN ("
    + ",".join(f"'{s}'" for s in OPEN_STATES) + ")"
)
_STATES_SQL = "SELECT state, count(*) FROM messages GROUP BY state"


class SQLiteDB:
    kind = "sqlite"

    def __init__(self, root: Path | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pushguard-bench-", dir=root))
        self.path = self.dir / "bench.db"
        self.url = f"sqlite:///{self.path}"
        self._conn: sqlite3.Connection | None = None

    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30,
                                         isolation_level=None)
        return self._conn

    def open_count(self) -> int:
        return int(self._c().execute(_OPEN_SQL).fetchone()[0])

    def states(self) -> dict[str, int]:
        return {s: int(n) for s, n in self._c().execute(_STATES_SQL)}

    def size_mb(self) -> float:
        total = sum(p.stat().st_size for p in self.dir.glob("bench.db*") if p.exists())
        return total / 1e6

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresDB:
    kind = "postgresql"

    def __init__(self, base_url: str) -> None:
        import psycopg

        self.base_url = base_url
        self.schema = "bench_" + os.urandom(4).hex()
        self._admin = psycopg.connect(base_url, autocommit=True, connect_timeout=5)
        self._admin.execute(f'CREATE SCHEMA "{self.schema}"')
        sep = "&" if "?" in base_url else "?"
        self.url = f"{base_url}{sep}options={quote('-csearch_path=' + self.schema)}"
        self._conn: Any = psycopg.connect(self.url, autocommit=True)

    def open_count(self) -> int:
        return int(self._conn.execute(_OPEN_SQL).fetchone()[0])

    def states(self) -> dict[str, int]:
        return {s: int(n) for s, n in self._conn.execute(_STATES_SQL)}

    def close(self) -> None:
        try:
            self._conn.close()
        finally:
            self._admin.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            self._admin.close()


def postgres_unreachable(base_url: str) -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        import psycopg

        with psycopg.connect(base_url, connect_timeout=3) as c:
            c.execute("SELECT 1")
    except Exception as exc:  # any failure means: skip, and say why
        return f"{type(exc).__name__}: {str(exc).strip()[:200]}"
    return None
