"""Web Push (RFC 8030) with aes128gcm payload encryption (RFC 8291) and VAPID (RFC 8292).

``to`` is the normalised PushSubscription JSON (see :mod:`pushguard.addresses`). The payload is
``content`` as compact JSON, encrypted for the subscription's ``p256dh``/``auth`` keys in one
4096-octet record, so its plaintext may be at most :data:`MAX_PLAINTEXT` bytes. Each request
carries ``TTL`` (the message's remaining lifetime, capped at 28 days), ``Urgency`` (from the
priority), an optional ``Topic`` (``content.topic_key``) and a VAPID ``Authorization`` header
whose JWT is signed once per push-service origin and reused for half a day.

Options: ``vapid_private_key`` (PEM, or base64url of the raw 32-byte key; secret, ``env:``
references allowed), ``vapid_subject`` (``mailto:`` or ``https:`` contact, required) and
``ttl`` (the longest a push service is asked to hold a message, in seconds).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import http_ece
from cryptography.hazmat.primitives.asymmetric import ec

from pushguard import taxonomy
from pushguard.exceptions import ConfigError, DeliveryError, InputError
from pushguard.providers.base import Delivery, Provider, ProviderContext, ProviderMeta, Receipt
from pushguard.providers.httpclient import HttpClient, Response, parse_retry_after
from pushguard.providers.vapid import VapidSigner, b64decode, load_signer

if TYPE_CHECKING:
    from pushguard.config import ProviderConfig

#: 4096-octet record minus the aes128gcm header (86), the padding delimiter (1) and the tag (16).
MAX_PLAINTEXT = 3993
#: RFC 8030 leaves the cap to the push service; FCM's is 4 weeks, so longer buys nothing.
MAX_TTL = 28 * 24 * 3600
URGENCY = {0: "high", 1: "normal", 2: "low"}
_TOPIC = re.compile(r"[A-Za-z0-9_\-]{1,32}\Z")
#: a 400 naming these is about our VAPID credentials: FCM answers a bad JWT with an
#: "UnauthorizedRegistration" page, autopush with errno 109.
_VAPID_WORDS = ("unauthorizedregistration", "vapid", "jwt", '"errno": 109', '"errno":109')
_STRING_KEYS = ("title", "body", "icon", "url")
#: content keys that steer the request and are not part of the payload the browser sees.
_CONTROL_KEYS = frozenset({"topic_key"})


def payload_of(content: Mapping[str, Any]) -> bytes:
    """The plaintext a service worker receives: ``content`` minus request controls."""
    body = {k: v for k, v in content.items() if k not in _CONTROL_KEYS}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def check_content(content: Mapping[str, Any]) -> None:
    """Raise ``InputError`` for content no push service could take."""
    for key in _STRING_KEYS:
        if key in content and not isinstance(content[key], str):
            raise InputError(f"content.{key}", "must be a string")
    if "data" in content and not isinstance(content["data"], dict):
        raise InputError("content.data", "must be an object")
    topic = content.get("topic_key")
    if topic is not None and (not isinstance(topic, str) or not _TOPIC.match(topic)):
        raise InputError(
            "content.topic_key", "must be 1 to 32 characters of A-Z a-z 0-9 - _ (RFC 8030 §5.4)"
        )
    size = len(payload_of(content))
    if size > MAX_PLAINTEXT:
        raise InputError(
            "content",
            f"the Web Push payload is {size} bytes; at most {MAX_PLAINTEXT} fit in one "
            "encrypted 4096-byte record",
        )


def origin_of(endpoint: str) -> str:
    """``scheme://host[:port]`` of an endpoint (default port left out, as browsers print an
    origin): the VAPID ``aud`` and the scope of the breaker."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and port != {"https": 443, "http": 80}.get(parts.scheme):
        host += f":{port}"
    return f"{parts.scheme}://{host}"


def encrypt(payload: bytes, p256dh: str, auth: str) -> bytes:
    """One aes128gcm record for the subscription keys (a fresh sender key every time)."""
    receiver = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64decode(p256dh))
    body: bytes = http_ece.encrypt(
        payload,
        private_key=ec.generate_private_key(ec.SECP256R1()),
        dh=receiver,
        auth_secret=b64decode(auth),
        version="aes128gcm",
    )
    return body


