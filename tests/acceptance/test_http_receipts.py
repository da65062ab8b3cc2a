"""Receipts from a generic gateway (`http` provider), signed per Standard Webhooks with the
provider's receipt_secret: recorded in the history, bad addresses suppressed, forgeries and
strangers refused."""

from __future__ import annotations

import base64
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from standardwebhooks.webhooks import Webhook

from pushguard.app import App
from pushguard.config import Config, ProviderConfig
from pushguard.models import Attempt, NewMessage, Outcome
from pushguard.settings import Settings
from pushguard.states import State
from pushguard.store.sql import SQLStore
from tests.conftest import serve_api


def signed(secret: str, body: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    msg_id, now = "rcpt_" + os.urandom(4).hex(), datetime.now(UTC)
    sig = Webhook(secret).sign(msg_id, now, raw.decode())
    return raw, {"webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())),
                 "webhook-signature": sig, "Content-Type": "application/json"}


def test_signed_gateway_receipts(tmp_path: Path) -> None:
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    store = SQLStore(f"sqlite:///{tmp_path}/r.db")
    store.migrate()
    config = Config(channels={"sms": ("gw",)}, providers={"gw": ProviderConfig(
        "gw", "http", {"url": "https://sms.example.com/send", "receipt_secret": secret})})
    app = App(settings=Settings(), store=store, config=config)
    ids = [r.id for r in store.enqueue(  # type: ignore[union-attr]
        [NewMessage("sms", "+14155550100", {"text": "a"}),
         NewMessage("sms", "+14155550101", {"text": "b"})], scope="t")]
    for job in store.claim("w", 10, 30):
        store.record("w", [Outcome(job.id, State.DELIVERED, "delivered via gw",
                                   attempt=Attempt(1, time.time(), "gw", "delivered"),
                                   provider="gw")])
    with serve_api(app) as url:
        raw, headers = signed(secret, {"message_id": ids[0], "status": "delivered"})
        ok = httpx.post(f"{url}/v1/receipts/http/gw", content=raw, headers=headers)
        raw, headers = signed(secret, {"message_id": ids[1], "status": "failed",
                                       "cause": "INVALID_RECIPIENT",
                                       "error_code": "NO_SUCH_NUMBER"})
        bad = httpx.post(f"{url}/v1/receipts/http/gw", content=raw.replace(b"failed", b"sent"),
                         headers=headers)
        failed = httpx.post(f"{url}/v1/receipts/http/gw", content=raw, headers=headers)
        other = httpx.post(f"{url}/v1/receipts/http/nope", content=raw, headers=headers)
        raw, headers = signed(secret, {"message_id": "msg_x", "status": "failed"})
        unknown = httpx.post(f"{url}/v1/receipts/http/gw", content=raw, headers=headers)
    assert ok.status_code == 204 and failed.status_code == 204
    assert bad.status_code == 401 and other.status_code == 404 and unknown.status_code == 404
    view = store.get(ids[1])
    assert view is not None and view.state is State.DELIVERED
    assert any(t.src is None and "NO_SUCH_NUMBER" in t.reason for t in view.history)
    assert [(s.channel, s.address) for s in store.suppressions()] == [("sms", "+14155550101")]
    store.close()


def test_receipts_close_the_confirm_window_or_start_the_fallback(tmp_path: Path) -> None:
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    store = SQLStore(f"sqlite:///{tmp_path}/r.db")
    store.migrate()
    config = Config(channels={"sms": ("gw",), "email": ("gw",)}, providers={"gw": ProviderConfig(
        "gw", "http", {"url": "https://sms.example.com/send", "receipt_secret": secret})})
    app = App(settings=Settings(secret_key="k"), store=store, config=config)
    leg = [{"channel": "email", "to": "a@example.com", "content": {"subject": "s"}}]
    ids = [r.id for r in store.enqueue(  # type: ignore[union-attr]
        [NewMessage("sms", f"+1415555010{i}", {"text": "a"}, fallback=leg, confirm_within=60)
         for i in range(2)], scope="t")]
    for job in store.claim("w", 10, 30):
        store.record("w", [Outcome(job.id, State.DELIVERED, "delivered via gw",
                                   attempt=Attempt(1, time.time(), "gw", "delivered"),
                                   provider="gw")])
    with serve_api(app) as url:
        raw, headers = signed(secret, {"message_id": ids[0], "status": "delivered"})
        assert httpx.post(f"{url}/v1/receipts/http/gw", content=raw,
                          headers=headers).status_code == 204
        raw, headers = signed(secret, {"message_id": ids[1], "status": "undelivered",
                                       "cause": "RECIPIENT_TEMPORARY"})
        assert httpx.post(f"{url}/v1/receipts/http/gw", content=raw,
                          headers=headers).status_code == 204
    confirmed, undelivered = (store.get(i) for i in ids)
    assert confirmed is not None and confirmed.confirmed_at is not None
    assert confirmed.next_leg_id is None
    assert undelivered is not None and undelivered.next_leg_id is not None
    assert store.get(undelivered.next_leg_id).channel == "email"  # type: ignore[union-attr]
    store.close()
