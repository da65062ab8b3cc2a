"""FCM, Twilio, the generic SMS gateway and Web Push fakes: auth and error shapes."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pushguard.sandbox import Sandbox
from pushguard.sandbox.sms import twilio_signature

FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
SID = "AC0123456789abcdef0123456789abcdef"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def fcm_send(
    sandbox: Sandbox, http: aiohttp.ClientSession, token: str, auth: bool = True
) -> tuple[int, dict[str, Any], Mapping[str, str]]:
    url = f"{sandbox.http_url}/fcm/v1/projects/demo/messages:send"
    headers = {"Authorization": "Bearer ya29.test"} if auth else {}
    body = {"message": {"token": token, "notification": {"title": "hi"}}}
    async with http.post(url, json=body, headers=headers) as r:
        return r.status, await r.json(), dict(r.headers)


async def test_fcm_success(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    status, body, _ = await fcm_send(sandbox, http, "tok-1")
    assert status == 200
    assert body["name"].startswith("projects/demo/messages/")
    [record] = sandbox.recorder.records("fcm")
    assert record.headers == {"authorization": "present"}
    assert record.body["message"]["token"] == "tok-1"


@pytest.mark.parametrize(
    ("token", "rate", "http_status", "grpc", "code"),
    [
        ("dead-1", None, 404, "NOT_FOUND", "UNREGISTERED"),
        ("invalid-1", None, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"),
        ("t", "429", 429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
        ("t", "503", 503, "UNAVAILABLE", "UNAVAILABLE"),
        ("t", "500", 500, "INTERNAL", "INTERNAL"),
        ("t", "403", 403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"),
    ],
)
async def test_fcm_error_shapes(
    sandbox: Sandbox,
    http: aiohttp.ClientSession,
    token: str,
    rate: str | None,
    http_status: int,
    grpc: str,
    code: str,
) -> None:
    if rate:
        sandbox.set_profile({"rates": {rate: 1.0}}, "fcm")
    status, body, headers = await fcm_send(sandbox, http, token)
    assert status == http_status
    error = body["error"]
    assert (error["code"], error["status"]) == (http_status, grpc)
    assert error["details"] == [{"@type": FCM_ERROR, "errorCode": code}]
    if token == "dead-1":
        assert error["message"] == "Requested entity was not found."
    if token == "invalid-1":
        assert error["message"] == "The registration token is not a valid FCM registration token"
    if http_status in (429, 503):
        assert headers["Retry-After"] == "1"


async def test_fcm_requires_bearer_and_a_message(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await fcm_send(sandbox, http, "t", auth=False)
    assert (status, body["error"]["status"]) == (401, "UNAUTHENTICATED")
    url = f"{sandbox.http_url}/fcm/v1/projects/demo/messages:send"
    async with http.post(url, json={"nope": 1}, headers={"Authorization": "Bearer x"}) as r:
        assert r.status == 400
        detail = (await r.json())["error"]["details"][0]
        assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"


async def test_fcm_token_endpoint(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": "a.b.c"}
    async with http.post(f"{sandbox.http_url}/fcm/token", data=form) as r:
        body = await r.json()
        assert (r.status, body["expires_in"], body["token_type"]) == (200, 3600, "Bearer")
        assert body["access_token"]
    async with http.post(f"{sandbox.http_url}/fcm/token", data={"grant_type": "password"}) as r:
        assert r.status == 400


def twilio_url(sandbox: Sandbox) -> str:
    return f"{sandbox.http_url}/twilio/2010-04-01/Accounts/{SID}/Messages.json"


async def twilio_send(
    sandbox: Sandbox, http: aiohttp.ClientSession, to: str, password: str, **extra: str
) -> tuple[int, dict[str, Any]]:
    form = {"To": to, "From": "+15005550006", "Body": "hello", **extra}
    async with http.post(twilio_url(sandbox), data=form, headers=basic(SID, password)) as r:
        return r.status, await r.json()


async def test_twilio_auth(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    status, body = await twilio_send(sandbox, http, "+15551230000", "wrong")
    assert (status, body["code"], body["message"], body["status"]) == (
        401,
        20003,
        "Authenticate",
        401,
    )
    async with http.post(twilio_url(sandbox), data={"To": "+1"}) as r:
        assert r.status == 401


async def test_twilio_success_and_errors(
    sandbox: Sandbox, http: aiohttp.ClientSession, twilio_token: str
) -> None:
    status, body = await twilio_send(sandbox, http, "+15551230000", twilio_token)
    assert (status, body["status"]) == (201, "queued")
    assert body["sid"].startswith("SM") and len(body["sid"]) == 34
    status, body = await twilio_send(sandbox, http, "+1555invalid", twilio_token)
    assert (status, body["code"]) == (400, 21211)
    assert body["more_info"] == "https://www.twilio.com/docs/errors/21211"
    status, body = await twilio_send(sandbox, http, "+1555dead", twilio_token)
    assert (status, body["code"]) == (400, 21211)
    sandbox.set_profile({"rates": {"429": 1.0}}, "twilio")
    status, body = await twilio_send(sandbox, http, "+15551230000", twilio_token)
    assert (status, body["code"], body["status"]) == (429, 20429, 429)
    async with http.post(
        twilio_url(sandbox), data={"From": "+1", "Body": "x"}, headers=basic(SID, twilio_token)
    ) as r:
        assert (r.status, (await r.json())["code"]) == (400, 21604)


@pytest.fixture
async def callback_sink() -> AsyncIterator[tuple[str, asyncio.Queue[tuple[dict[str, str], str]]]]:
    received: asyncio.Queue[tuple[dict[str, str], str]] = asyncio.Queue()

    async def handle(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        await received.put((form, request.headers.get("X-Twilio-Signature", "")))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/status", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/status", received
    finally:
        await runner.cleanup()


async def test_twilio_status_callbacks(
    sandbox: Sandbox,
    http: aiohttp.ClientSession,
    twilio_token: str,
    callback_sink: tuple[str, asyncio.Queue[tuple[dict[str, str], str]]],
) -> None:
    url, received = callback_sink
    status, ok = await twilio_send(sandbox, http, "+1555000", twilio_token, StatusCallback=url)
    assert status == 201
    status, dead = await twilio_send(sandbox, http, "+1555dead", twilio_token, StatusCallback=url)
    assert (status, dead["status"]) == (201, "queued")
    events = [await asyncio.wait_for(received.get(), 5) for _ in range(4)]
    by_sid: dict[str, list[dict[str, str]]] = {}
    for form, signature in events:
        assert signature == twilio_signature(twilio_token, url, form)
        by_sid.setdefault(form["MessageSid"], []).append(form)
    assert [f["MessageStatus"] for f in by_sid[ok["sid"]]] == ["sent", "delivered"]
    final = by_sid[dead["sid"]][-1]
    assert (final["MessageStatus"], final["ErrorCode"]) == ("undelivered", "30005")


async def test_sms_gateway(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    url = f"{sandbox.http_url}/sms/acme/send"
    async with http.post(url, json={"to": "+15551230000", "text": "hi"}) as r:
        assert r.status == 200
        assert (await r.json())["id"].startswith("msg_")
    async with http.post(url, json={"to": "+1dead", "text": "hi"}) as r:
        assert (r.status, (await r.json())["error"]["code"]) == (410, "NUMBER_INACTIVE")
    async with http.post(url, json={"to": "+1invalid", "text": "hi"}) as r:
        assert (r.status, (await r.json())["error"]["code"]) == (400, "INVALID_NUMBER")
    async with http.post(url, json={"text": "hi"}) as r:
        assert r.status == 400
    sandbox.set_profile({"rates": {"503": 1.0}}, "sms")
    async with http.post(url, json={"to": "+15551230000", "text": "hi"}) as r:
        body = await r.json()
        assert (r.status, body["error"]["code"], r.headers["Retry-After"]) == (
            503,
            "UNAVAILABLE",
            "1",
        )


async def test_webpush(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    url = f"{sandbox.http_url}/webpush/sub-1"
    headers = {"Authorization": "vapid t=a.b.c, k=key", "TTL": "60"}
    async with http.post(url, data=b"x" * 100, headers=headers) as r:
        assert r.status == 201
        assert r.headers["Location"].startswith("/webpush/messages/")
    async with http.post(url, data=b"x", headers={"Authorization": headers["Authorization"]}) as r:
        assert (r.status, (await r.json())["errno"]) == (400, 101)
    async with http.post(url, data=b"x" * 5000, headers=headers) as r:
        assert r.status == 413
    async with http.post(f"{sandbox.http_url}/webpush/dead-sub", data=b"x", headers=headers) as r:
        assert r.status == 410
    async with http.post(url, data=b"x", headers={"TTL": "60"}) as r:
        assert r.status == 401
