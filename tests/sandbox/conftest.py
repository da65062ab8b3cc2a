"""Fixtures for the sandbox tests: a sandbox on the test's loop and an HTTP client."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from standardwebhooks.webhooks import Webhook

from pushguard.sandbox import Sandbox

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"pushguard sandbox test secret 32").decode()
TWILIO_TOKEN = "twilio-test-auth-token"


@pytest.fixture
def webhook_secret() -> str:
    return WEBHOOK_SECRET


@pytest.fixture
def twilio_token() -> str:
    return TWILIO_TOKEN


@pytest.fixture
def records_path(tmp_path: Path) -> Path:
    return tmp_path / "records.jsonl"


@pytest.fixture
async def sandbox(records_path: Path) -> AsyncIterator[Sandbox]:
    sb = Sandbox(
        webhook_secret=WEBHOOK_SECRET,
        twilio_auth_token=TWILIO_TOKEN,
        profiles={"seed": 7},
        records_path=records_path,
    )
    await sb.start()
    try:
        yield sb
    finally:
        await sb.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def sign() -> Callable[..., dict[str, str]]:
    """Standard Webhooks headers for a body, signed with the sandbox's secret."""

    def make(body: bytes, msg_id: str = "msg_1", secret: str = WEBHOOK_SECRET) -> dict[str, str]:
        now = datetime.now(tz=UTC)
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret).sign(msg_id, now, body.decode()),
            "content-type": "application/json",
        }

    return make
