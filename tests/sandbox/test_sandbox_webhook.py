"""The webhook receiver: Standard Webhooks signatures and scripted faults over real HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import aiohttp
import pytest

from pushguard.sandbox import Sandbox

Signer = Callable[..., dict[str, str]]
BODY = json.dumps({"type": "message.delivered", "data": {"id": 1}}).encode()


async def test_signed_request_is_accepted_and_recorded(
    sandbox: Sandbox, http: aiohttp.ClientSession, sign: Signer
) -> None:
    headers = sign(BODY, msg_id="msg_abc")
    async with http.post(f"{sandbox.http_url}/hooks/orders", data=BODY, headers=headers) as r:
        assert r.status == 200
        assert await r.json() == {"ok": True}
    [record] = sandbox.recorder.records("webhook")
    assert (record.address, record.outcome, record.size) == ("orders", "200", len(BODY))
    assert record.headers["webhook-id"] == "msg_abc"
    assert set(record.headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert record.body == {"type": "message.delivered", "data": {"id": 1}}


@pytest.mark.parametrize("tamper", ["body", "secret", "missing"])
async def test_bad_signature_is_401(
    sandbox: Sandbox, http: aiohttp.ClientSession, sign: Signer, tamper: str
) -> None:
    if tamper == "secret":
        headers = sign(BODY, secret="whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=")
    else:
        headers = sign(BODY) if tamper == "body" else {}
    body = BODY + b" " if tamper == "body" else BODY
    async with http.post(f"{sandbox.http_url}/hooks/orders", data=body, headers=headers) as r:
        assert r.status == 401
        assert await r.json() == {"error": "bad signature"}
    assert sandbox.recorder.stats()["webhook"]["outcomes"] == {"401": 1}


async def test_verify_false_accepts_unsigned(http: aiohttp.ClientSession) -> None:
    sandbox = Sandbox(webhook_secret="whsec_c2VjcmV0c2VjcmV0", verify=False)
    async with sandbox as sb, http.post(f"{sb.http_url}/hooks/bench", data=b"{}") as r:
        assert r.status == 200


@pytest.mark.parametrize(("status", "retry_after", "header"), [(429, 1.0, "1"), (503, 0.5, "0.5")])
async def test_rate_limit_and_unavailable_send_retry_after(
    sandbox: Sandbox,
    http: aiohttp.ClientSession,
    sign: Signer,
    status: int,
    retry_after: float,
    header: str,
) -> None:
    sandbox.set_profile({"rates": {str(status): 1.0}, "retry_after": retry_after}, "webhook")
    async with http.post(f"{sandbox.http_url}/hooks/a", data=BODY, headers=sign(BODY)) as r:
        assert r.status == status
        assert r.headers["Retry-After"] == header


async def test_dead_and_invalid_endpoints(
    sandbox: Sandbox, http: aiohttp.ClientSession, sign: Signer
) -> None:
    for name, expected in (("dead-hook", 410), ("invalid-hook", 404)):
        async with http.post(
            f"{sandbox.http_url}/hooks/{name}", data=BODY, headers=sign(BODY)
        ) as r:
            assert r.status == expected


async def test_reset_drops_the_connection(
    sandbox: Sandbox, http: aiohttp.ClientSession, sign: Signer
) -> None:
    sandbox.set_profile({"rates": {"reset": 1.0}}, "webhook")
    with pytest.raises(aiohttp.ClientError):
        async with http.post(f"{sandbox.http_url}/hooks/a", data=BODY, headers=sign(BODY)) as r:
            await r.read()
    assert sandbox.recorder.records("webhook")[0].outcome == "reset"


async def test_timeout_hangs_then_answers_504(
    sandbox: Sandbox, http: aiohttp.ClientSession, sign: Signer
) -> None:
    sandbox.set_profile({"rates": {"timeout": 1.0}, "timeout_s": 0.4}, "webhook")
    url = f"{sandbox.http_url}/hooks/a"
    with pytest.raises(asyncio.TimeoutError):
        async with http.post(
            url, data=BODY, headers=sign(BODY), timeout=aiohttp.ClientTimeout(total=0.1)
        ) as r:
            await r.read()
    started = time.monotonic()
    async with http.post(url, data=BODY, headers=sign(BODY)) as r:
        assert r.status == 504
    assert time.monotonic() - started >= 0.35
    assert [r.outcome for r in sandbox.recorder.records("webhook")] == ["timeout", "timeout"]


async def test_html_proxy_page(sandbox: Sandbox, http: aiohttp.ClientSession, sign: Signer) -> None:
    sandbox.set_profile({"rates": {"html": 1.0}}, "webhook")
    async with http.post(f"{sandbox.http_url}/hooks/a", data=BODY, headers=sign(BODY)) as r:
        assert r.status == 502
        assert r.content_type == "text/html"
        assert "502 Bad Gateway" in await r.text()


async def test_outage_set_over_http(
    sandbox: Sandbox, http: aiohttp.ClientSession, sign: Signer
) -> None:
    profile = {"outages": [{"start": 0, "end": 60, "status": 503}], "retry_after": 30}
    async with http.post(f"{sandbox.http_url}/_sandbox/profile?service=webhook", json=profile) as r:
        assert r.status == 200
        assert (await r.json())["webhook"]["outages"][0]["status"] == 503
    async with http.post(f"{sandbox.http_url}/hooks/a", data=BODY, headers=sign(BODY)) as r:
        assert (r.status, r.headers["Retry-After"]) == (503, "30")
    async with http.post(f"{sandbox.http_url}/_sandbox/profile", json={"rates": {"x": 1}}) as r:
        assert r.status == 400


async def test_duplicate_ids_are_counted(
    sandbox: Sandbox, http: aiohttp.ClientSession, sign: Signer
) -> None:
    sandbox.set_profile({"rates": {}}, "webhook")
    for msg_id in ("m1", "m1", "m2", "flaky"):
        name = "flaky-hook" if msg_id == "flaky" else "a"
        for _ in range(2 if msg_id == "flaky" else 1):
            headers = sign(BODY, msg_id=msg_id)
            async with http.post(f"{sandbox.http_url}/hooks/{name}", data=BODY, headers=headers):
                pass
    stats = sandbox.recorder.stats()["webhook"]
    assert stats["outcomes"] == {"200": 4, "503": 1}
    assert (stats["distinct_ids"], stats["duplicates"]) == (3, 2)
    assert (stats["delivered_ids"], stats["delivered_duplicates"]) == (3, 1)
