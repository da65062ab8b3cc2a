"""The Web Push provider against the sandbox push service: the payload decrypts with the
subscription's own keys, the VAPID JWT verifies, and every push-service answer maps to the
right cause."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from multidict import CIMultiDict, CIMultiDictProxy

from pushguard import taxonomy
from pushguard.addresses import normalize_address
from pushguard.config import ProviderConfig
from pushguard.exceptions import ConfigError, DeliveryError, InputError
from pushguard.providers.base import Delivery, ProviderContext
from pushguard.providers.httpclient import Response
from pushguard.providers.webpush import (
    MAX_PLAINTEXT,
    MAX_TTL,
    WebPushProvider,
    classify,
    origin_of,
)
from pushguard.sandbox import Sandbox
from pushguard.settings import Settings
from pushguard.ssrf import OutboundGuard

SUBJECT = "mailto:ops@example.com"
GUARD = OutboundGuard.from_env("127.0.0.1")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_private(key: ec.EllipticCurvePrivateKey) -> str:
    return b64(key.private_numbers().private_value.to_bytes(32, "big"))


def raw_public(key: ec.EllipticCurvePrivateKey) -> str:
    return b64(key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))


@dataclass
class Browser:
    """A browser's side of one subscription, registered with the sandbox push service."""

    name: str
    to: str


async def subscribe(sb: Sandbox, name: str, server_key: str | None) -> Browser:
    key = ec.generate_private_key(ec.SECP256R1())
    auth = os.urandom(16)
    body: dict[str, Any] = {"private_key": raw_private(key), "auth": b64(auth)}
    if server_key is not None:
        body["application_server_key"] = server_key
    async with aiohttp.ClientSession() as http, http.put(
        f"{sb.http_url}/_sandbox/webpush/subscriptions/{name}", json=body
    ) as resp:
        assert resp.status == 200
    sub = {"endpoint": f"{sb.http_url}/webpush/{name}",
           "keys": {"p256dh": raw_public(key), "auth": b64(auth)}}
    to = normalize_address("webpush", json.dumps(sub), guard=GUARD)
    return Browser(name, to)


def make_provider(key: str | None = None, *, timeout: float = 2.0, **options: Any
                  ) -> WebPushProvider:
    opts = {"vapid_private_key": key, "vapid_subject": SUBJECT, **options}
    return WebPushProvider(
        ProviderConfig("push", "webpush", opts, timeout=timeout),
        ProviderContext(Settings(outbound_allow="127.0.0.1"), GUARD),
    )


def delivery(to: str, content: dict[str, Any] | None = None, *, priority: int = 1,
             expires_in: float = 3600.0) -> Delivery:
    return Delivery("msg-1", "webpush", to, content if content is not None else {"title": "Hi"},
                    None, 1, priority, time.time() + expires_in)


@pytest.fixture
def vapid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(profiles={"seed": 1, "timeout_s": 5}) as sb:
        yield sb


@pytest.fixture
async def provider(vapid_key: ec.EllipticCurvePrivateKey) -> AsyncIterator[WebPushProvider]:
    p = make_provider(raw_private(vapid_key), timeout=0.5)
    await p.start()
    yield p
    await p.close()


