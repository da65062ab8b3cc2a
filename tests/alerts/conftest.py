"""Fixtures for the alerts tests: a real webhook receiver on loopback that verifies Standard
Webhooks signatures, and helpers that write outcomes through the real store."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from pushguard.models import Attempt, Failure, NewMessage, Outcome
from pushguard.states import State
from pushguard.store.sql import SQLStore
from tests.acceptance.conftest import cli, live_api

__all__ = ["cli", "live_api"]  # the acceptance fixtures, shared


class Receiver:
    """Records every notification whose signature verifies; answers 503 to the first try of
    each webhook-id when ``fail_first`` (so notifications themselves fail sometimes)."""

    def __init__(self, secret: str, *, fail_first: bool = True) -> None:
        self.wh = Webhook(secret)
        self.fail_first = fail_first
        self.seen: set[str] = set()
        self.verified: list[tuple[str, dict[str, Any]]] = []
        self.rejected = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    data = receiver.wh.verify(body, dict(self.headers.items()))
                except WebhookVerificationError:
                    with receiver.lock:
                        receiver.rejected += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                wid = self.headers["webhook-id"]
                with receiver.lock:
                    first = wid not in receiver.seen
                    receiver.seen.add(wid)
                    if not (first and receiver.fail_first):
                        receiver.verified.append((wid, data))
                self.send_response(503 if first and receiver.fail_first else 200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ops/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def notifications(self, alert_id: str | None = None) -> list[tuple[str, str]]:
        """(webhook-id, level) of each notification received and accepted."""
        with self.lock:
            return [(wid, d["level"]) for wid, d in self.verified
                    if alert_id is None or d["alert"]["id"] == alert_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(webhook_secret: str) -> Iterator[Receiver]:
    r = Receiver(webhook_secret)
    yield r
    r.close()


def finish(store: SQLStore, items: list[tuple[NewMessage, str | None]], *,
           provider: str = "p1", scope: str = "t") -> None:
    """Enqueue messages, claim them and record one attempt each through ``provider``:
    delivered when the cause is None, failed with that cause otherwise."""
    store.enqueue([m for m, _ in items], scope=scope)
    causes = {m.id: c for m, c in items}
    jobs = store.claim("tester", len(items), 30)
    now = time.time()
    outs = []
    for j in jobs:
        cause = causes[j.id]
        if cause is None:
            outs.append(Outcome(j.id, State.DELIVERED, "ok", provider=provider,
                                attempt=Attempt(1, now, provider, "delivered")))
        else:
            outs.append(Outcome(j.id, State.FAILED, cause, provider=provider,
                                attempt=Attempt(1, now, provider, "failed", cause=cause),
                                failure=Failure(cause, False, None, "e", "f", provider),
                                suppress=(j.channel, j.to, cause)
                                if cause == "INVALID_RECIPIENT" else None))
    assert store.record("tester", outs) == len(items)


def sms(i: int, **kw: Any) -> NewMessage:
    return NewMessage("sms", f"+1415555{i:04d}", {"text": f"m{i}"}, **kw)


def wait_for(what: Any, timeout: float = 20.0, every: float = 0.1) -> Any:
    """Poll ``what()`` until it returns something truthy; fail with its last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = what()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"gave up waiting; last value: {json.dumps(last, default=str)}")
