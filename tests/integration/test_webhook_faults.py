"""The webhook provider against a real receiver on loopback: every answer a receiver can give
maps to the right cause, action and fix, and every request verifies with `standardwebhooks`."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from pushguard import taxonomy
from pushguard.config import ProviderConfig
from pushguard.exceptions import ConfigError, DeliveryError
from pushguard.providers.base import Delivery, ProviderContext
from pushguard.providers.webhook import WebhookProvider
from pushguard.retry import RetryPolicy, Verdict
from pushguard.settings import Settings
from pushguard.ssrf import OutboundGuard


class Receiver:
    """Answers each path with a scripted fault and verifies every signature it gets."""

    def __init__(self, secret: str) -> None:
        self.wh = Webhook(secret)
        self.verified: list[tuple[str, Any]] = []
        self.ids: list[str] = []
        self.cookies: list[str | None] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        payload = self.wh.verify(body, dict(request.headers))  # raises if the signature is bad
        self.ids.append(request.headers["webhook-id"])
        self.verified.append((request.match_info["case"], payload))
        case = request.match_info["case"]
        self.cookies.append(request.headers.get("Cookie"))
        if case == "ok":
            return web.json_response({"ok": True})
        if case == "cookie":
            resp = web.json_response({"ok": True})
            resp.set_cookie("session", "tenant-a", path="/", max_age=3600)
            return resp
        if case == "timeout":
            await asyncio.sleep(5)
            return web.Response(status=200)
        if case == "reset":
            assert request.transport is not None
            request.transport.abort()
            await asyncio.sleep(0.1)
            return web.Response(status=200)
        if case == "html":
            return web.Response(status=403, text="<html><h1>Blocked by WAF</h1></html>",
                                content_type="text/html")
        if case == "html502":
            return web.Response(status=502, text="<html><h1>502 Bad Gateway</h1></html>",
                                content_type="text/html")
        if case == "moved":
            return web.Response(status=301, headers={"Location": "https://new.example/h"})
        status = int(case)
        headers = {"Retry-After": "7"} if status in (429, 503) else {}
        return web.json_response({"error": f"status {status}"}, status=status, headers=headers)


@pytest.fixture
async def receiver(webhook_secret: str) -> AsyncIterator[tuple[str, Receiver]]:
    rec = Receiver(webhook_secret)
    app = web.Application()
    app.router.add_post("/hooks/{case}", rec.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", rec
    await runner.cleanup()


def provider(secret: str, *, timeout: float = 1.0, allow: str = "127.0.0.1") -> WebhookProvider:
    settings = Settings(webhook_secret=secret, outbound_allow=allow)
    return WebhookProvider(
        ProviderConfig("webhook", "webhook", {}, timeout=timeout),
        ProviderContext(settings, OutboundGuard.from_env(allow)),
    )


def delivery(url: str, mid: str = "msg_test1") -> Delivery:
    return Delivery(mid, "webhook", url, {"event": "order.paid", "n": 1}, None, 1, 1, 1e12)


CASES = [
    # case, cause, retried?, retry_after, maybe_sent
    ("400", "CONTENT_REJECTED", Verdict.FAIL, None, False),
    ("401", "AUTH_CREDENTIALS", Verdict.RETRY, None, False),
    ("403", "AUTH_CREDENTIALS", Verdict.RETRY, None, False),
    ("404", "INVALID_RECIPIENT", Verdict.FAIL, None, False),
    ("410", "UNREGISTERED_TOKEN", Verdict.SUPPRESS, None, False),
    ("413", "CONTENT_REJECTED", Verdict.FAIL, None, False),
    ("429", "RATE_LIMITED", Verdict.RETRY, 7.0, False),
    ("500", "PROVIDER_OUTAGE", Verdict.RETRY, None, False),
    ("503", "PROVIDER_OUTAGE", Verdict.RETRY, 7.0, False),
    ("504", "NETWORK_TIMEOUT", Verdict.RETRY, None, True),
    ("timeout", "NETWORK_TIMEOUT", Verdict.RETRY, None, True),
    ("reset", "NETWORK_TIMEOUT", Verdict.RETRY, None, True),
    ("html", "UNKNOWN", Verdict.RETRY, None, False),
    ("html502", "PROVIDER_OUTAGE", Verdict.RETRY, None, False),
    ("moved", "INVALID_RECIPIENT", Verdict.SUPPRESS, None, False),
]


@pytest.mark.parametrize("case,cause,verdict,retry_after,maybe_sent", CASES,
                         ids=[c[0] for c in CASES])
async def test_fault_matrix(receiver: tuple[str, Receiver], webhook_secret: str, case: str,
                            cause: str, verdict: Verdict, retry_after: float | None,
                            maybe_sent: bool) -> None:
    base, rec = receiver
    p = provider(webhook_secret)
    await p.start()
    try:
        with pytest.raises(DeliveryError) as info:
            await p.send(delivery(f"{base}/hooks/{case}"))
    finally:
        await p.close()
    err = info.value
    assert err.cause.name == cause
    assert err.retry_after == retry_after
    assert err.maybe_sent is maybe_sent
    assert err.provider_code
    explanation, fix = taxonomy.describe(err.cause, provider="webhook", detail=err.detail)
    assert explanation and fix
    decision = RetryPolicy(rng=random.Random(1)).decide(
        err.cause, attempts=1, now=0, expires_at=86400, retry_after=err.retry_after,
        suppress=err.suppress,
    )
    assert decision.verdict is verdict
    if case not in ("reset",):  # the receiver saw the request and its signature verified
        assert rec.verified and rec.verified[-1][0] == case


async def test_success_is_signed_and_the_id_is_stable_across_retries(
    receiver: tuple[str, Receiver], webhook_secret: str
) -> None:
    base, rec = receiver
    p = provider(webhook_secret)
    await p.start()
    try:
        for _ in range(3):
            receipt = await p.send(delivery(f"{base}/hooks/ok", mid="msg_same"))
            assert receipt.status == 200
    finally:
        await p.close()
    assert rec.ids == ["msg_same"] * 3
    assert rec.verified[0][1] == {"event": "order.paid", "n": 1}


async def test_secret_rotation_signs_with_both_keys(receiver: tuple[str, Receiver],
                                                    webhook_secret: str) -> None:
    base, rec = receiver
    other = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="
    settings = Settings(outbound_allow="127.0.0.1")
    p = WebhookProvider(
        ProviderConfig("webhook", "webhook", {"secrets": [other, webhook_secret]}),
        ProviderContext(settings, OutboundGuard.from_env("127.0.0.1")),
    )
    await p.start()
    try:
        await p.send(delivery(f"{base}/hooks/ok"))  # verifies against the second key
    finally:
        await p.close()
    assert rec.verified


async def test_internal_destination_is_refused_at_send_time(webhook_secret: str,
                                                            receiver: tuple[str, Receiver]
                                                            ) -> None:
    base, rec = receiver
    p = provider(webhook_secret, allow="")
    await p.start()
    try:
        with pytest.raises(DeliveryError) as info:
            await p.send(delivery(f"{base}/hooks/ok"))
    finally:
        await p.close()
    assert info.value.cause is taxonomy.VALIDATION_ERROR
    assert info.value.provider_code == "SSRF_BLOCKED"
    assert rec.verified == []


@pytest.mark.parametrize("secret", ["", "nope", "whsec_!!!", "whsec_c2hvcnQ="])
def test_bad_secret_is_a_config_error(secret: str) -> None:
    with pytest.raises(ConfigError):
        provider(secret)


async def test_cookies_a_receiver_sets_are_never_sent_back(
    receiver: tuple[str, Receiver], webhook_secret: str,
) -> None:
    """Each delivery stands alone: a receiver's Set-Cookie must not ride along on the next
    request, to it or to any other receiver on the same domain."""
    base, rec = receiver
    named = base.replace("127.0.0.1", "localhost")  # a name: cookies for IPs are never kept
    p = provider(webhook_secret)
    try:
        for path in ("cookie", "ok", "cookie", "ok"):
            await p.send(delivery(f"{named}/hooks/{path}"))
    finally:
        await p.close()
    assert len(rec.cookies) == 4 and rec.cookies == [None] * 4
