"""The FCM provider against the sandbox's FCM fake and OAuth2 token endpoint, and its classifier
fed the exact error bodies of FAILURES.md §1.1."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from multidict import CIMultiDict, CIMultiDictProxy

from pushguard import taxonomy
from pushguard.config import ProviderConfig
from pushguard.exceptions import DeliveryError, InputError
from pushguard.providers.base import Delivery, ProviderContext
from pushguard.providers.fcm import SCOPE, FcmProvider, classify
from pushguard.providers.httpclient import Response
from pushguard.sandbox import Sandbox
from pushguard.settings import Settings
from pushguard.ssrf import OutboundGuard
from tests.providers.keys import pem

TOKEN = "cTok3n:APA91b" + "x" * 140
EMAIL = "pushguard@demo.iam.gserviceaccount.com"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
CONTENT = {"title": "Hi", "body": "there", "data": {"order": "42"}}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def account(rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> Path:
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps({
        "type": "service_account",
        "project_id": "demo",
        "private_key_id": "kid-1",
        "private_key": pem(rsa_key),
        "client_email": EMAIL,
        "token_uri": "https://oauth2.googleapis.com/token",
    }))
    return path


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(profiles={"seed": 3}) as sb:
        yield sb


def context(allow: str = "127.0.0.1") -> ProviderContext:
    return ProviderContext(Settings(outbound_allow=allow), OutboundGuard.from_env(allow))


def make(sb: Sandbox, account: Path | str, *, timeout: float = 1.0, **options: Any) -> FcmProvider:
    opts = {
        "service_account": str(account),
        "base_url": f"{sb.http_url}/fcm",
        "token_uri": f"{sb.http_url}/fcm/token",
        **options,
    }
    return FcmProvider(ProviderConfig("fcm", "fcm", opts, timeout=timeout), context())


@pytest.fixture
async def provider(sandbox: Sandbox, account: Path) -> AsyncIterator[FcmProvider]:
    p = make(sandbox, account)
    await p.start()
    yield p
    await p.close()


def delivery(to: str = TOKEN, content: dict[str, Any] | None = None, **kw: Any) -> Delivery:
    fields: dict[str, Any] = {
        "message_id": "msg-1", "channel": "fcm", "to": to, "content": content or CONTENT,
        "topic": None, "attempt": 1, "priority": 1, "expires_at": time.time() + 3600, **kw,
    }
    return Delivery(**fields)


async def failure(provider: FcmProvider, d: Delivery | None = None) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        await provider.send(d or delivery())
    return info.value


def token_hits(sb: Sandbox) -> list[Any]:
    return sb.recorder.records("fcm-token")


# -- the contract against the fake --------------------------------------------------------


async def test_sends_a_v1_message_with_a_fresh_access_token(
    sandbox: Sandbox, provider: FcmProvider
) -> None:
    receipt = await provider.send(delivery())
    assert receipt.status == 200
    assert receipt.provider_message_id and receipt.provider_message_id.startswith(
        "projects/demo/messages/")
    [record] = sandbox.recorder.records("fcm")
    message = record.body["message"]
    assert message["token"] == TOKEN
    assert message["notification"] == {"title": "Hi", "body": "there"}
    assert message["data"] == {"order": "42"}
    assert message["android"]["priority"] == "NORMAL"
    assert 3590 <= int(message["android"]["ttl"].rstrip("s")) <= 3600
    assert record.headers == {"authorization": "present"}
    [hit] = token_hits(sandbox)
    claims = hit.meta["claims"]
    assert (hit.address, hit.outcome) == (EMAIL, "200")
    assert claims["scope"] == SCOPE and claims["aud"] == f"{sandbox.http_url}/fcm/token"
    assert claims["exp"] - claims["iat"] == 3600


async def test_the_assertion_is_an_rs256_jwt_signed_by_the_service_account(
    provider: FcmProvider, rsa_key: rsa.RSAPrivateKey
) -> None:
    assertion = provider.tokens.assertion()
    assert jwt.get_unverified_header(assertion)["kid"] == "kid-1"
    claims = jwt.decode(assertion, rsa_key.public_key(), algorithms=["RS256"],
                        audience=provider.tokens.token_uri)
    assert claims["iss"] == EMAIL and claims["scope"] == SCOPE


async def test_priority_collapse_key_and_ttl_bounds(
    sandbox: Sandbox, provider: FcmProvider
) -> None:
    content = {"data": {"k": "v"}, "collapse_key": "scores"}
    await provider.send(delivery(content=content, priority=0, expires_at=time.time() + 10**8))
    message = sandbox.recorder.records("fcm")[-1].body["message"]
    assert message["android"] == {"ttl": "2419200s", "priority": "HIGH", "collapse_key": "scores"}
    assert "notification" not in message
    await provider.send(delivery(expires_at=time.time() - 5))
    assert sandbox.recorder.records("fcm")[-1].body["message"]["android"]["ttl"] == "0s"


def rate(kind: str, **extra: Any) -> dict[str, Any]:
    return {"rates": {kind: 1.0}, **extra}


CONTRACT = [
    # (profile, address, cause, provider_code, status, retry_after, scope, maybe_sent)
    (rate("400"), TOKEN, "CONTENT_REJECTED", "INVALID_ARGUMENT", 400, None, None, False),
    ({}, "invalid-" + TOKEN, "INVALID_RECIPIENT", "INVALID_ARGUMENT", 400, None, None, False),
    (rate("403"), TOKEN, "SENDER_CONFIG", "SENDER_ID_MISMATCH", 403, None, None, False),
    ({}, "dead-" + TOKEN, "UNREGISTERED_TOKEN", "UNREGISTERED", 404, None, None, False),
    (rate("404"), TOKEN, "UNREGISTERED_TOKEN", "UNREGISTERED", 404, None, None, False),
    (rate("410"), TOKEN, "UNREGISTERED_TOKEN", "UNREGISTERED", 404, None, None, False),
    (rate("413"), TOKEN, "CONTENT_REJECTED", "INVALID_ARGUMENT", 400, None, None, False),
    (rate("429"), TOKEN, "RATE_LIMITED", "QUOTA_EXCEEDED", 429, 60.0, "provider",
     False),
    (rate("500"), TOKEN, "PROVIDER_OUTAGE", "INTERNAL", 500, None, None, False),
    (rate("503", retry_after=7), TOKEN, "PROVIDER_OUTAGE", "UNAVAILABLE", 503, 7.0,
     None, False),
    (rate("html"), TOKEN, "PROVIDER_OUTAGE", "HTTP 502", 502, None, None, False),
    (rate("timeout", timeout_s=5), TOKEN, "NETWORK_TIMEOUT", "TIMEOUT", None, None,
     None, True),
    (rate("reset"), TOKEN, "NETWORK_TIMEOUT", "CONNECTION_RESET", None, None, None,
     True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("profile", "to", "cause", "code", "status", "retry_after", "scope", "maybe_sent"), CONTRACT,
    ids=[next(iter(row[0].get("rates", {})), f"address-{row[2]}") for row in CONTRACT],
)
async def test_contract(
    sandbox: Sandbox, account: Path, profile: dict[str, Any], to: str, cause: str, code: str,
    status: int | None, retry_after: float | None, scope: str | None, maybe_sent: bool,
) -> None:
    provider = make(sandbox, account, timeout=0.5)
    await provider.tokens.get()  # so a timeout profile cannot hit the token request
    sandbox.set_profile(profile, "fcm")
    try:
        error = await failure(provider, delivery(to=to))
    finally:
        await provider.close()
    assert (error.cause.name, error.provider_code, error.status) == (cause, code, status)
    assert (error.retry_after, error.scope, error.maybe_sent) == (retry_after, scope, maybe_sent)
    if status is not None:
        assert error.raw  # the provider's answer is kept for diagnosis
    if code == "HTTP 502":
        assert "<html>" in (error.raw or "")


async def test_401_refreshes_the_token_once_then_gives_auth(
    sandbox: Sandbox, provider: FcmProvider
) -> None:
    sandbox.set_profile(rate("401"), "fcm")
    error = await failure(provider)
    assert (error.cause, error.provider_code) == (taxonomy.AUTH_CREDENTIALS, "UNAUTHENTICATED")
    assert [r.outcome for r in sandbox.recorder.records("fcm")] == ["401", "401"]
    assert len(token_hits(sandbox)) == 2


async def test_a_revoked_token_is_refreshed_and_the_message_sent(
    sandbox: Sandbox, provider: FcmProvider, http: aiohttp.ClientSession
) -> None:
    await provider.send(delivery())
    async with http.post(f"{sandbox.http_url}/fcm/_sandbox/revoke") as resp:
        assert (await resp.json())["revoked"] == 1
    receipt = await provider.send(delivery())
    assert receipt.status == 200
    assert [r.outcome for r in sandbox.recorder.records("fcm")] == ["200", "401", "200"]
    assert len(token_hits(sandbox)) == 2


async def test_one_token_request_for_50_concurrent_sends(
    sandbox: Sandbox, provider: FcmProvider
) -> None:
    receipts = await asyncio.gather(*(provider.send(delivery()) for _ in range(50)))
    assert {r.status for r in receipts} == {200}
    assert len(token_hits(sandbox)) == 1 and provider.tokens.fetches == 1


async def test_token_is_renewed_five_minutes_before_it_expires(provider: FcmProvider) -> None:
    offset = [0.0]
    provider.tokens._clock = lambda: time.time() + offset[0]
    first = await provider.tokens.get()
    offset[0] = 3600 - 310
    assert await provider.tokens.get() == first
    offset[0] = 3600 - 290
    assert await provider.tokens.get() != first
    assert provider.tokens.fetches == 2


async def test_token_endpoint_failures_are_not_maybe_sent(
    sandbox: Sandbox, account: Path
) -> None:
    refused = make(sandbox, account, token_uri=f"{sandbox.http_url}/fcm/no-such-endpoint")
    unreachable = make(sandbox, account, token_uri="http://127.0.0.1:9/token")
    try:
        error = await failure(refused)
        assert (error.cause, error.provider_code) == (taxonomy.AUTH_CREDENTIALS, "OAUTH 404")
        error = await failure(unreachable)
        assert (error.cause, error.maybe_sent) == (taxonomy.NETWORK_TIMEOUT, False)
        assert error.provider_code == "CONNECT_ERROR"
    finally:
        await refused.close()
        await unreachable.close()
    assert sandbox.recorder.records("fcm") == []  # the message was never sent


async def test_a_200_without_a_message_name_is_unknown_and_maybe_sent(account: Path) -> None:
    app = web.Application()

    async def handler(request: web.Request) -> web.Response:
        if request.path.endswith("/token"):
            return web.json_response({"access_token": "ya29.x", "expires_in": 3600})
        return web.Response(text="<html>welcome to the proxy</html>", content_type="text/html")

    app.router.add_post("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    opts = {"service_account": str(account), "base_url": f"http://127.0.0.1:{port}",
            "token_uri": f"http://127.0.0.1:{port}/token"}
    provider = FcmProvider(ProviderConfig("fcm", "fcm", opts, timeout=1.0), context())
    try:
        error = await failure(provider)
    finally:
        await provider.close()
        await runner.cleanup()
    assert (error.cause, error.maybe_sent, error.status) == (taxonomy.UNKNOWN, True, 200)
    assert "proxy" in (error.raw or "")


async def test_the_ssrf_guard_applies(sandbox: Sandbox, account: Path) -> None:
    opts = {"service_account": str(account), "base_url": f"{sandbox.http_url}/fcm",
            "token_uri": f"{sandbox.http_url}/fcm/token"}
    provider = FcmProvider(ProviderConfig("fcm", "fcm", opts), context(allow=""))
    try:
        error = await failure(provider)
    finally:
        await provider.close()
    assert (error.cause, error.provider_code) == (taxonomy.VALIDATION_ERROR, "SSRF_BLOCKED")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# -- options --------------------------------------------------------------------------------


def config(**options: Any) -> ProviderConfig:
    return ProviderConfig("push", "fcm", options)


def test_check_options(account: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert FcmProvider.check_options(config(service_account=str(account)), location="x") == []
    monkeypatch.setenv("FCM_SA", account.read_text())
    assert FcmProvider.check_options(config(service_account="env:FCM_SA"), location="x") == []
    [missing] = FcmProvider.check_options(config(), location="x")
    assert missing.location == "x.service_account"
    [broken] = FcmProvider.check_options(config(service_account="{not json"), location="x")
    assert "not valid JSON" in broken.message
    doc = json.loads(account.read_text())
    del doc["project_id"]
    [no_project] = FcmProvider.check_options(config(service_account=doc), location="x")
    assert no_project.location == "x.project_id"
    with_project = config(service_account=doc, project_id="p")
    assert FcmProvider.check_options(with_project, location="x") == []


def test_key_problems_never_quote_the_secret() -> None:
    ec_pem = pem(ec.generate_private_key(ec.SECP256R1()))
    doc = {"client_email": EMAIL, "private_key": ec_pem, "project_id": "p"}
    [error] = FcmProvider.check_options(config(service_account=doc), location="x")
    assert "RSA" in error.message and "PRIVATE KEY" not in str(error)
    doc["private_key"] = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n"
    [error] = FcmProvider.check_options(config(service_account=doc), location="x")
    assert "c2VjcmV0" not in str(error)


async def test_describe_masks_the_service_account(provider: FcmProvider) -> None:
    assert provider.describe()["options"]["service_account"] == "***"


# -- content validated at intake --------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        {"title": "t"},
        {"body": "b"},
        {"data": {"k": "v"}},
        {"title": "t", "image": "https://example.com/a.png", "collapse_key": "c"},
        {"body": "b", "apns": {"headers": {"apns-priority": "5"}}},
        {"data": {"k": "x" * 3900}},
    ],
)
def test_valid_content(content: dict[str, Any]) -> None:
    FcmProvider.validate_content("fcm", content)


@pytest.mark.parametrize(
    ("content", "field", "words"),
    [
        ({}, "content", "title or body, or data"),
        ({"image": "https://example.com/a.png"}, "content.image", "title or body"),
        ({"text": "hi"}, "content.text", "not an FCM content field"),
        ({"title": ""}, "content.title", "non-empty string"),
        ({"data": {"n": 1}}, "content.data.n", "must be a string"),
        ({"data": ["x"]}, "content.data", "object of strings"),
        ({"data": {"from": "x"}}, "content.data.from", "reserved"),
        ({"data": {"gcm": "x"}}, "content.data.gcm", "reserved"),
        ({"data": {"message_type": "x"}}, "content.data.message_type", "reserved"),
        ({"data": {"google.c.a.e": "1"}}, "content.data.google.c.a.e", "reserved"),
        ({"data": {"googled": "1"}}, "content.data.googled", "reserved"),
        ({"title": "t", "image": "ftp://x/a.png"}, "content.image", "http(s) URL"),
        ({"data": {"k": "x" * 4100}}, "content", "limit is 4096"),
        ({"title": "t", "apns": "x"}, "content.apns", "ApnsConfig"),
    ],
)
def test_invalid_content(content: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(InputError) as info:
        FcmProvider.validate_content("fcm", content)
    assert info.value.field == field and words in info.value.problem


def test_the_size_limit_counts_the_serialized_message() -> None:
    # The whole message is counted, so data just under 4096 characters is already too much.
    with pytest.raises(InputError, match="bytes; the limit is 4096"):
        FcmProvider.validate_content("fcm", {"data": {"k": "é" * 2030}})


# -- the classifier on the documented bodies -----------------------------------------------------


def response(status: int, body: Any, content_type: str = "application/json",
             **headers: str) -> Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    hdrs = CIMultiDictProxy(CIMultiDict({"Content-Type": content_type, **headers}))
    return Response(status, hdrs, raw, 0.01)


def fcm_error(http: int, status: str, message: str, code: str | None = None,
              *extra: dict[str, Any]) -> dict[str, Any]:
    details: list[dict[str, Any]] = [{"@type": FCM_ERROR, "errorCode": code}] if code else []
    return {"error": {"code": http, "message": message, "status": status,
                      "details": details + list(extra)}}


QUOTA = "type.googleapis.com/google.rpc.QuotaFailure"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"

CLASSIFY = [
    (fcm_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.",
               "INVALID_ARGUMENT"), 400, "CONTENT_REJECTED", "INVALID_ARGUMENT", None, None),
    (fcm_error(400, "INVALID_ARGUMENT",
               "The registration token is not a valid FCM registration token", "INVALID_ARGUMENT"),
     400, "INVALID_RECIPIENT", "INVALID_ARGUMENT", None, None),
    (fcm_error(400, "INVALID_ARGUMENT", "Invalid value at 'message.android.ttl'", None,
               {"@type": BAD_REQUEST, "fieldViolations": [
                   {"field": "message.android.ttl", "description": "Invalid value"}]}),
     400, "CONTENT_REJECTED", "INVALID_ARGUMENT", None, None),
    (fcm_error(400, "INVALID_ARGUMENT", "Invalid registration", None,
               {"@type": BAD_REQUEST, "fieldViolations": [
                   {"field": "message.token", "description": "Invalid registration token"}]}),
     400, "INVALID_RECIPIENT", "INVALID_ARGUMENT", None, None),
    (fcm_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED"),
     404, "UNREGISTERED_TOKEN", "UNREGISTERED", None, None),
    (fcm_error(404, "NOT_FOUND", "Requested entity was not found."),
     404, "SENDER_CONFIG", "NOT_FOUND", None, None),
    (fcm_error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH"),
     403, "SENDER_CONFIG", "SENDER_ID_MISMATCH", None, None),
    (fcm_error(403, "PERMISSION_DENIED", "Permission 'cloudmessaging.messages.create' denied"),
     403, "AUTH_CREDENTIALS", "PERMISSION_DENIED", None, None),
    (fcm_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", "QUOTA_EXCEEDED"),
     429, "RATE_LIMITED", "QUOTA_EXCEEDED", 60.0, "provider"),
    (fcm_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", "QUOTA_EXCEEDED",
               {"@type": QUOTA, "violations": [
                   {"subject": "device", "description": "Device message rate exceeded."}]}),
     429, "RATE_LIMITED", "QUOTA_EXCEEDED", None, "device"),
    (fcm_error(429, "RESOURCE_EXHAUSTED", "Topic quota exceeded.", "QUOTA_EXCEEDED"),
     429, "RATE_LIMITED", "QUOTA_EXCEEDED", 60.0, "topic"),
    (fcm_error(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE"),
     503, "PROVIDER_OUTAGE", "UNAVAILABLE", None, None),
    (fcm_error(500, "INTERNAL", "Internal error encountered.", "INTERNAL"),
     500, "PROVIDER_OUTAGE", "INTERNAL", None, None),
    (fcm_error(401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service",
               "THIRD_PARTY_AUTH_ERROR"),
     401, "AUTH_CREDENTIALS", "THIRD_PARTY_AUTH_ERROR", None, None),
    (fcm_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
     401, "AUTH_CREDENTIALS", "UNAUTHENTICATED", None, None),
    (fcm_error(500, "UNKNOWN", "Unknown error.", "UNSPECIFIED_ERROR"),
     500, "UNKNOWN", "UNSPECIFIED_ERROR", None, None),
    (fcm_error(503, "UNAVAILABLE", "new", "SOME_FUTURE_CODE"),
     503, "PROVIDER_OUTAGE", "SOME_FUTURE_CODE", None, None),
    (fcm_error(418, "WHATEVER", "teapot"), 418, "UNKNOWN", "WHATEVER", None, None),
]


@pytest.mark.parametrize(("body", "status", "cause", "code", "retry_after", "scope"), CLASSIFY)
def test_classify_documented_bodies(
    body: dict[str, Any], status: int, cause: str, code: str, retry_after: float | None,
    scope: str | None,
) -> None:
    error = classify(response(status, body))
    assert error is not None
    assert (error.cause.name, error.provider_code, error.status) == (cause, code, status)
    assert (error.retry_after, error.scope) == (retry_after, scope)
    assert body["error"]["message"] in error.detail


def test_classify_honours_retry_after() -> None:
    body = fcm_error(503, "UNAVAILABLE", "busy", "UNAVAILABLE")
    error = classify(response(503, body, **{"Retry-After": "30"}))
    assert error is not None and error.retry_after == 30.0
    body = fcm_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", "QUOTA_EXCEEDED")
    error = classify(response(429, body, **{"Retry-After": "120"}))
    assert error is not None and error.retry_after == 120.0  # above the 60 s floor: kept


@pytest.mark.parametrize(
    ("status", "body", "ctype", "cause"),
    [
        (400, b"<html>Bad Request</html>", "text/html", "UNKNOWN"),
        (502, b"<html>Bad Gateway</html>", "text/html", "PROVIDER_OUTAGE"),
        (413, b"too big", "text/plain", "CONTENT_REJECTED"),
        (429, b"", "text/plain", "RATE_LIMITED"),
        (404, b"not json {", "application/json", "UNKNOWN"),
    ],
)
def test_classify_garbage(status: int, body: bytes, ctype: str, cause: str) -> None:
    error = classify(response(status, body, ctype))
    assert error is not None and error.cause.name == cause
    assert error.raw == body.decode()


def test_classify_success() -> None:
    assert classify(response(200, {"name": "projects/p/messages/1"})) is None


async def test_the_live_check_fetches_a_fresh_token_and_sends_nothing(
    sandbox: Sandbox, provider: FcmProvider, account: Path,
) -> None:
    assert await provider.check() is True
    assert await provider.check() is True  # a new token each time, not the cached one
    assert provider.tokens.fetches == 2 and len(token_hits(sandbox)) == 2
    refused = make(sandbox, account, token_uri=f"{sandbox.http_url}/fcm/no-such-endpoint")
    try:
        with pytest.raises(DeliveryError) as info:
            await refused.check()
        assert (info.value.cause, info.value.provider_code) == (
            taxonomy.AUTH_CREDENTIALS, "OAUTH 404")
    finally:
        await refused.close()
    assert sandbox.recorder.records("fcm") == []
