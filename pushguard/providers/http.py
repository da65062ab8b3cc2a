"""A generic JSON-over-HTTP provider, for gateways with no dedicated adapter.

Posts ``{"id": <message id>, "to": <address>, **content}`` to ``url`` with the configured
headers (credentials by ``env:NAME`` reference) and an ``Idempotency-Key`` equal to the message
id, so a gateway that honours it never sends a retried message twice. The answer is classified
by HTTP status; a JSON error code in the body (``{"error": {"code": ...}}`` or ``{"code": ...}``)
is kept as the provider's own code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pushguard import sms_segments, taxonomy
from pushguard.config import resolve
from pushguard.exceptions import ConfigError, DeliveryError
from pushguard.providers.base import Delivery, Provider, ProviderContext, ProviderMeta, Receipt
from pushguard.providers.httpclient import HttpClient, Response, parse_retry_after

if TYPE_CHECKING:
    from pushguard.config import ProviderConfig


def _error_code(resp: Response) -> tuple[str | None, str]:
    if resp.content_type != "application/json":
        return None, ""
    try:
        data = json.loads(resp.body)
    except ValueError:
        return None, ""
    if not isinstance(data, dict):
        return None, ""
    err: Any = data.get("error", data)
    if isinstance(err, dict):
        code = err.get("code")
        return (str(code) if code is not None else None), str(err.get("message", ""))
    return None, str(err)


def classify(resp: Response, provider: str) -> DeliveryError | None:
    status = resp.status
    if 200 <= status < 300:
        return None
    code, message = _error_code(resp)
    cause = taxonomy.classify_http_status(status)
    if status == 404:
        cause = taxonomy.SENDER_CONFIG  # the gateway's URL is wrong, not the recipient
    if status == 400 and code and any(
        word in code.lower() for word in ("recipient", "number", "address", "token")
    ):
        cause = taxonomy.INVALID_RECIPIENT
    if resp.content_type == "text/html" and status < 500:
        cause = taxonomy.UNKNOWN
    detail = f"{provider} answered {status}" + (f": {message}" if message else "")
    return DeliveryError(
        cause,
        detail,
        provider_code=code or f"HTTP {status}",
        status=status,
        raw=resp.text,
        retry_after=parse_retry_after(resp.headers.get("Retry-After")),
        scope="provider" if cause is taxonomy.RATE_LIMITED else None,
        maybe_sent=status == 504,
    )


class HttpProvider(Provider):
    meta = ProviderMeta(
        type="http",
        channels=frozenset({"sms", "email", "fcm", "apns", "webpush", "chat", "webhook"}),
        secret_options=frozenset({"headers", "receipt_secret"}),
        description="generic JSON POST to a gateway URL",
    )

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        loc = f"providers.{config.name}"
        self.url = str(config.options.get("url", ""))
        if not self.url:
            raise ConfigError("'url' is required", location=f"{loc}.url")
        self.headers = {
            str(k): str(v)
            for k, v in resolve(dict(config.options.get("headers", {})), location=loc).items()
        }
        self.client = HttpClient.for_provider(config, context)
        #: Standard Webhooks secret the gateway signs its delivery receipts with, if it sends
        #: any (POST /v1/receipts/http/{name}).
        raw = config.options.get("receipt_secret")
        self.receipt_secret = str(resolve(raw, location=f"{loc}.receipt_secret")) if raw else None

    @classmethod
    def check_options(cls, config: ProviderConfig, *, location: str) -> list[ConfigError]:
        url = config.options.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return [ConfigError("'url' must be an http(s) URL", location=f"{location}.url")]
        return []

    @classmethod
    def validate_content(cls, channel: str, content: Mapping[str, Any]) -> None:
        """SMS gateways get ``text`` (at most 1600 characters, no NUL); other channels pass."""
        if channel == "sms":
            sms_segments.validate_text(content.get("text"))

    async def start(self) -> None:
        await self.client.start()

    async def close(self) -> None:
        await self.client.close()

    async def send(self, delivery: Delivery) -> Receipt:
        body = json.dumps(
            {"id": delivery.message_id, "to": delivery.to, **delivery.content},
            separators=(",", ":"),
        ).encode()
        headers = {
            **self.headers,
            "Content-Type": "application/json",
            "Idempotency-Key": delivery.message_id,
        }
        resp = await self.client.post(self.url, data=body, headers=headers)
        error = classify(resp, self.name)
        if error is not None:
            raise error
        provider_id: str | None = None
        if resp.content_type == "application/json":
            try:
                data = json.loads(resp.body)
                if isinstance(data, dict) and data.get("id") is not None:
                    provider_id = str(data["id"])
            except ValueError:
                pass
        return Receipt(status=resp.status, provider_message_id=provider_id)
