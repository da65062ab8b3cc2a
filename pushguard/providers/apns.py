"""Apple Push Notification service: the HTTP/2 provider API with token (JWT) authentication.

One ``POST /3/device/{token}`` per message over a few long-lived HTTP/2 connections
(:mod:`pushguard.providers.h2client`). The ``apns-id`` is a UUID derived from the message id,
so every retry of a message carries the same id. The ES256 provider token is reused for 40
minutes: Apple rejects tokens older than an hour and answers ``TooManyProviderTokenUpdates``
to tokens renewed more often than every 20 minutes, so a 403 ``ExpiredProviderToken`` renews
it early at most once per 20 minutes (and the request is then sent once more).

Content (``channel = "apns"``): ``title``, ``subtitle``, ``body``, ``badge`` (int), ``sound``
(name or dict), ``content_available``/``mutable_content`` (bool), ``category``, ``thread_id``,
``aps`` (more ``aps`` keys), ``data`` (custom top-level keys), ``push_type``, ``topic``
(overrides the option), ``collapse_id`` (at most 64 bytes). The payload must fit 4096 bytes
(5120 for VoIP), which intake checks.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from pushguard import taxonomy
from pushguard.addresses import check_header_value
from pushguard.config import resolve
from pushguard.exceptions import ConfigError, DeliveryError, InputError
from pushguard.providers.base import Delivery, Provider, ProviderContext, ProviderMeta, Receipt
from pushguard.providers.h2client import H2Pool, H2Response
from pushguard.providers.httpclient import MAX_RAW, parse_retry_after

if TYPE_CHECKING:
    from pushguard.config import ProviderConfig

HOSTS = {
    "production": "https://api.push.apple.com",
    "sandbox": "https://api.sandbox.push.apple.com",
}
MAX_PAYLOAD = 4096
MAX_VOIP_PAYLOAD = 5120
PUSH_TYPES = frozenset({
    "alert", "background", "voip", "complication", "fileprovider", "mdm", "location",
    "liveactivity", "pushtotalk", "widgets", "controls",
})  # fmt: skip
# Apple wants these push types on a topic named after the bundle id plus a suffix.
_TOPIC_SUFFIX = {
    "voip": ".voip", "complication": ".complication", "fileprovider": ".pushkit.fileprovider",
    "location": ".location-query", "liveactivity": ".push-type.liveactivity",
    "pushtotalk": ".voip-ptt",
}  # fmt: skip
_ALERT_KEYS = ("title", "subtitle", "body")
CONTENT_KEYS = frozenset({
    *_ALERT_KEYS, "badge", "sound", "content_available", "mutable_content", "category",
    "thread_id", "aps", "data", "push_type", "topic", "collapse_id",
})  # fmt: skip
_APPLE_ID = re.compile(r"[A-Z0-9]{10}\Z")
#: apns-id = uuid5(this, message id): stable across retries, as APNs wants a UUID
APNS_ID_NAMESPACE = uuid.UUID("6f1c6a7e-3c1b-5e0a-9d4e-7a1f2c9b8e01")
TOKEN_LIFETIME = 40 * 60
MIN_RENEWAL_INTERVAL = 20 * 60

_AUTH_REASONS = frozenset({
    "InvalidProviderToken", "MissingProviderToken", "ExpiredProviderToken", "BadCertificate",
    "BadCertificateEnvironment", "Forbidden", "UnrelatedKeyIdInToken",
    "BadEnvironmentKeyIdInToken", "TooManyProviderTokenUpdates",
})  # fmt: skip
_AUTH_HINTS = {
    "ExpiredProviderToken": "even a freshly signed provider token was called expired; check the "
    "host's clock",
    "TooManyProviderTokenUpdates": "the provider token was renewed too often (more than once "
    "per 20 minutes)",
}
_RECIPIENT_REASONS = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic", "MissingDeviceToken"})
#: The live check's device token. No device has it, so APNs, which judges the provider token
#: and the topic before the device token, answers ``BadDeviceToken`` when both are good.
PROBE_TOKEN = "0" * 64
#: what the live check sends: a silent background push that APNs must not store
_PROBE_PAYLOAD = b'{"aps":{"content-available":1}}'


def apns_id(message_id: str) -> str:
    """The ``apns-id`` of a message: the same UUID for every attempt."""
    return str(uuid.uuid5(APNS_ID_NAMESPACE, message_id))


def build_payload(content: Mapping[str, Any]) -> tuple[bytes, str]:
    """The JSON payload and push type for ``content``; raises ``InputError`` if it can't be
    sent (the same check runs at intake and at send)."""
    unknown = sorted(set(content) - CONTENT_KEYS)
    if unknown:
        raise InputError(f"content.{unknown[0]}", f"is not an APNs content field; expected one "
                         f"of {', '.join(sorted(CONTENT_KEYS))}")
    aps: dict[str, Any] = dict(_mapping(content, "aps"))
    alert = {k: _text(content, k) for k in _ALERT_KEYS if k in content}
    if alert:
        aps["alert"] = alert
    if "badge" in content:
        badge = content["badge"]
        if isinstance(badge, bool) or not isinstance(badge, int) or badge < 0:
            raise InputError("content.badge", "must be a whole number, 0 or more")
        aps["badge"] = badge
    if "sound" in content:
        if not isinstance(content["sound"], str | Mapping):
            raise InputError("content.sound", "must be a sound name or a dict")
        aps["sound"] = content["sound"]
    for key, name in (("category", "category"), ("thread_id", "thread-id")):
        if key in content:
            aps[name] = _text(content, key)
    data = dict(_mapping(content, "data"))
    if "aps" in data:
        raise InputError("content.data.aps", "is reserved by Apple; use the content fields")
    alerting = bool(alert) or "badge" in aps or "sound" in aps
    push_type = content.get("push_type") or ("alert" if alerting else "background")
    if push_type not in PUSH_TYPES:
        raise InputError("content.push_type", f"must be one of {', '.join(sorted(PUSH_TYPES))}")
    if content.get("content_available") or push_type == "background":
        aps["content-available"] = 1
    if content.get("mutable_content"):
        aps["mutable-content"] = 1
    if not (aps.keys() - {"content-available"} or data or content.get("content_available")):
        raise InputError("content", "needs a title or body, a badge, a sound, data or "
                         "content_available")
    for key in ("topic", "collapse_id"):
        if key in content:
            value = _text(content, key)
            check_header_value(value, f"content.{key}")
            if value != value.strip():
                raise InputError(f"content.{key}", "must not start or end with whitespace")
            if key == "collapse_id" and len(value.encode()) > 64:
                raise InputError("content.collapse_id", "must be at most 64 bytes")
    payload = json.dumps({"aps": aps, **data}, separators=(",", ":"), ensure_ascii=False).encode()
    limit = MAX_VOIP_PAYLOAD if push_type == "voip" else MAX_PAYLOAD
    if len(payload) > limit:
        raise InputError("content", f"makes an APNs payload of {len(payload)} bytes; the limit "
                         f"is {limit} for {push_type} pushes")
    return payload, str(push_type)


def _text(content: Mapping[str, Any], key: str) -> str:
    value = content[key]
    if not isinstance(value, str) or not value:
        raise InputError(f"content.{key}", "must be a non-empty string")
    return value


def _mapping(content: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = content.get(key, {})
    if not isinstance(value, Mapping):
        raise InputError(f"content.{key}", "must be an object")
    return value


def classify(resp: H2Response, *, environment: str = "production") -> DeliveryError | None:
    """None for success, else what an APNs answer means (FAILURES.md §1.2)."""
    status = resp.status
    if status == 200:
        return None
    reason, doc = None, None
    try:
        doc = json.loads(resp.body)
        reason = str(doc["reason"]) if isinstance(doc, dict) and doc.get("reason") else None
    except ValueError:
        pass
    code = reason or f"HTTP {status}"
    raw = resp.body[:MAX_RAW].decode("utf-8", "replace")
    retry_after = parse_retry_after(resp.headers.get("retry-after"))

    def error(cause: taxonomy.Cause, detail: str, **kw: Any) -> DeliveryError:
        return DeliveryError(cause, f"APNs {status} {code}: {detail}", provider_code=code,
                             status=status, raw=raw, **kw)

    if reason in _RECIPIENT_REASONS:
        detail = "the device token is not valid for this app"
        if reason == "BadDeviceToken":
            other = "sandbox" if environment == "production" else "production"
            detail = (f"the device token is bad for the {environment} environment; a token from "
                      f"a {other} (development/TestFlight) build fails this way, so check for a "
                      "sandbox/production mix-up before deleting tokens in bulk")
        # Not suppressed: a wrong `environment` or `topic` in our own config answers exactly
        # this for every device, and suppressing would deactivate the whole fleet. The message
        # fails with the hint; a token that is really gone answers 410 and is suppressed then.
        return error(taxonomy.INVALID_RECIPIENT, detail,
                     suppress=False if reason != "MissingDeviceToken" else None)
    if reason in ("Unregistered", "ExpiredToken"):
        extra = {}
        if isinstance(doc, dict) and isinstance(doc.get("timestamp"), int | float):
            extra["unregistered_at_ms"] = int(doc["timestamp"])
        return error(taxonomy.UNREGISTERED_TOKEN,
                     "the device token is no longer active for this topic", extra=extra)
    if reason == "IdleTimeout":
        return error(taxonomy.NETWORK_TIMEOUT, "the connection idled out; reconnecting")
    if reason in ("BadTopic", "TopicDisallowed", "MissingTopic"):
        return error(taxonomy.SENDER_CONFIG, "check the provider's topic (the app's bundle id)")
    if reason == "TooManyRequests":
        return error(taxonomy.RATE_LIMITED, "too many pushes to this device",
                     retry_after=retry_after, scope="device")
    if reason in _AUTH_REASONS or (status == 403 and reason):
        return error(taxonomy.AUTH_CREDENTIALS, _AUTH_HINTS.get(
            reason or "", "check team_id, key_id, private_key and the environment"))
    if reason in ("BadPath", "MethodNotAllowed") or (status in (404, 405) and reason):
        return error(taxonomy.SENDER_CONFIG, "the request path was refused; check base_url")
    if status == 413 or reason == "PayloadTooLarge":
        return error(taxonomy.CONTENT_REJECTED, "the payload is too large")
    if status == 400 and reason:
        return error(taxonomy.CONTENT_REJECTED, "APNs refused the request as malformed")
    if status >= 500:
        return error(taxonomy.PROVIDER_OUTAGE, "APNs is unavailable", retry_after=retry_after)
    if status == 429:
        return error(taxonomy.RATE_LIMITED, "APNs is throttling us", retry_after=retry_after)
    return error(taxonomy.UNKNOWN, "unrecognised answer")


def load_signing_key(value: object, *, location: str) -> ec.EllipticCurvePrivateKey:
    """The P-256 key from a ``.p8`` PEM text or a path to one (``env:`` already resolved)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("private_key must be the .p8 key (PEM text) or its path",
                          location=location)
    text = value
    if "-----BEGIN" not in value:
        try:
            text = Path(value).expanduser().read_text()
        except (OSError, ValueError) as exc:
            raise ConfigError("private_key is neither PEM text nor a readable file",
                              location=location) from exc
    try:
        key = load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError("private_key is not a readable unencrypted PEM key",
                          location=location) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ConfigError("private_key must be an APNs auth key (EC P-256)", location=location)
    return key


