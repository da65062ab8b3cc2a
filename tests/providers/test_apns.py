"""The APNs provider and its HTTP/2 client against the sandbox's APNs server (real HTTP/2 via h2),
and its classifier fed the reasons of FAILURES.md §1.2."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pushguard import taxonomy
from pushguard.config import ProviderConfig
from pushguard.exceptions import DeliveryError, InputError
from pushguard.providers import apns
from pushguard.providers.apns import (
    MIN_RENEWAL_INTERVAL,
    PROBE_TOKEN,
    TOKEN_LIFETIME,
    ApnsProvider,
    ProviderToken,
    apns_id,
    classify,
)
from pushguard.providers.base import Delivery, ProviderContext
from pushguard.providers.h2client import H2Pool, H2Response
from pushguard.sandbox import Profiles, Recorder
from pushguard.sandbox.apns import ApnsServer
from pushguard.settings import Settings
from pushguard.ssrf import OutboundGuard
from tests.providers.keys import pem

DEVICE = "a1b2c3d4" * 8
TEAM, KEY_ID = "TEAM123456", "KEY1234567"
CONTENT = {"title": "Hi", "body": "there", "data": {"order": 42}}


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(autouse=True)
def fresh_tokens() -> Iterator[None]:
    """Provider tokens are shared per key in a process; each test starts without one."""
    apns._SHARED.clear()
    yield
    apns._SHARED.clear()


@pytest.fixture
async def server() -> AsyncIterator[ApnsServer]:
    srv = ApnsServer(Profiles({"seed": 5}), Recorder(), max_streams=100)
    await srv.start()
    yield srv
    await srv.stop()


def context(allow: str = "127.0.0.1") -> ProviderContext:
    return ProviderContext(Settings(outbound_allow=allow), OutboundGuard.from_env(allow))


def make(port: int, key: ec.EllipticCurvePrivateKey, *, timeout: float = 2.0,
         allow: str = "127.0.0.1", **options: Any) -> ApnsProvider:
    opts = {
        "team_id": TEAM, "key_id": KEY_ID, "private_key": pem(key), "topic": "com.example.app",
        "environment": "sandbox", "base_url": f"http://127.0.0.1:{port}", **options,
    }
    return ApnsProvider(ProviderConfig("apns", "apns", opts, timeout=timeout), context(allow))


@pytest.fixture
async def provider(server: ApnsServer, ec_key: ec.EllipticCurvePrivateKey
                   ) -> AsyncIterator[ApnsProvider]:
    p = make(server.port, ec_key)
    await p.start()
    yield p
    await p.close()


def delivery(to: str = DEVICE, content: dict[str, Any] | None = None, **kw: Any) -> Delivery:
    fields: dict[str, Any] = {
        "message_id": "msg-1", "channel": "apns", "to": to, "content": content or CONTENT,
        "topic": None, "attempt": 1, "priority": 1, "expires_at": 1_900_000_000.0, **kw,
    }
    return Delivery(**fields)


async def failure(provider: ApnsProvider, d: Delivery | None = None) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        await provider.send(d or delivery())
    return info.value


def outcomes(server: ApnsServer) -> list[str]:
    return [r.outcome for r in server.recorder.records("apns")]


def rate(kind: str, **extra: Any) -> dict[str, Any]:
    return {"rates": {kind: 1.0}, **extra}


# -- requests as APNs sees them -------------------------------------------------------------


async def test_alert_push(server: ApnsServer, provider: ApnsProvider,
                          ec_key: ec.EllipticCurvePrivateKey) -> None:
    receipt = await provider.send(delivery())
    assert receipt.status == 200
    assert receipt.provider_message_id == apns_id("msg-1") == str(
        uuid.uuid5(uuid.UUID("6f1c6a7e-3c1b-5e0a-9d4e-7a1f2c9b8e01"), "msg-1"))
    [record] = server.recorder.records("apns")
    assert record.address == DEVICE
    assert record.body == {"aps": {"alert": {"title": "Hi", "body": "there"}}, "order": 42}
    assert record.headers["apns-id"] == apns_id("msg-1")
    assert {k: v for k, v in record.meta.items() if k != "provider-token"} == {
        "apns-topic": "com.example.app", "apns-push-type": "alert", "apns-priority": "10",
        "apns-expiration": "1900000000",
    }
    token = provider.tokens.current()
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": KEY_ID, "typ": "JWT"}
    claims = jwt.decode(token, ec_key.public_key(), algorithms=["ES256"])
    assert claims["iss"] == TEAM and abs(claims["iat"] - time.time()) < 5


async def test_the_same_message_keeps_its_apns_id(server: ApnsServer,
                                                  provider: ApnsProvider) -> None:
    await provider.send(delivery(attempt=1))
    await provider.send(delivery(attempt=2))
    ids = {r.headers["apns-id"] for r in server.recorder.records("apns")}
    assert ids == {apns_id("msg-1")}


@pytest.mark.parametrize(
    ("content", "priority", "push_type", "apns_priority", "topic"),
    [
        ({"data": {"sync": True}}, 0, "background", "5", "com.example.app"),
        ({"title": "t", "collapse_id": "score"}, 2, "alert", "5", "com.example.app"),
        ({"badge": 3, "topic": "com.example.other"}, 0, "alert", "10", "com.example.other"),
        ({"data": {"call": "x" * 4500}, "push_type": "voip"}, 2, "voip", "10",
         "com.example.app.voip"),
    ],
)
async def test_push_type_priority_and_topic(
    server: ApnsServer, provider: ApnsProvider, content: dict[str, Any], priority: int,
    push_type: str, apns_priority: str, topic: str,
) -> None:
    await provider.send(delivery(content=content, priority=priority))
    [record] = server.recorder.records("apns")
    assert record.outcome == "200"
    meta = record.meta
    assert (meta["apns-push-type"], meta["apns-priority"], meta["apns-topic"]) == (
        push_type, apns_priority, topic)
    if push_type == "background":
        assert record.body == {"aps": {"content-available": 1}, "sync": True}
    if "collapse_id" in content:
        assert meta["apns-collapse-id"] == "score"


# -- the contract against the fake ------------------------------------------------------------

CONTRACT = [
    # (profile, device, cause, provider_code, status, retry_after, scope, maybe_sent)
    (rate("400"), DEVICE, "CONTENT_REJECTED", "BadCollapseId", 400, None, None, False),
    ({}, "invalid" + DEVICE, "INVALID_RECIPIENT", "BadDeviceToken", 400, None, None, False),
    (rate("403"), DEVICE, "AUTH_CREDENTIALS", "InvalidProviderToken", 403, None, None, False),
    (rate("404"), DEVICE, "SENDER_CONFIG", "BadPath", 404, None, None, False),
    ({}, "dead" + DEVICE, "UNREGISTERED_TOKEN", "Unregistered", 410, None, None, False),
    (rate("410"), DEVICE, "UNREGISTERED_TOKEN", "Unregistered", 410, None, None, False),
    (rate("413"), DEVICE, "CONTENT_REJECTED", "PayloadTooLarge", 413, None, None, False),
    (rate("429"), DEVICE, "RATE_LIMITED", "TooManyRequests", 429, 1.0, "device", False),
    (rate("500"), DEVICE, "PROVIDER_OUTAGE", "InternalServerError", 500, None, None, False),
    (rate("503", retry_after=9), DEVICE, "PROVIDER_OUTAGE", "ServiceUnavailable", 503, 9.0, None,
     False),
    (rate("html"), DEVICE, "PROVIDER_OUTAGE", "HTTP 502", 502, None, None, False),
    (rate("timeout", timeout_s=5), DEVICE, "NETWORK_TIMEOUT", "TIMEOUT", None, None, None, True),
    (rate("reset"), DEVICE, "NETWORK_TIMEOUT", "CONNECTION_RESET", None, None, None, True),
]


@pytest.mark.parametrize(
    ("profile", "to", "cause", "code", "status", "retry_after", "scope", "maybe_sent"), CONTRACT,
    ids=[next(iter(row[0].get("rates", {})), f"address-{row[2]}") for row in CONTRACT],
)
async def test_contract(
    server: ApnsServer, ec_key: ec.EllipticCurvePrivateKey, profile: dict[str, Any], to: str,
    cause: str, code: str, status: int | None, retry_after: float | None, scope: str | None,
    maybe_sent: bool,
) -> None:
    provider = make(server.port, ec_key, timeout=0.5)
    server.profiles.set(profile, "apns")
    try:
        error = await failure(provider, delivery(to=to))
        assert (error.cause.name, error.provider_code, error.status) == (cause, code, status)
        assert (error.retry_after, error.scope, error.maybe_sent) == (
            retry_after, scope, maybe_sent)
        if code == "BadDeviceToken":
            assert "sandbox/production mix-up" in error.detail
        if code == "Unregistered":
            assert abs(error.extra["unregistered_at_ms"] / 1000 - time.time()) < 5
        if code == "HTTP 502":
            assert "<html>" in (error.raw or "")
        # Whatever happened, the provider recovers (reconnecting after a reset).
        server.profiles.set({}, "apns")
        assert (await provider.send(delivery())).status == 200
    finally:
        await provider.close()


async def test_expired_provider_token_is_renewed_once_and_resent(
    server: ApnsServer, provider: ApnsProvider
) -> None:
    await provider.send(delivery())
    server.expire_provider_tokens()
    assert (await provider.send(delivery())).status == 200
    assert outcomes(server) == ["200", "403", "200"]
    tokens = [r.meta["provider-token"] for r in server.recorder.records("apns")]
    assert tokens[0] == tokens[1] != tokens[2]
    # A second "expired" within 20 minutes is not met with yet another token.
    server.expire_provider_tokens()
    error = await failure(provider)
    assert (error.cause, error.provider_code) == (taxonomy.AUTH_CREDENTIALS, "ExpiredProviderToken")
    assert "clock" in error.detail and provider.tokens.issued == 2


async def test_always_expired_gives_auth_after_one_renewal(
    server: ApnsServer, provider: ApnsProvider
) -> None:
    server.profiles.set(rate("401"), "apns")  # the fake's 401 is 403 ExpiredProviderToken
    error = await failure(provider)
    assert error.cause is taxonomy.AUTH_CREDENTIALS
    assert outcomes(server) == ["403", "403"] and provider.tokens.issued == 2


async def test_the_live_check_probes_a_token_no_device_has(
    server: ApnsServer, provider: ApnsProvider
) -> None:
    """The pre-flight's live check: a silent push to the all-zero token, which APNs judges
    only after the provider token and the topic, and answers BadDeviceToken."""
    assert await provider.check() is True
    [probe] = server.recorder.records("apns")
    assert (probe.address, probe.outcome) == (PROBE_TOKEN, "400")
    assert probe.body == {"aps": {"content-available": 1}}
    assert {k: v for k, v in probe.meta.items() if k != "provider-token"} == {
        "apns-topic": "com.example.app", "apns-push-type": "background", "apns-priority": "5",
        "apns-expiration": "0"}
    # the same provider token as the sends that follow
    assert (await provider.send(delivery())).status == 200
    tokens = [r.meta["provider-token"] for r in server.recorder.records("apns")]
    assert tokens[0] == tokens[1] and provider.tokens.issued == 1


@pytest.mark.parametrize(("profile", "cause", "code"), [
    (rate("403"), "AUTH_CREDENTIALS", "InvalidProviderToken"),
    (rate("401"), "AUTH_CREDENTIALS", "ExpiredProviderToken"),
    (rate("503"), "PROVIDER_OUTAGE", "ServiceUnavailable"),
])
async def test_a_live_check_that_apns_refuses_fails_with_the_cause(
    server: ApnsServer, provider: ApnsProvider, profile: dict[str, Any], cause: str, code: str,
) -> None:
    server.profiles.set(profile, "apns")
    with pytest.raises(DeliveryError) as info:
        await provider.check()
    assert (info.value.cause.name, info.value.provider_code) == (cause, code)


async def test_the_live_check_renews_a_provider_token_called_expired(
    server: ApnsServer, provider: ApnsProvider
) -> None:
    assert await provider.check() is True
    server.expire_provider_tokens()
    assert await provider.check() is True
    assert outcomes(server) == ["400", "403", "400"] and provider.tokens.issued == 2


async def test_providers_on_one_key_share_one_provider_token(
    server: ApnsServer, provider: ApnsProvider, ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    """A pre-flight's live check builds a provider of its own: it must sign with the token
    the process already has for the key, not a new one (Apple refuses tokens renewed more
    often than every 20 minutes)."""
    await provider.send(delivery())
    probe = make(server.port, ec_key)
    other = make(server.port, ec_key, key_id="OTHER12345")
    try:
        assert probe.tokens is provider.tokens and other.tokens is not provider.tokens
        assert await probe.check() is True
    finally:
        await probe.close()
        await other.close()
    first, second = (r.meta["provider-token"] for r in server.recorder.records("apns"))
    assert first == second and provider.tokens.issued == 1


async def test_a_live_check_with_nobody_listening_fails_to_connect(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    provider = make(port, ec_key)
    try:
        with pytest.raises(DeliveryError) as info:
            await provider.check()
    finally:
        await provider.close()
    assert (info.value.cause, info.value.provider_code) == (
        taxonomy.NETWORK_TIMEOUT, "CONNECT_ERROR")


async def test_500_concurrent_sends_share_two_connections(
    server: ApnsServer, provider: ApnsProvider
) -> None:
    server.profiles.set({"latency_ms": [1, 15], "seed": 2}, "apns")
    content = {"title": "t", "body": "x" * 3000}  # 500 x 3 KB: well past the flow windows
    provider.pool.timeout = 30.0  # queued behind 500 streams on a loaded machine: not a timeout
    receipts = await asyncio.gather(
        *(provider.send(delivery(content=content, message_id=f"m{i}")) for i in range(500)))
    assert {r.status for r in receipts} == {200}
    assert server.accepted <= 2 and provider.pool.opened <= 2
    assert server.peak_streams <= 100  # the server's limit was respected, the rest queued
    assert len(set(r.provider_message_id for r in receipts)) == 500


async def test_queued_past_the_deadline_is_not_maybe_sent(
    ec_key: ec.EllipticCurvePrivateKey
) -> None:
    srv = ApnsServer(Profiles({"latency_ms": 600}), Recorder(), max_streams=1)
    port = await srv.start()
    provider = make(port, ec_key, timeout=0.3, connections=1)
    try:
        results = await asyncio.gather(provider.send(delivery()), provider.send(delivery()),
                                       return_exceptions=True)
    finally:
        await provider.close()
        await srv.stop()
    errors = sorted((e for e in results if isinstance(e, DeliveryError)),
                    key=lambda e: e.maybe_sent)
    assert [(e.provider_code, e.maybe_sent) for e in errors] == [("TIMEOUT", False),
                                                                 ("TIMEOUT", True)]
    assert "free stream" in errors[0].detail


async def test_goaway_is_followed_by_a_new_connection(
    server: ApnsServer, provider: ApnsProvider
) -> None:
    await provider.send(delivery())
    server.disconnect_all()
    await asyncio.sleep(0.05)
    assert (await provider.send(delivery())).status == 200
    assert server.accepted == 2


async def test_streams_in_flight_on_a_dropped_connection_are_maybe_sent(
    server: ApnsServer, provider: ApnsProvider
) -> None:
    server.profiles.set({"latency_ms": 1500}, "apns")
    sends = [asyncio.ensure_future(provider.send(delivery(message_id=f"m{i}"))) for i in range(5)]
    for _ in range(100):  # until all five are open on the server (a loaded machine is slow)
        if server.peak_streams >= 5:
            break
        await asyncio.sleep(0.01)
    server.disconnect_all()
    results = await asyncio.gather(*sends, return_exceptions=True)
    assert all(isinstance(r, DeliveryError) for r in results)
    errors = [r for r in results if isinstance(r, DeliveryError)]
    assert {(e.cause, e.provider_code, e.maybe_sent) for e in errors} == {
        (taxonomy.NETWORK_TIMEOUT, "CONNECTION_RESET", True)}


async def test_streams_a_goaway_left_unprocessed_are_sent_again(
    server: ApnsServer, provider: ApnsProvider
) -> None:
    server.profiles.set({"latency_ms": 300}, "apns")
    sends = [asyncio.ensure_future(provider.send(delivery(message_id=f"m{i}"))) for i in range(5)]
    await asyncio.sleep(0.1)
    server.disconnect_all(last_stream_id=0)  # "none of those were processed"
    receipts = await asyncio.gather(*sends)
    assert {r.status for r in receipts} == {200}
    assert outcomes(server) == ["200"] * 5 and server.accepted == 2


async def test_connect_refused_is_not_maybe_sent(ec_key: ec.EllipticCurvePrivateKey) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    provider = make(port, ec_key)
    try:
        error = await failure(provider)
    finally:
        await provider.close()
    assert (error.cause, error.provider_code, error.maybe_sent) == (
        taxonomy.NETWORK_TIMEOUT, "CONNECT_ERROR", False)


async def test_the_ssrf_guard_applies(server: ApnsServer,
                                      ec_key: ec.EllipticCurvePrivateKey) -> None:
    provider = make(server.port, ec_key, allow="")
    try:
        error = await failure(provider)
    finally:
        await provider.close()
    assert (error.cause, error.provider_code) == (taxonomy.VALIDATION_ERROR, "SSRF_BLOCKED")
    assert server.accepted == 0


async def test_tls_with_alpn_h2(tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "apns-sandbox")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_text(pem(key))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_path, key_path)
    srv = ApnsServer(Profiles(), Recorder(), ssl_context=server_ctx)
    await srv.start()
    pool = H2Pool(f"https://127.0.0.1:{srv.port}", guard=OutboundGuard.from_env("127.0.0.1"),
                  ssl_context=ssl.create_default_context(cafile=str(cert_path)))
    token = ProviderToken(TEAM, KEY_ID, ec_key).current()
    headers = {"authorization": f"bearer {token}", "apns-topic": "com.example.app"}
    try:
        resp = await pool.request("POST", f"/3/device/{DEVICE}", headers, b'{"aps":{}}')
    finally:
        await pool.close()
        await srv.stop()
    assert resp.status == 200 and uuid.UUID(resp.headers["apns-id"])


# -- the provider token ---------------------------------------------------------------------------


async def test_a_lagging_clock_ends_in_auth_with_a_hint(
    server: ApnsServer, provider: ApnsProvider, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    # The fake, like APNs, calls a token whose iat is over an hour old expired.
    provider.tokens = ProviderToken(TEAM, KEY_ID, ec_key, clock=lambda: time.time() - 7200)
    error = await failure(provider)
    assert (error.cause, error.provider_code) == (taxonomy.AUTH_CREDENTIALS, "ExpiredProviderToken")
    assert "clock" in error.detail and outcomes(server) == ["403", "403"]



def test_provider_token_lifetime(ec_key: ec.EllipticCurvePrivateKey) -> None:
    now = [1_000_000.0]
    tokens = ProviderToken(TEAM, KEY_ID, ec_key, clock=lambda: now[0])
    first = tokens.current()
    now[0] += TOKEN_LIFETIME - 1
    assert tokens.current() == first
    now[0] += 1
    second = tokens.current()
    assert second != first and 20 * 60 <= TOKEN_LIFETIME <= 50 * 60
    assert tokens.renew(first) is True and tokens.current() == second  # someone else renewed
    assert tokens.renew(second) is True
    third = tokens.current()
    now[0] += MIN_RENEWAL_INTERVAL - 1
    assert tokens.renew(third) is False and tokens.current() == third
    now[0] += 1
    assert tokens.renew(third) is True and tokens.issued == 4


# -- options --------------------------------------------------------------------------------------


def options(key: Any, **extra: Any) -> ProviderConfig:
    opts = {"team_id": TEAM, "key_id": KEY_ID, "private_key": pem(key), "topic": "com.x.app",
            **extra}
    return ProviderConfig("ios", "apns", opts)


def test_check_options(ec_key: ec.EllipticCurvePrivateKey, tmp_path: Any,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert ApnsProvider.check_options(options(ec_key), location="p") == []
    path = tmp_path / "AuthKey.p8"
    path.write_text(pem(ec_key))
    assert ApnsProvider.check_options(options(ec_key, private_key=str(path)), location="p") == []
    monkeypatch.setenv("APNS_KEY", pem(ec_key))
    assert ApnsProvider.check_options(options(ec_key, private_key="env:APNS_KEY"),
                                      location="p") == []
    bad = options(ec_key, team_id="team", environment="staging", connections=0,
                  base_url="ftp://x", topic="")
    locations = {e.location for e in ApnsProvider.check_options(bad, location="p")}
    assert locations == {"p.team_id", "p.environment", "p.connections", "p.base_url", "p.topic"}
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    [error] = ApnsProvider.check_options(options(rsa_key), location="p")
    assert "EC P-256" in error.message and "PRIVATE KEY" not in str(error)


async def test_describe_masks_the_key(provider: ApnsProvider) -> None:
    assert provider.describe()["options"]["private_key"] == "***"


# -- content validated at intake --------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        {"title": "t"},
        {"badge": 0},
        {"content_available": True},
        {"data": {"k": [1, 2]}},
        {"sound": {"critical": 1, "name": "alarm.caf", "volume": 1.0}, "body": "b"},
        {"body": "b", "collapse_id": "c" * 64, "thread_id": "t", "category": "c"},
        {"body": "x" * 4050},
        {"data": {"x": "y" * 5080}, "push_type": "voip"},
        {"aps": {"interruption-level": "time-sensitive"}, "title": "t", "mutable_content": True},
    ],
)
def test_valid_content(content: dict[str, Any]) -> None:
    ApnsProvider.validate_content("apns", content)


@pytest.mark.parametrize(
    ("content", "field", "words"),
    [
        ({}, "content", "title or body"),
        ({"text": "hi"}, "content.text", "not an APNs content field"),
        ({"body": "x" * 4100}, "content", "limit is 4096 for alert"),
        ({"data": {"x": "y" * 5200}, "push_type": "voip"}, "content", "limit is 5120 for voip"),
        ({"body": "b", "collapse_id": "é" * 33}, "content.collapse_id", "64 bytes"),
        ({"body": "b", "topic": "com.x\r\napns-topic: evil"}, "content.topic", "line break"),
        ({"data": {"aps": {}}}, "content.data.aps", "reserved"),
        ({"badge": -1}, "content.badge", "whole number"),
        ({"badge": True}, "content.badge", "whole number"),
        ({"body": "b", "collapse_id": " x"}, "content.collapse_id", "whitespace"),
        ({"body": "b", "push_type": "fax"}, "content.push_type", "one of"),
        ({"title": 3}, "content.title", "non-empty string"),
        ({"data": "x"}, "content.data", "object"),
    ],
)
def test_invalid_content(content: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(InputError) as info:
        ApnsProvider.validate_content("apns", content)
    assert info.value.field == field and words in info.value.problem


async def test_content_that_slipped_past_intake_is_content_rejected(
    server: ApnsServer, provider: ApnsProvider
) -> None:
    error = await failure(provider, delivery(content={"body": "x" * 5000}))
    assert (error.cause, error.provider_code) == (taxonomy.CONTENT_REJECTED, "INVALID_CONTENT")
    assert outcomes(server) == []


# -- the classifier ------------------------------------------------------------------------------


def answer(status: int, reason: str | None = None, body: bytes | None = None,
           **headers: str) -> H2Response:
    if body is None:
        doc: dict[str, Any] = {"reason": reason} if reason else {}
        if status == 410:
            doc["timestamp"] = 1_700_000_000_000
        body = json.dumps(doc).encode() if doc else b""
    return H2Response(status, {":status": str(status), **headers}, body)


@pytest.mark.parametrize(
    ("status", "reason", "cause"),
    [
        (400, "BadDeviceToken", "INVALID_RECIPIENT"),
        (400, "DeviceTokenNotForTopic", "INVALID_RECIPIENT"),
        (400, "MissingDeviceToken", "INVALID_RECIPIENT"),
        *[(400, r, "CONTENT_REJECTED") for r in (
            "BadCollapseId", "BadExpirationDate", "BadMessageId", "BadPriority",
            "DuplicateHeaders", "PayloadEmpty", "InvalidPushType", "SomethingNew")],
        (400, "BadTopic", "SENDER_CONFIG"),
        (400, "TopicDisallowed", "SENDER_CONFIG"),
        (400, "MissingTopic", "SENDER_CONFIG"),
        (400, "IdleTimeout", "NETWORK_TIMEOUT"),
        *[(403, r, "AUTH_CREDENTIALS") for r in (
            "ExpiredProviderToken", "InvalidProviderToken", "MissingProviderToken",
            "BadCertificate", "BadCertificateEnvironment", "Forbidden", "UnrelatedKeyIdInToken",
            "BadEnvironmentKeyIdInToken")],
        (404, "BadPath", "SENDER_CONFIG"),
        (405, "MethodNotAllowed", "SENDER_CONFIG"),
        (410, "Unregistered", "UNREGISTERED_TOKEN"),
        (410, "ExpiredToken", "UNREGISTERED_TOKEN"),
        (413, "PayloadTooLarge", "CONTENT_REJECTED"),
        (429, "TooManyRequests", "RATE_LIMITED"),
        (429, "TooManyProviderTokenUpdates", "AUTH_CREDENTIALS"),
        (500, "InternalServerError", "PROVIDER_OUTAGE"),
        (503, "ServiceUnavailable", "PROVIDER_OUTAGE"),
        (503, "Shutdown", "PROVIDER_OUTAGE"),
        (418, "Teapot", "UNKNOWN"),
        (410, None, "UNKNOWN"),
    ],
)
def test_classify_reasons(status: int, reason: str | None, cause: str) -> None:
    error = classify(answer(status, reason), environment="production")
    assert error is not None
    assert (error.cause.name, error.status) == (cause, status)
    assert error.provider_code == (reason or f"HTTP {status}")
    if cause == "UNREGISTERED_TOKEN":
        assert error.extra == {"unregistered_at_ms": 1_700_000_000_000}
    if reason == "TooManyRequests":
        assert error.scope == "device"
    if reason == "BadDeviceToken":
        assert "production environment" in error.detail and "sandbox" in error.detail


def test_classify_retry_after_and_garbage() -> None:
    error = classify(answer(503, "ServiceUnavailable", **{"retry-after": "12"}))
    assert error is not None and error.retry_after == 12.0
    error = classify(answer(502, body=b"<html>Bad Gateway</html>"))
    assert error is not None and error.cause is taxonomy.PROVIDER_OUTAGE
    error = classify(answer(400, body=b"\x00garbage"))
    assert error is not None and error.cause is taxonomy.UNKNOWN and error.raw == "\x00garbage"
    error = classify(answer(413, body=b""))
    assert error is not None and error.cause is taxonomy.CONTENT_REJECTED
    assert classify(answer(200)) is None