def classify(resp: Response) -> DeliveryError | None:
    """None for an accepted message, else what a push service's answer means (§1.3)."""
    status = resp.status
    if 200 <= status < 300:
        return None
    code, raw = f"HTTP {status}", resp.text
    retry_after = parse_retry_after(resp.headers.get("Retry-After"))

    def error(cause: taxonomy.Cause, detail: str, **kw: Any) -> DeliveryError:
        return DeliveryError(cause, detail, provider_code=code, status=status, raw=raw, **kw)

    if status in (404, 410):
        return error(taxonomy.UNREGISTERED_TOKEN,
                     f"push subscription expired or unsubscribed ({status}); it is removed")
    if status in (401, 403) or (status == 400 and any(w in raw.lower() for w in _VAPID_WORDS)):
        return error(taxonomy.AUTH_CREDENTIALS,
                     f"push service refused our VAPID credentials ({status}); check "
                     "vapid_private_key matches the applicationServerKey the browser used")
    if status == 413:
        return error(taxonomy.CONTENT_REJECTED, "push service says the payload is too large")
    if status == 429:
        return error(taxonomy.RATE_LIMITED, "push service asked us to slow down (429)",
                     retry_after=retry_after, scope="provider")
    if status >= 500:
        return error(taxonomy.PROVIDER_OUTAGE, f"push service error {status}",
                     retry_after=retry_after, maybe_sent=status == 504)
    if status == 400 and resp.content_type != "text/html":
        return error(taxonomy.CONTENT_REJECTED,
                     "push service rejected the request (400: TTL, Urgency, Topic or encoding)")
    return error(taxonomy.UNKNOWN, f"unexpected answer {status} from the push service")


class WebPushProvider(Provider):
    """Sends to browser push subscriptions through their push service."""

    meta = ProviderMeta(
        type="webpush",
        channels=frozenset({"webpush"}),
        secret_options=frozenset({"vapid_private_key"}),
        max_payload_bytes=MAX_PLAINTEXT,
        description="Web Push (RFC 8030) with aes128gcm encryption and VAPID",
    )

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        loc = f"providers.{config.name}"
        self.signer: VapidSigner = load_signer(config.options, location=loc)
        ttl = config.options.get("ttl", MAX_TTL)
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= MAX_TTL:
            raise ConfigError(f"'ttl' must be whole seconds from 0 to {MAX_TTL}",
                              location=f"{loc}.ttl")
        self.max_ttl = ttl
        self.client = HttpClient.for_provider(config, context)

    @classmethod
    def check_options(cls, config: ProviderConfig, *, location: str) -> list[ConfigError]:
        try:
            load_signer(config.options, location=location)
        except ConfigError as exc:
            return [exc]
        return []

    @classmethod
    def validate_content(cls, channel: str, content: Mapping[str, Any]) -> None:
        check_content(content)

    def breaker_key(self, delivery: Delivery) -> str:
        # One push service (FCM, autopush, Apple) failing must not stop the others.
        try:
            return f"{self.name}:{origin_of(_subscription(delivery)[0])}"
        except DeliveryError:  # send() reports the bad address; routing must not crash on it
            return self.name

    async def start(self) -> None:
        await self.client.start()

    async def close(self) -> None:
        await self.client.close()

    def render(
        self, delivery: Delivery, now: float | None = None
    ) -> tuple[str, bytes, dict[str, str]]:
        """The endpoint, the encrypted body and the headers of one push request."""
        now = time.time() if now is None else now
        endpoint, p256dh, auth = _subscription(delivery)
        try:
            check_content(delivery.content)
        except InputError as exc:
            raise DeliveryError(taxonomy.CONTENT_REJECTED, str(exc),
                                provider_code="PAYLOAD_INVALID") from exc
        try:
            body = encrypt(payload_of(delivery.content), p256dh, auth)
        except (ValueError, http_ece.ECEException) as exc:
            raise DeliveryError(
                taxonomy.INVALID_RECIPIENT,
                "the subscription's p256dh key is not a valid P-256 public key",
                provider_code="BAD_SUBSCRIPTION_KEY",
            ) from exc
        ttl = self.max_ttl
        if 0 < delivery.expires_at < now + ttl:
            ttl = max(0, int(delivery.expires_at - now))
        headers = {
            "TTL": str(ttl),
            "Urgency": URGENCY.get(delivery.priority, "normal"),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Authorization": self.signer.header(origin_of(endpoint), now),
        }
        topic = delivery.content.get("topic_key")
        if isinstance(topic, str):
            headers["Topic"] = topic
        return endpoint, body, headers

    async def send(self, delivery: Delivery) -> Receipt:
        endpoint, body, headers = self.render(delivery)
        resp = await self.client.post(endpoint, data=body, headers=headers)
        error = classify(resp)
        if error is not None:
            if error.cause is taxonomy.AUTH_CREDENTIALS:
                # A service that rejects a token (e.g. clock skew on exp) gets a fresh one on
                # the retry rather than the same cached JWT until it ages out.
                self.signer.forget(origin_of(endpoint))
            raise error
        return Receipt(status=resp.status, provider_message_id=resp.headers.get("Location"),
                       detail=f"HTTP {resp.status}")


def _subscription(delivery: Delivery) -> tuple[str, str, str]:
    try:
        sub = json.loads(delivery.to)
        return str(sub["endpoint"]), str(sub["keys"]["p256dh"]), str(sub["keys"]["auth"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DeliveryError(taxonomy.INVALID_RECIPIENT, "not a Web Push subscription",
                            provider_code="BAD_SUBSCRIPTION") from exc