#: :meth:`ProviderToken.shared`'s tokens, by (team id, key id, public key)
_SHARED: dict[tuple[str, str, bytes], ProviderToken] = {}
_SHARED_LOCK = threading.Lock()


class ProviderToken:
    """The ES256 provider token, signed once and reused for :data:`TOKEN_LIFETIME` seconds."""

    def __init__(self, team_id: str, key_id: str, key: ec.EllipticCurvePrivateKey,
                 *, clock: Callable[[], float] = time.time) -> None:
        self.team_id, self.key_id, self._key, self._clock = team_id, key_id, key, clock
        self._token = ""
        self._issued = 0.0
        self._renewed_early: float | None = None
        #: tokens signed so far
        self.issued = 0

    @classmethod
    def shared(cls, team_id: str, key_id: str, key: ec.EllipticCurvePrivateKey
               ) -> ProviderToken:
        """The process's one token for this key. Apple answers ``TooManyProviderTokenUpdates``
        to tokens renewed more often than every 20 minutes, and every provider built on the
        key (each pre-flight's live check builds one, beside the workers') would otherwise
        sign its own."""
        fingerprint = key.public_key().public_bytes(Encoding.DER,
                                                    PublicFormat.SubjectPublicKeyInfo)
        with _SHARED_LOCK:
            return _SHARED.setdefault((team_id, key_id, fingerprint),
                                      cls(team_id, key_id, key))

    def current(self) -> str:
        """The token to send now, signing a new one when this one is 40 minutes old."""
        if not self._token or self._clock() - self._issued >= TOKEN_LIFETIME:
            self._sign()
        return self._token

    def renew(self, rejected: str) -> bool:
        """APNs called ``rejected`` expired: renew it unless we did so less than 20 minutes
        ago. True when a token other than ``rejected`` is now current."""
        if rejected != self._token:
            return True  # another send renewed it already
        now = self._clock()
        if self._renewed_early is not None and now - self._renewed_early < MIN_RENEWAL_INTERVAL:
            return False
        self._renewed_early = now
        self._sign()
        return True

    def _sign(self) -> None:
        now = self._clock()
        self._token = jwt.encode({"iss": self.team_id, "iat": int(now)}, self._key,
                                 algorithm="ES256", headers={"kid": self.key_id})
        self._issued = now
        self.issued += 1


