"""Delivery receipts end to end: a Twilio status callback, signed by the sandbox with the
account's auth token, reaches the real API, lands in the message's history and suppresses the
number Twilio reported as unreachable; a forged callback changes nothing."""

from __future__ import annotations

import asyncio
import time

import httpx

from pushguard.app import App
from pushguard.config import Config, ProviderConfig, RetryConfig
from pushguard.receipts.twilio import compute_signature
from pushguard.sandbox import SandboxThread
from pushguard.settings import Settings
from pushguard.store.sql import SQLStore
from tests.conftest import free_port, serve_api

ACCOUNT = "AC" + "0" * 32
TOKEN = "test-auth-token"


async def test_signed_status_callback_is_recorded_and_suppresses(sqlite_url: str) -> None:
    store = SQLStore(sqlite_url)
    store.migrate()
    port = free_port()
    callback = f"http://127.0.0.1:{port}/v1/receipts/twilio"
    with SandboxThread(profiles={"twilio": {"rates": {"410": 1.0}}},
                       twilio_auth_token=TOKEN) as sb:
        config = Config(
            channels={"sms": ("tw",)},
            providers={"tw": ProviderConfig("tw", "twilio", {
                "account_sid": ACCOUNT, "auth_token": TOKEN, "from": "+15005550006",
                "base_url": f"{sb.http_url}/twilio", "status_callback_url": callback,
            }, timeout=5)},
            retry=RetryConfig(base=0.01, cap=0.05),
        )
        app = App(settings=Settings(outbound_allow="127.0.0.1"), store=store, config=config)
        _, key = store.create_api_key("t")
        with serve_api(app, port=port) as url:
            auth = {"Authorization": f"Bearer {key}"}
            sent = httpx.post(f"{url}/v1/messages", headers=auth, json={
                "channel": "sms", "to": "+1 415 555 0100", "content": {"text": "hi"}}).json()
            providers = app.build_providers()
            worker = app.build_worker(providers, poll=0.02)
            stop = asyncio.Event()
            task = asyncio.create_task(worker.run(stop))
            deadline = time.monotonic() + 20
            history: list[dict[str, str]] = []
            while time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                got = httpx.get(f"{url}/v1/messages/{sent['id']}", headers=auth).json()
                history = got["history"]
                if any("30005" in h["reason"] for h in history):
                    break
            story = httpx.get(f"{url}/v1/messages/{sent['id']}/explain", headers=auth).json()
            stop.set()
            await task
            for p in providers.values():
                await p.close()
            forged = httpx.post(callback + f"?message_id={sent['id']}", data={
                "AccountSid": ACCOUNT, "MessageSid": got["provider_message_id"],
                "MessageStatus": "delivered"},
                headers={"X-Twilio-Signature": compute_signature("wrong", callback, {})})
    assert got["state"] == "delivered"  # handed to Twilio; the receipt does not rewrite that
    receipts = [h for h in history if h["reason"].startswith("receipt from tw")]
    assert any("undelivered" in h["reason"] and h["cause"] == "INVALID_RECIPIENT"
               for h in receipts), history
    assert [(s.channel, s.address) for s in store.suppressions()] == [("sms", "+14155550100")]
    assert forged.status_code == 401
    assert story["verdict"] == "delivered, then reported undelivered", story
    assert any("30005" in step for step in story["steps"])
    assert not any(h["reason"].split(": ")[-1] == "delivered" for h in receipts)
    store.close()
