"""A fake Web Push service (RFC 8030) with Mozilla autopush's JSON error shape.

It checks what a push service must check before the subscription matters: a VAPID
``Authorization`` header, the mandatory ``TTL`` header, a valid ``Urgency`` and ``Topic``, and
the 4096-byte body floor below which RFC 8030 forbids a 413.

A subscription can be *registered* with the browser side of its keys (``PUT
/_sandbox/webpush/subscriptions/{subscription}`` with ``{"private_key": <base64url of the raw
32-byte P-256 key>, "auth": <base64url>, "application_server_key"?: <base64url>}``). Requests
to a registered subscription are then checked like a real push service checks a restricted
subscription (RFC 8292: the JWT's ES256 signature, ``aud`` equal to this service's origin,
``exp`` in the next 24 hours, a ``mailto:``/``https:`` ``sub``, and ``k`` equal to the
application server key; 403 when any fails) and, unlike a real one, decrypted as the browser
would (RFC 8291, aes128gcm): a body that does not decrypt gets a 400, and the record's ``meta``
carries the decrypted ``payload`` and the verified ``vapid`` claims.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import http_ece
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import jwt as vapid_jwt

from pushguard.sandbox.faulting import json_response, note, respond
from pushguard.sandbox.profile import Fault

MAX_BODY = 4096
#: RFC 8292 §2: exp at most 24 hours after the request; a minute of leeway for clock steps.
MAX_EXP_AHEAD = 24 * 3600 + 60
URGENCIES = frozenset({"very-low", "low", "normal", "high"})
_TOPIC = re.compile(r"[A-Za-z0-9_\-]{1,32}\Z")
MORE_INFO = "https://mozilla-services.github.io/autopush-rs/errors.html"

# status -> (autopush errno, error phrase)
_ERRORS: dict[int, tuple[int, str]] = {
    400: (101, "Bad Request"),
    401: (109, "Unauthorized"),
    403: (109, "Forbidden"),
    404: (102, "Not Found"),
    410: (106, "Gone"),
    413: (104, "Payload Too Large"),
    429: (999, "Too Many Requests"),
    500: (999, "Internal Server Error"),
    502: (999, "Bad Gateway"),
    503: (201, "Service Unavailable"),
}


def error_response(status: int, message: str) -> web.Response:
    """An autopush-style error document."""
    errno, phrase = _ERRORS.get(status, (999, "Error"))
    body = {
        "code": status,
        "errno": errno,
        "error": phrase,
        "message": message,
        "more_info": MORE_INFO,
    }
    return json_response(status, json.dumps(body).encode())


@dataclass(frozen=True)
class SubscriptionKeys:
    """The browser's side of one subscription: what it needs to decrypt and to trust."""

    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    #: the applicationServerKey (VAPID public key) the subscription was made with, if any
    server_key: str | None = None


@dataclass
class Subscriptions:
    """Registered subscriptions by name; one per application, never global."""

    keys: dict[str, SubscriptionKeys] = field(default_factory=dict)


SUBSCRIPTIONS = web.AppKey("pushguard_sandbox_webpush_subscriptions", Subscriptions)


def add_routes(app: web.Application) -> None:
    """Register the push-service route and the subscription registry."""
    app[SUBSCRIPTIONS] = Subscriptions()
    app.router.add_post("/webpush/{subscription}", _push)
    app.router.add_put("/_sandbox/webpush/subscriptions/{subscription}", _register)


def _b64(value: str) -> bytes:
    value = value.replace("+", "-").replace("/", "_").rstrip("=")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


async def _register(request: web.Request) -> web.Response:
    try:
        data: Any = await request.json()
        raw_key = _b64(str(data["private_key"]))
        if len(raw_key) != 32:
            raise ValueError("private_key must be the raw 32-byte P-256 key")
        key = ec.derive_private_key(int.from_bytes(raw_key, "big"), ec.SECP256R1())
        auth = _b64(str(data["auth"]))
        server_key = data.get("application_server_key")
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        return web.json_response({"error": f"bad registration: {exc}"}, status=400)
    name = request.match_info["subscription"]
    request.app[SUBSCRIPTIONS].keys[name] = SubscriptionKeys(
        key, auth, None if server_key is None else str(server_key).rstrip("=")
    )
    return web.json_response({"ok": True})


