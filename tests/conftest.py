"""Fixtures shared by every test: a clean environment, real stores, a webhook secret."""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest
import uvicorn
from sqlalchemy import create_engine, text

from pushguard.store.schema import metadata
from pushguard.store.sql import SQLStore

if TYPE_CHECKING:
    from fastapi import FastAPI

    from pushguard.app import App

PG_URL = os.environ.get("PUSHGUARD_TEST_PG", "postgresql://127.0.0.1:5432/test")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PUSHGUARD_* setting leaks from the developer's shell into a test."""
    for name in list(os.environ):
        if name.startswith("PUSHGUARD_") and name != "PUSHGUARD_TEST_PG":
            monkeypatch.delenv(name)


@pytest.fixture
def webhook_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def _pg_reachable() -> str | None:
    try:
        engine = create_engine(SQLStore(PG_URL).url)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:  # report why, then skip
        return f"PostgreSQL not reachable at {PG_URL}: {exc.__class__.__name__}"


@pytest.fixture(scope="session")
def pg_schema_url() -> Iterator[str]:
    """A fresh PostgreSQL schema for this test session, migrated, dropped at the end."""
    why = _pg_reachable()
    if why:
        pytest.skip(why)
    schema = f"pgtest_{uuid.uuid4().hex[:10]}"
    admin = create_engine(SQLStore(PG_URL).url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    store = SQLStore(url)
    store.migrate()
    store.close()
    yield url
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def _truncate(store: SQLStore) -> None:
    with store._writer.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            if table.name != "audience_generation":  # one row the migration puts there
                conn.execute(table.delete())


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/pushguard.db"
    url: str = request.getfixturevalue("pg_schema_url")
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[SQLStore]:
    """A migrated, empty store: SQLite in a temp dir, or a PostgreSQL schema."""
    s = SQLStore(store_url)
    s.migrate()
    _truncate(s)
    yield s
    s.close()


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    return f"sqlite:///{tmp_path}/pushguard.db"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test process owns signals
        pass


@contextmanager
def serve_api(app: App, api: FastAPI | None = None, port: int = 0) -> Iterator[str]:
    """Run the real API for ``app`` on a loopback port in a thread; yields its base URL."""
    from pushguard.api.server import create_api

    port = port or free_port()
    server = _Server(uvicorn.Config(api or create_api(app), host="127.0.0.1", port=port,
                                    log_config=None, access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "API did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
