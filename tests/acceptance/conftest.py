"""A real pushguard API on loopback (uvicorn in a thread), and the real CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from pushguard.api.server import create_api
from pushguard.app import App
from pushguard.settings import Settings
from tests.conftest import free_port, serve_api

__all__ = ["free_port"]


@dataclass
class LiveAPI:
    url: str
    key: str
    app: App
    api: FastAPI

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)


@pytest.fixture
def live_api(tmp_path: Path, webhook_secret: str) -> Iterator[LiveAPI]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/api.db", webhook_secret=webhook_secret,
        outbound_allow="127.0.0.1", max_body_bytes=256 * 1024,
    )
    app = App.from_settings(settings)
    app.store.migrate()
    _, key = app.store.create_api_key("tests")
    api = create_api(app)
    with serve_api(app, api) as url:
        yield LiveAPI(url, key, app, api)
    app.store.close()


@dataclass
class CLI:
    env: dict[str, str]
    cwd: Path

    def __call__(self, *args: str, check: bool = True,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "pushguard", *args], env=self.env, cwd=self.cwd,
            capture_output=True, text=True, timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"pushguard {' '.join(args)} -> {proc.returncode}\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc


@pytest.fixture
def cli(tmp_path: Path, webhook_secret: str) -> CLI:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGUARD_")}
    env.update(
        PUSHGUARD_DATABASE_URL=f"sqlite:///{tmp_path}/cli.db",
        PUSHGUARD_WEBHOOK_SECRET=webhook_secret,
        PUSHGUARD_OUTBOUND_ALLOW="127.0.0.1",
        PUSHGUARD_LOG_FORMAT="json",
    )
    return CLI(env, tmp_path)