def verify_jwt(token: str, public_key: str) -> dict[str, Any]:
    """ES256 checked with cryptography alone, independently of py_vapid."""
    signing_input, _, sig = token.rpartition(".")
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    der = utils.encode_dss_signature(int.from_bytes(raw[:32], "big"),
                                     int.from_bytes(raw[32:], "big"))
    point = base64.urlsafe_b64decode(public_key + "=" * (-len(public_key) % 4))
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point).verify(
        der, signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    header, claims = (json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
                      for p in signing_input.split("."))
    assert header == {"typ": "JWT", "alg": "ES256"}
    return dict(claims)


async def test_payload_decrypts_for_the_browser_and_vapid_verifies(
    sandbox: Sandbox, provider: WebPushProvider, vapid_key: ec.EllipticCurvePrivateKey
) -> None:
    browser = await subscribe(sandbox, "sub-ok", raw_public(vapid_key))
    content = {"title": "Hi", "body": "Ünïcode ✓", "url": "/inbox", "data": {"n": 1},
               "topic_key": "inbox-1"}
    receipt = await provider.send(delivery(browser.to, content, priority=0, expires_in=120))
    assert receipt.status == 201
    assert receipt.provider_message_id and receipt.provider_message_id.startswith("/webpush/")
    (record,) = sandbox.recorder.records("webpush")
    assert record.outcome == "201"
    meta = record.meta
    assert meta["payload"] == {k: v for k, v in content.items() if k != "topic_key"}
    assert meta["urgency"] == "high" and meta["topic"] == "inbox-1"
    assert 115 <= meta["ttl"] <= 120
    claims = meta["vapid"]
    assert claims["aud"] == sandbox.http_url and claims["sub"] == SUBJECT
    assert time.time() < claims["exp"] <= time.time() + 24 * 3600


def test_authorization_header_verifies_independently(vapid_key: ec.EllipticCurvePrivateKey
                                                     ) -> None:
    p = make_provider(raw_private(vapid_key))
    sub = {"endpoint": "https://push.example.net:8443/w/abc",
           "keys": {"p256dh": raw_public(ec.generate_private_key(ec.SECP256R1())),
                    "auth": b64(os.urandom(16))}}
    now = time.time()
    _, body, headers = p.render(delivery(json.dumps(sub), expires_in=10 * MAX_TTL), now)
    assert len(body) <= 4096 and headers["Content-Encoding"] == "aes128gcm"
    assert headers["TTL"] == str(MAX_TTL) and headers["Urgency"] == "normal"
    assert "Topic" not in headers
    scheme, _, params = headers["Authorization"].partition(" ")
    parts = dict(x.strip().split("=", 1) for x in params.split(","))
    assert scheme == "vapid" and parts["k"] == raw_public(vapid_key)
    claims = verify_jwt(parts["t"], parts["k"])
    assert claims["aud"] == "https://push.example.net:8443" and claims["sub"] == SUBJECT
    assert now < claims["exp"] <= now + 24 * 3600
    # One token per origin, reused; a different origin gets its own.
    assert p.render(delivery(json.dumps(sub)), now + 60)[2]["Authorization"] == \
        headers["Authorization"]
    sub["endpoint"] = "https://other.example.net/w/abc"
    assert p.render(delivery(json.dumps(sub)), now)[2]["Authorization"] != \
        headers["Authorization"]


@pytest.mark.parametrize(("priority", "urgency"), [(0, "high"), (1, "normal"), (2, "low")])
def test_urgency_follows_priority(priority: int, urgency: str,
                                  vapid_key: ec.EllipticCurvePrivateKey) -> None:
    sub = {"endpoint": "https://push.example.net/w/1",
           "keys": {"p256dh": raw_public(vapid_key), "auth": b64(os.urandom(16))}}
    headers = make_provider(raw_private(vapid_key), ttl=600).render(
        delivery(json.dumps(sub), priority=priority))[2]
    assert headers["Urgency"] == urgency and headers["TTL"] == "600"


async def test_largest_payload_fits_one_record(
    sandbox: Sandbox, provider: WebPushProvider, vapid_key: ec.EllipticCurvePrivateKey
) -> None:
    browser = await subscribe(sandbox, "sub-big", raw_public(vapid_key))
    filler = "x" * (MAX_PLAINTEXT - len(json.dumps({"body": ""}, separators=(",", ":"))))
    WebPushProvider.validate_content("webpush", {"body": filler})
    assert (await provider.send(delivery(browser.to, {"body": filler}))).status == 201
    assert sandbox.recorder.records("webpush")[0].meta["payload"] == {"body": filler}
    with pytest.raises(InputError) as info:
        WebPushProvider.validate_content("webpush", {"body": filler + "y"})
    assert info.value.field == "content"


async def test_wrong_vapid_key_is_an_auth_failure_and_resigns(
    sandbox: Sandbox, provider: WebPushProvider
) -> None:
    other = raw_public(ec.generate_private_key(ec.SECP256R1()))
    browser = await subscribe(sandbox, "sub-other-key", other)
    origin = origin_of(json.loads(browser.to)["endpoint"])
    first = provider.signer.header(origin, time.time())
    with pytest.raises(DeliveryError) as info:
        await provider.send(delivery(browser.to))
    assert info.value.cause is taxonomy.AUTH_CREDENTIALS and info.value.status == 403
    assert "applicationServerKey" in (info.value.raw or "")
    assert provider.signer.header(origin, time.time()) != first  # not the cached token


FAULTS = [
    ("400", taxonomy.CONTENT_REJECTED, 400, {}),
    ("401", taxonomy.AUTH_CREDENTIALS, 401, {}),
    ("403", taxonomy.AUTH_CREDENTIALS, 403, {}),
    ("404", taxonomy.UNREGISTERED_TOKEN, 404, {}),
    ("410", taxonomy.UNREGISTERED_TOKEN, 410, {}),
    ("invalid", taxonomy.UNREGISTERED_TOKEN, 404, {}),
    ("413", taxonomy.CONTENT_REJECTED, 413, {}),
    ("429", taxonomy.RATE_LIMITED, 429, {"retry_after": 2.0, "scope": "provider"}),
    ("500", taxonomy.PROVIDER_OUTAGE, 500, {}),
    ("503", taxonomy.PROVIDER_OUTAGE, 503, {"retry_after": 2.0}),
    ("html", taxonomy.PROVIDER_OUTAGE, 502, {}),
    ("timeout", taxonomy.NETWORK_TIMEOUT, None, {"maybe_sent": True}),
    ("reset", taxonomy.NETWORK_TIMEOUT, None, {"maybe_sent": True}),
]


@pytest.mark.parametrize(("fault", "cause", "status", "extra"), FAULTS,
                         ids=[f[0] for f in FAULTS])
async def test_push_service_faults(
    sandbox: Sandbox, provider: WebPushProvider, vapid_key: ec.EllipticCurvePrivateKey,
    fault: str, cause: taxonomy.Cause, status: int | None, extra: dict[str, Any],
) -> None:
    browser = await subscribe(sandbox, f"sub-{fault}", raw_public(vapid_key))
    sandbox.set_profile({"rates": {fault: 1.0}, "retry_after": 2, "timeout_s": 5}, "webpush")
    with pytest.raises(DeliveryError) as info:
        await provider.send(delivery(browser.to))
    err = info.value
    assert (err.cause, err.status) == (cause, status)
    for name, value in extra.items():
        assert getattr(err, name) == value
    # The checks before the fault passed: the fake verified VAPID on every request.
    assert "vapid" in sandbox.recorder.records("webpush")[-1].meta


async def test_dead_subscription_is_unregistered(
    sandbox: Sandbox, provider: WebPushProvider
) -> None:
    browser = await subscribe(sandbox, "dead-sub", None)
    with pytest.raises(DeliveryError) as info:
        await provider.send(delivery(browser.to))
    assert info.value.cause is taxonomy.UNREGISTERED_TOKEN and info.value.status == 410


async def test_endpoint_outside_the_allow_list_is_refused(provider: WebPushProvider) -> None:
    sub = {"endpoint": "http://169.254.169.254/latest",
           "keys": {"p256dh": raw_public(ec.generate_private_key(ec.SECP256R1())),
                    "auth": b64(os.urandom(16))}}
    with pytest.raises(DeliveryError) as info:
        await provider.send(delivery(json.dumps(sub)))
    assert info.value.cause is taxonomy.VALIDATION_ERROR


def test_bad_subscription_key_is_an_invalid_recipient(provider: WebPushProvider) -> None:
    sub = {"endpoint": "https://push.example.net/w/1",
           "keys": {"p256dh": b64(b"\x04" + b"\x01" * 64), "auth": b64(os.urandom(16))}}
    with pytest.raises(DeliveryError) as info:
        provider.render(delivery(json.dumps(sub)))
    assert info.value.cause is taxonomy.INVALID_RECIPIENT


def response(status: int, body: bytes = b"", content_type: str = "application/json",
             **headers: str) -> Response:
    h = CIMultiDict({"Content-Type": content_type, **headers})
    return Response(status, CIMultiDictProxy(h), body, 0.01)


FCM_UNAUTHORIZED = (b"<HTML>\n<HEAD>\n<TITLE>UnauthorizedRegistration</TITLE>\n</HEAD>\n"
                    b"<BODY BGCOLOR=\"#FFFFFF\" TEXT=\"#000000\">\n<H1>UnauthorizedRegistration"
                    b"</H1>\n<H2>Error 400</H2>\n</BODY>\n</HTML>\n")
AUTOPUSH_GONE = (b'{"code": 410, "errno": 106, "error": "Gone", "message": "Request did not '
                 b'validate No Subscription found", "more_info": '
                 b'"http://autopush.readthedocs.io/en/latest/http.html#error-codes"}')


@pytest.mark.parametrize(("resp", "cause"), [
    (response(201, Location="https://fcm.googleapis.com/0:1"), None),
    (response(202), None),
    (response(400, FCM_UNAUTHORIZED, "text/html"), taxonomy.AUTH_CREDENTIALS),
    (response(400, b'{"code":400,"errno":109,"error":"Unauthorized"}'),
     taxonomy.AUTH_CREDENTIALS),
    (response(400, b'{"code":400,"errno":111,"message":"Missing TTL header"}'),
     taxonomy.CONTENT_REJECTED),
    (response(400, b"<html>blocked</html>", "text/html"), taxonomy.UNKNOWN),
    (response(403, b'{"reason":"BadJwtToken"}'), taxonomy.AUTH_CREDENTIALS),
    (response(410, AUTOPUSH_GONE), taxonomy.UNREGISTERED_TOKEN),
    (response(410, b'{"reason":"Unregistered"}'), taxonomy.UNREGISTERED_TOKEN),
    (response(404, b'{"code":404,"errno":102}'), taxonomy.UNREGISTERED_TOKEN),
    (response(413, b""), taxonomy.CONTENT_REJECTED),
    (response(301, Location="https://elsewhere"), taxonomy.UNKNOWN),
    (response(502, b"<html>Bad Gateway</html>", "text/html"), taxonomy.PROVIDER_OUTAGE),
])
def test_classify(resp: Response, cause: taxonomy.Cause | None) -> None:
    error = classify(resp)
    assert (error.cause if error else None) is cause
    if error is not None:
        assert error.provider_code == f"HTTP {resp.status}" and error.raw == resp.text


def test_classify_retry_hints() -> None:
    limited = classify(response(429, b"", **{"Retry-After": "30"}))
    assert limited is not None and (limited.retry_after, limited.scope) == (30.0, "provider")
    gateway = classify(response(504, b""))
    assert gateway is not None and gateway.cause is taxonomy.PROVIDER_OUTAGE
    assert gateway.maybe_sent


@pytest.mark.parametrize(("content", "field"), [
    ({"title": 1}, "content.title"),
    ({"body": ["x"]}, "content.body"),
    ({"data": "x"}, "content.data"),
    ({"topic_key": "x" * 33}, "content.topic_key"),
    ({"topic_key": "has space"}, "content.topic_key"),
    ({"topic_key": ""}, "content.topic_key"),
])
def test_validate_content_refuses(content: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as info:
        WebPushProvider.validate_content("webpush", content)
    assert info.value.field == field


def test_validate_content_accepts() -> None:
    WebPushProvider.validate_content("webpush", {})
    WebPushProvider.validate_content("webpush", {"title": "t", "topic_key": "A-z_09" * 5 + "ab",
                                                 "data": {"any": [1, 2]}, "badge": "/b.png"})


def pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def test_key_formats_and_env_reference(vapid_key: ec.EllipticCurvePrivateKey,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    expected = raw_public(vapid_key)
    assert make_provider(pem(vapid_key)).signer.public_key == expected
    monkeypatch.setenv("VAPID_TEST_KEY", raw_private(vapid_key))
    provider = make_provider("env:VAPID_TEST_KEY")
    assert provider.signer.public_key == expected
    assert provider.describe()["options"]["vapid_private_key"] == "***"


@pytest.mark.parametrize(("options", "location"), [
    ({"vapid_subject": SUBJECT}, "vapid_private_key"),
    ({"vapid_private_key": "bm90IGEga2V5", "vapid_subject": SUBJECT}, "vapid_private_key"),
    ({"vapid_private_key": pem(ec.generate_private_key(ec.SECP384R1())),
      "vapid_subject": SUBJECT}, "vapid_private_key"),
    ({"vapid_private_key": "env:VAPID_UNSET_FOR_TEST", "vapid_subject": SUBJECT},
     "vapid_private_key"),
    ({"vapid_private_key": "x"}, "vapid_subject"),
    ({"vapid_private_key": "x", "vapid_subject": "ops@example.com"}, "vapid_subject"),
    ({"vapid_private_key": "x", "vapid_subject": "mailto:me@localhost"}, "vapid_subject"),
])
def test_check_options(options: dict[str, Any], location: str) -> None:
    config = ProviderConfig("push", "webpush", options)
    (problem,) = WebPushProvider.check_options(config, location="providers.push")
    assert isinstance(problem, ConfigError)
    assert problem.location.startswith(f"providers.push.{location}")
    assert "BEGIN" not in str(problem)


def test_check_options_accepts_a_good_key(vapid_key: ec.EllipticCurvePrivateKey) -> None:
    config = ProviderConfig("push", "webpush", {"vapid_private_key": raw_private(vapid_key),
                                                "vapid_subject": "https://example.com/contact"})
    assert WebPushProvider.check_options(config, location="providers.push") == []
    with pytest.raises(ConfigError):
        make_provider(raw_private(vapid_key), ttl=MAX_TTL + 1)


def test_breaker_per_push_service(provider: WebPushProvider) -> None:
    def to(endpoint: str) -> str:
        return json.dumps({"endpoint": endpoint, "keys": {"p256dh": "x", "auth": "y"}})

    a = provider.breaker_key(delivery(to("https://fcm.googleapis.com/fcm/send/a")))
    b = provider.breaker_key(delivery(to("https://fcm.googleapis.com:443/fcm/send/b")))
    c = provider.breaker_key(delivery(to("https://updates.push.services.mozilla.com/wpush/v2/c")))
    assert a == b == "push:https://fcm.googleapis.com" and c != a


async def test_fake_refuses_a_body_it_cannot_decrypt(
    sandbox: Sandbox, provider: WebPushProvider, vapid_key: ec.EllipticCurvePrivateKey
) -> None:
    browser = await subscribe(sandbox, "sub-rotated", raw_public(vapid_key))
    sub = json.loads(browser.to)
    sub["keys"]["auth"] = b64(os.urandom(16))  # not the secret the browser holds
    with pytest.raises(DeliveryError) as info:
        await provider.send(delivery(json.dumps(sub)))
    assert info.value.status == 400 and "decrypt" in (info.value.raw or "")