def verify_vapid(header: str, origin: str, server_key: str | None, now: float) -> dict[str, Any]:
    """The claims of a valid ``vapid t=..., k=...`` header, else ``ValueError`` saying why."""
    scheme, _, params = header.partition(" ")
    if scheme.lower() != "vapid":
        raise ValueError(f"scheme {scheme!r} is not 'vapid' (RFC 8292)")
    parts = dict(p.strip().partition("=")[::2] for p in params.split(","))
    token, key = parts.get("t", ""), parts.get("k", "").rstrip("=")
    if not token or not key:
        raise ValueError("t= and k= are both required")
    if server_key is not None and key != server_key:
        raise ValueError("k is not the applicationServerKey of this subscription")
    try:
        jose = json.loads(_b64(token.split(".")[0]))
        claims: dict[str, Any] = vapid_jwt.decode(token, key)
    except (InvalidSignature, ValueError, binascii.Error) as exc:
        raise ValueError("the JWT signature does not verify with k") from exc
    if jose.get("alg") != "ES256":
        raise ValueError(f"JWT alg is {jose.get('alg')!r}, not ES256")
    if claims.get("aud") != origin:
        raise ValueError(f"aud {claims.get('aud')!r} is not this push service ({origin})")
    exp = claims.get("exp")
    if not isinstance(exp, int) or not now < exp <= now + MAX_EXP_AHEAD:
        raise ValueError(f"exp {exp!r} is not within the next 24 hours")
    if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
        raise ValueError("sub must be a mailto: or https: contact")
    return claims


def _check_known(
    request: web.Request, keys: SubscriptionKeys, raw: bytes, meta: dict[str, Any]
) -> web.Response | None:
    """Check a registered subscription's VAPID and decrypt its payload into ``meta``."""
    subscription = request.match_info["subscription"]
    try:
        origin = str(request.url.origin())
        auth = request.headers.get("Authorization", "")
        meta["vapid"] = verify_vapid(auth, origin, keys.server_key, time.time())
    except ValueError as exc:
        note(request, "webpush", subscription, raw, "403", {**meta, "error": str(exc)})
        return error_response(403, f"Invalid VAPID credentials: {exc}")
    encoding = request.headers.get("Content-Encoding", "")
    try:
        if encoding != "aes128gcm":
            raise ValueError(f"Content-Encoding {encoding!r} is not aes128gcm")
        plain = http_ece.decrypt(
            raw, private_key=keys.private_key, auth_secret=keys.auth, version="aes128gcm"
        )
    except (ValueError, http_ece.ECEException) as exc:
        note(request, "webpush", subscription, raw, "400", {**meta, "error": str(exc)})
        return error_response(400, f"sandbox: the body does not decrypt: {exc}")
    try:
        meta["payload"] = json.loads(plain)
    except ValueError:
        meta["payload"] = plain.decode("utf-8", "replace")
    return None


async def _push(request: web.Request) -> web.Response:
    subscription = request.match_info["subscription"]
    raw = await request.read()
    auth = request.headers.get("Authorization", "")
    if not auth.lower().startswith(("vapid ", "webpush ")):
        note(request, "webpush", subscription, raw, "401", {"error": "missing vapid"})
        return error_response(401, "Missing or malformed VAPID Authorization header")
    ttl = request.headers.get("TTL", "")
    if not ttl.isdigit():
        note(request, "webpush", subscription, raw, "400", {"error": "missing TTL"})
        return error_response(400, "Missing TTL header")
    urgency, topic = request.headers.get("Urgency"), request.headers.get("Topic")
    meta: dict[str, Any] = {"ttl": int(ttl), "urgency": urgency, "topic": topic}
    if urgency is not None and urgency not in URGENCIES:
        note(request, "webpush", subscription, raw, "400", {**meta, "error": "bad Urgency"})
        return error_response(400, f"Invalid Urgency header {urgency!r}")
    if topic is not None and not _TOPIC.match(topic):
        note(request, "webpush", subscription, raw, "400", {**meta, "error": "bad Topic"})
        return error_response(400, "Topic must be at most 32 base64url characters")
    if len(raw) > MAX_BODY:
        note(request, "webpush", subscription, raw, "413", {"error": "too large"})
        return error_response(413, f"Body of {len(raw)} bytes exceeds {MAX_BODY}")
    keys = request.app[SUBSCRIPTIONS].keys.get(subscription)
    if keys is not None:
        refused = _check_known(request, keys, raw, meta)
        if refused is not None:
            return refused

    def render(fault: Fault) -> web.Response:
        if fault.kind == "ok":
            resp = web.Response(status=201)
            resp.headers["Location"] = f"/webpush/messages/{secrets.token_hex(12)}"
            resp.headers["TTL"] = ttl
            return resp
        if fault.reason == "invalid":
            return error_response(404, "Request did not validate: invalid token")
        if fault.reason == "gone":
            return error_response(410, "Subscription has expired or was unsubscribed")
        return error_response(fault.status, f"push service error {fault.status}")

    return await respond(request, "webpush", subscription, raw, render, meta=meta)