def _option_problems(options: Mapping[str, Any], location: str) -> list[ConfigError]:
    problems = []
    for key in ("team_id", "key_id"):
        if not isinstance(options.get(key), str) or not _APPLE_ID.match(options[key]):
            problems.append(ConfigError(f"'{key}' must be the 10-character id from the Apple "
                                        "developer account", location=f"{location}.{key}"))
    topic = options.get("topic")
    if not isinstance(topic, str) or not topic:
        problems.append(ConfigError("'topic' (the app's bundle id) is required",
                                    location=f"{location}.topic"))
    if options.get("environment", "production") not in HOSTS:
        problems.append(ConfigError("'environment' must be \"production\" or \"sandbox\"",
                                    location=f"{location}.environment"))
    base = options.get("base_url")
    if base is not None and (not isinstance(base, str) or not base.startswith(("http://",
                                                                                "https://"))):
        problems.append(ConfigError("'base_url' must be an http(s) origin",
                                    location=f"{location}.base_url"))
    conns = options.get("connections", 2)
    if isinstance(conns, bool) or not isinstance(conns, int) or not 1 <= conns <= 32:
        problems.append(ConfigError("'connections' must be 1 to 32",
                                    location=f"{location}.connections"))
    try:
        load_signing_key(resolve(options.get("private_key"), location=f"{location}.private_key"),
                         location=f"{location}.private_key")
    except ConfigError as exc:
        problems.append(exc)
    return problems


