"""Outbound webhooks signed per the Standard Webhooks spec.

Each request carries ``webhook-id`` (the message id: the same on every retry, so a receiver can
deduplicate), ``webhook-timestamp`` (this attempt) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``; several space-separated while a
secret is being rotated). Redirects are never followed: a 3xx counts as a failure.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pushguard import taxonomy
from pushguard.addresses import check_header_value
from pushguard.config import resolve
from pushguard.exceptions import ConfigError, DeliveryError
from pushguard.providers.base import Delivery, Provider, ProviderContext, ProviderMeta, Receipt
from pushguard.providers.httpclient import HttpClient, Response, parse_retry_after

if TYPE_CHECKING:
    from pushguard.config import ProviderConfig

SECRET_PREFIX = "whsec_"


def decode_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_<base64>`` secret."""
    if not secret.startswith(SECRET_PREFIX):
        raise ConfigError("webhook secrets look like whsec_<base64>")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except ValueError as exc:
        raise ConfigError("the part after whsec_ is not valid base64") from exc
    if not 16 <= len(key) <= 64:
        raise ConfigError("the key must be 16 to 64 bytes (24 to 64 recommended)")
    return key


def sign(keys: list[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one request."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(k, signed, hashlib.sha256).digest()).decode()
        for k in keys
    )


def classify(resp: Response) -> DeliveryError | None:
    """None for success, else the failure a receiver's answer means (FAILURES.md §1.7)."""
    status = resp.status
    if 200 <= status < 300:
        return None
    code = f"HTTP {status}"
    raw = resp.text
    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
    if status in (301, 308):
        where = resp.headers.get("Location", "?")
        return DeliveryError(
            taxonomy.INVALID_RECIPIENT,
            f"endpoint moved permanently to {where}; update the webhook URL",
            provider_code=code, status=status, raw=raw,
        )
    if 300 <= status < 400:
        return DeliveryError(
            taxonomy.UNKNOWN, "endpoint answered with a redirect, which is not followed",
            provider_code=code, status=status, raw=raw,
        )
    if status == 410:
        return DeliveryError(
            taxonomy.UNREGISTERED_TOKEN, "endpoint is gone (410); it is disabled",
            provider_code=code, status=status, raw=raw,
        )
    if status == 429:
        return DeliveryError(
            taxonomy.RATE_LIMITED, "endpoint asked us to slow down (429)",
            provider_code=code, status=status, raw=raw, retry_after=retry_after,
            scope="endpoint",  # the breaker is per endpoint already, so it should count this
        )
    if status >= 500:
        if status == 504:
            return DeliveryError(
                taxonomy.NETWORK_TIMEOUT, "gateway timeout (504) in front of the endpoint",
                provider_code=code, status=status, raw=raw, retry_after=retry_after,
                maybe_sent=True,
            )
        return DeliveryError(
            taxonomy.PROVIDER_OUTAGE, f"endpoint error {status}",
            provider_code=code, status=status, raw=raw, retry_after=retry_after,
        )
    if resp.content_type == "text/html" and status not in (404, 413):
        # An HTML 4xx page usually comes from a proxy or WAF in front of the receiver, not the
        # receiver's own verdict on our message: bounded retries, raw page kept.
        return DeliveryError(
            taxonomy.UNKNOWN, f"HTML error page ({status}) from something in front of the endpoint",
            provider_code=code, status=status, raw=raw,
        )
    if status in (401, 403):
        return DeliveryError(
            taxonomy.AUTH_CREDENTIALS,
            f"endpoint refused our signature ({status}); check the signing secret it expects",
            provider_code=code, status=status, raw=raw,
        )
    if status == 404:
        return DeliveryError(
            taxonomy.INVALID_RECIPIENT, "endpoint not found (404); check the URL",
            provider_code=code, status=status, raw=raw, suppress=False,
        )
    if status == 413:
        return DeliveryError(
            taxonomy.CONTENT_REJECTED, "payload too large for the endpoint (413)",
            provider_code=code, status=status, raw=raw,
        )
    return DeliveryError(
        taxonomy.CONTENT_REJECTED, f"endpoint rejected the payload ({status})",
        provider_code=code, status=status, raw=raw,
    )


class WebhookProvider(Provider):
    meta = ProviderMeta(
        type="webhook",
        channels=frozenset({"webhook"}),
        secret_options=frozenset({"secret", "secrets", "headers"}),
        description="HTTP POST signed per Standard Webhooks",
    )

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        self._keys = self._load_keys(config, context)
        self.client = HttpClient.for_provider(config, context)
        headers = resolve(dict(config.options.get("headers", {})),
                          location=f"providers.{config.name}.headers")
        self.headers = {str(k): str(v) for k, v in headers.items()}
        for name, value in self.headers.items():
            check_header_value(value, f"providers.{config.name}.headers.{name}")

    @staticmethod
    def _load_keys(config: ProviderConfig, context: ProviderContext) -> list[bytes]:
        loc = f"providers.{config.name}"
        raw: Any = config.options.get("secrets") or config.options.get("secret")
        if raw == "env:PUSHGUARD_WEBHOOK_SECRET" or raw is None:
            raw = context.settings.webhook_secret or None
        else:
            raw = resolve(raw, location=loc)
        if not raw:
            raise ConfigError(
                "no signing secret: set PUSHGUARD_WEBHOOK_SECRET=whsec_... "
                "(`pushguard webhook-secret` prints a new one)",
                location=loc,
            )
        secrets = raw if isinstance(raw, list) else [raw]
        try:
            return [decode_secret(str(s)) for s in secrets]
        except ConfigError as exc:
            raise ConfigError(exc.message, location=f"{loc}.secret") from exc

    @classmethod
    def check_options(cls, config: ProviderConfig, *, location: str) -> list[ConfigError]:
        raw = config.options.get("secrets") or config.options.get("secret")
        if raw is None or raw == "env:PUSHGUARD_WEBHOOK_SECRET":
            return []  # checked against settings by `config check`
        try:
            values = resolve(raw, location=location)
            for s in values if isinstance(values, list) else [values]:
                decode_secret(str(s))
        except ConfigError as exc:
            return [ConfigError(exc.message, location=f"{location}.secret")]
        return []

    def breaker_key(self, delivery: Delivery) -> str:
        # One receiver's outage must not stop deliveries to every other receiver.
        return f"{self.name}:{urlsplit(delivery.to).netloc}"

    async def start(self) -> None:
        await self.client.start()

    async def close(self) -> None:
        await self.client.close()

    def render(self, delivery: Delivery) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(delivery.content, separators=(",", ":")).encode()
        ts = int(time.time())
        headers = {
            **self.headers,
            "Content-Type": "application/json",
            "webhook-id": delivery.message_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign(self._keys, delivery.message_id, ts, body),
        }
        return body, headers

    async def send(self, delivery: Delivery) -> Receipt:
        body, headers = self.render(delivery)
        resp = await self.client.post(delivery.to, data=body, headers=headers)
        error = classify(resp)
        if error is not None:
            raise error
        return Receipt(status=resp.status, detail=f"HTTP {resp.status}")