class ApnsProvider(Provider):
    """Sends on the ``apns`` channel with an APNs auth key (``.p8``)."""

    meta = ProviderMeta(
        type="apns",
        channels=frozenset({"apns"}),
        secret_options=frozenset({"private_key"}),
        max_payload_bytes=MAX_PAYLOAD,
        description="Apple Push Notification service (HTTP/2, token auth)",
    )

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        loc = f"providers.{config.name}"
        problems = _option_problems(config.options, loc)
        if problems:
            raise problems[0]
        opts = config.options
        key = load_signing_key(resolve(opts["private_key"], location=f"{loc}.private_key"),
                               location=f"{loc}.private_key")
        self.tokens = ProviderToken.shared(opts["team_id"], opts["key_id"], key)
        self.topic: str = opts["topic"]
        self.environment: str = opts.get("environment", "production")
        self.pool = H2Pool(opts.get("base_url") or HOSTS[self.environment],
                           guard=context.guard, size=opts.get("connections", 2),
                           timeout=config.timeout)

    @classmethod
    def check_options(cls, config: ProviderConfig, *, location: str) -> list[ConfigError]:
        return _option_problems(config.options, location)

    @classmethod
    def validate_content(cls, channel: str, content: Mapping[str, Any]) -> None:
        build_payload(content)

    async def close(self) -> None:
        await self.pool.close()

    def headers(self, delivery: Delivery, push_type: str) -> dict[str, str]:
        """The APNs request headers of one delivery, without the authorization."""
        topic = str(delivery.content.get("topic") or self.topic)
        suffix = _TOPIC_SUFFIX.get(push_type, "")
        if suffix and not topic.endswith(suffix):
            topic += suffix
        # Apple requires priority 5 for background pushes; bulk mail need not wake a device.
        low = push_type == "background" or (delivery.priority >= 2 and push_type != "voip")
        headers = {
            "apns-topic": topic,
            "apns-push-type": push_type,
            "apns-priority": "5" if low else "10",
            "apns-expiration": str(max(0, int(delivery.expires_at))),
            "apns-id": apns_id(delivery.message_id),
        }
        if delivery.content.get("collapse_id"):
            headers["apns-collapse-id"] = str(delivery.content["collapse_id"])
        return headers

    async def _post(self, path: str, headers: dict[str, str], payload: bytes) -> H2Response:
        """One request with the current provider token, sent once more with a renewed token
        when APNs calls it expired (at most once per :data:`MIN_RENEWAL_INTERVAL`)."""
        token = self.tokens.current()
        resp = await self.pool.request(
            "POST", path, {**headers, "authorization": f"bearer {token}"}, payload)
        if resp.status == 403 and b"ExpiredProviderToken" in resp.body and self.tokens.renew(token):
            resp = await self.pool.request(
                "POST", path, {**headers, "authorization": f"bearer {self.tokens.current()}"},
                payload)
        return resp

    async def check(self) -> bool:
        """Connect and post a silent background push, with the send's provider token and
        topic, to :data:`PROBE_TOKEN`, a token no device has, with ``apns-expiration: 0``.
        APNs has no endpoint that only checks credentials, but it judges the provider token
        and the topic before the device token: ``BadDeviceToken`` (or
        ``DeviceTokenNotForTopic``) means both passed. No notification reaches a device."""
        headers = {"apns-topic": self.topic, "apns-push-type": "background",
                   "apns-priority": "5", "apns-expiration": "0"}
        resp = await self._post(f"/3/device/{PROBE_TOKEN}", headers, _PROBE_PAYLOAD)
        error = classify(resp, environment=self.environment)
        if error is None or error.provider_code in ("BadDeviceToken", "DeviceTokenNotForTopic"):
            return True
        raise error

    async def send(self, delivery: Delivery) -> Receipt:
        try:
            payload, push_type = build_payload(delivery.content)
        except InputError as exc:
            raise DeliveryError(taxonomy.CONTENT_REJECTED, f"{exc.field}: {exc.problem}",
                                provider_code="INVALID_CONTENT") from exc
        headers = self.headers(delivery, push_type)
        resp = await self._post(f"/3/device/{quote(delivery.to, safe='')}", headers, payload)
        error = classify(resp, environment=self.environment)
        if error is not None:
            raise error
        return Receipt(status=200, provider_message_id=resp.headers.get("apns-id"),
                       detail="accepted by APNs")
