"""SMS through Twilio's Messages API (FAILURES.md §1.5).

One form POST per message to ``{base_url}/2010-04-01/Accounts/{account_sid}/Messages.json``
with HTTP basic auth (Account SID and Auth Token, or an API key SID and secret). A 201 only
means Twilio *queued* the message: whether a handset got it arrives later as a status
callback, which is why ``StatusCallback`` carries our message id in its query string (Twilio
signs the full URL, so it cannot be forged) and :mod:`pushguard.receipts.twilio` reads it.

Failures are classified by Twilio's own ``code`` first, then by the HTTP status class. Twilio
warns that codes get split and renumbered, so an unmapped 2xxxx code (request or account
validation) fails the message loudly and an unmapped 3xxxx code (delivery) is UNKNOWN with
bounded retries; the raw answer is kept either way.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

from pushguard import sms_segments, taxonomy
from pushguard.config import resolve
from pushguard.exceptions import ConfigError, DeliveryError, InputError
from pushguard.providers.base import Delivery, Provider, ProviderContext, ProviderMeta, Receipt
from pushguard.providers.httpclient import HttpClient, Response, parse_retry_after
from pushguard.taxonomy import Cause

if TYPE_CHECKING:
    from pushguard.config import ProviderConfig

DEFAULT_BASE_URL = "https://api.twilio.com"
DEFAULT_PRICE_PER_SEGMENT = Decimal("0.0079")
#: query parameter of the StatusCallback URL that names our message.
CALLBACK_MESSAGE_PARAM = "message_id"
#: Twilio drops a message still queued after this many seconds (its ValidityPeriod maximum).
MAX_VALIDITY_S = 36000

CODES: dict[int, Cause] = {
    20003: taxonomy.AUTH_CREDENTIALS,
    20404: taxonomy.SENDER_CONFIG,  # wrong Account SID or base URL, not a gone recipient
    20429: taxonomy.RATE_LIMITED,
    14107: taxonomy.RATE_LIMITED,
    20500: taxonomy.PROVIDER_OUTAGE,
    20503: taxonomy.PROVIDER_OUTAGE,
    21211: taxonomy.INVALID_RECIPIENT,
    21614: taxonomy.INVALID_RECIPIENT,
    21635: taxonomy.INVALID_RECIPIENT,
    30005: taxonomy.INVALID_RECIPIENT,
    30006: taxonomy.INVALID_RECIPIENT,
    21408: taxonomy.SENDER_CONFIG,
    21603: taxonomy.SENDER_CONFIG,
    21606: taxonomy.SENDER_CONFIG,
    21608: taxonomy.SENDER_CONFIG,
    21612: taxonomy.SENDER_CONFIG,
    30042: taxonomy.SENDER_CONFIG,
    21610: taxonomy.NO_CONSENT,
    63014: taxonomy.NO_CONSENT,
    21602: taxonomy.CONTENT_REJECTED,
    21617: taxonomy.CONTENT_REJECTED,
    30007: taxonomy.CONTENT_REJECTED,
    30110: taxonomy.CONTENT_REJECTED,
    30003: taxonomy.RECIPIENT_TEMPORARY,
    30001: taxonomy.PROVIDER_OUTAGE,
    30500: taxonomy.PROVIDER_OUTAGE,
    30008: taxonomy.UNKNOWN,
}
#: 14107 limits one From/To pair: it says nothing about Twilio's health, so no breaker trip.
_RATE_SCOPES = {20429: "provider", 14107: "recipient"}


def cause_for_code(code: int) -> Cause:
    """The cause of a Twilio error code, with the §1.5 defaults for unmapped ones."""
    if code in CODES:
        return CODES[code]
    if 20000 <= code < 30000:
        return taxonomy.CONTENT_REJECTED  # permanent for this message, and loud
    return taxonomy.UNKNOWN


def _json(resp: Response) -> dict[str, Any] | None:
    try:
        data = json.loads(resp.body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _code(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def classify(resp: Response, provider: str = "twilio") -> DeliveryError | None:
    """None for a 2xx, else the failure Twilio's answer means: by ``code``, then status."""
    status = resp.status
    if 200 <= status < 300:
        return None
    body = _json(resp) if resp.content_type == "application/json" else None
    code = _code(body.get("code")) if body and body.get("code") is not None else None
    message = str(body.get("message", "")) if body else ""
    if code is not None and code in CODES:
        cause = CODES[code]
    elif status >= 500 or status in (408, 429):
        cause = taxonomy.classify_http_status(status)
    elif resp.content_type == "text/html":
        cause = taxonomy.UNKNOWN  # a proxy's or WAF's page, not Twilio's verdict on the message
    elif status in (401, 403):
        cause = taxonomy.AUTH_CREDENTIALS
    elif code is not None and 20000 <= code < 40000:
        cause = cause_for_code(code)
    elif status in (404, 410):
        cause = taxonomy.SENDER_CONFIG  # our URL or Account SID is wrong, not the recipient
    else:
        cause = taxonomy.classify_http_status(status)
    detail = f"Twilio error {code}" if code is not None else f"{provider} answered {status}"
    if code is not None and code not in CODES:
        detail += " (not in pushguard's table)"
    if message:
        detail += f": {message}"
    return DeliveryError(
        cause,
        detail,
        provider_code=str(code) if code is not None else f"HTTP {status}",
        status=status,
        raw=resp.text,
        retry_after=parse_retry_after(resp.headers.get("Retry-After")),
        maybe_sent=status == 504,
        scope=_RATE_SCOPES.get(code or 0, "provider") if cause is taxonomy.RATE_LIMITED else None,
        suppress=True if cause is taxonomy.NO_CONSENT else None,
    )


class TwilioProvider(Provider):
    """Twilio Programmable Messaging (SMS/MMS)."""

    meta = ProviderMeta(
        type="twilio",
        channels=frozenset({"sms"}),
        secret_options=frozenset({"auth_token", "secondary_auth_token", "api_key_secret"}),
        description="Twilio Messages API (SMS), segment count and cost in the receipt",
    )

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        loc = f"providers.{config.name}"
        problems = self.check_options(config, location=loc)
        if problems:
            raise problems[0]
        opts = resolve(dict(config.options), location=loc)
        self.account_sid = str(opts["account_sid"])
        user, password = (
            (str(opts["api_key_sid"]), str(opts["api_key_secret"]))
            if opts.get("api_key_sid")
            else (self.account_sid, str(opts["auth_token"]))
        )
        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        #: what status callbacks are signed with (primary, then secondary during a rotation).
        self.callback_tokens = tuple(
            str(t) for t in (opts.get("auth_token"), opts.get("secondary_auth_token")) if t
        )
        base = str(opts.get("base_url", DEFAULT_BASE_URL)).rstrip("/")
        self.url = f"{base}/2010-04-01/Accounts/{quote(self.account_sid, safe='')}/Messages.json"
        #: the live check reads one page of the account's messages: standard API keys may
        #: (they may not read the account itself), and it sends nothing
        self.check_url = f"{self.url}?PageSize=1"
        service = opts.get("messaging_service_sid")
        # A Messaging Service picks the sender from its pool, so it wins over a fixed From.
        self.sender = (
            {"MessagingServiceSid": str(service)} if service else {"From": str(opts["from"])}
        )
        self.status_callback_url: str | None = opts.get("status_callback_url") or None
        self.price = Decimal(str(opts.get("price_per_segment", DEFAULT_PRICE_PER_SEGMENT)))
        self.client = HttpClient.for_provider(config, context)

    @classmethod
    def check_options(cls, config: ProviderConfig, *, location: str) -> list[ConfigError]:
        """Account SID, credentials, sender, URLs and price, each reported where it is."""
        problems: list[ConfigError] = []
        try:
            opts = resolve(dict(config.options), location=location)
        except ConfigError as exc:
            return [exc]

        def bad(key: str, problem: str) -> None:
            problems.append(ConfigError(problem, location=f"{location}.{key}"))

        if not str(opts.get("account_sid", "")).startswith("AC"):
            bad("account_sid", "'account_sid' is required and starts with AC")
        if opts.get("api_key_sid") or opts.get("api_key_secret"):
            if not (opts.get("api_key_sid") and opts.get("api_key_secret")):
                bad("api_key_secret", "'api_key_sid' and 'api_key_secret' go together")
        elif not opts.get("auth_token"):
            bad("auth_token", "set 'auth_token' (e.g. \"env:TWILIO_AUTH_TOKEN\") or an API key")
        if opts.get("status_callback_url") and not opts.get("auth_token"):
            # Twilio signs callbacks with the Auth Token even when we send with an API key.
            bad("auth_token", "'auth_token' is needed to verify status callbacks")
        if not (opts.get("from") or opts.get("messaging_service_sid")):
            bad("from", "set 'from' (a Twilio number or sender id) or 'messaging_service_sid'")
        for key in ("base_url", "status_callback_url"):
            value = opts.get(key)
            if value is not None and not (
                isinstance(value, str) and urlsplit(value).scheme in ("http", "https")
                and urlsplit(value).netloc
            ):
                bad(key, f"'{key}' must be an http(s) URL")
        try:
            if Decimal(str(opts.get("price_per_segment", 0))) < 0:
                bad("price_per_segment", "'price_per_segment' must not be negative")
        except InvalidOperation:
            bad("price_per_segment", "'price_per_segment' must be a number")
        return problems

    @classmethod
    def validate_content(cls, channel: str, content: Mapping[str, Any]) -> None:
        """``text`` (required, at most 1600 characters, no NUL) and an optional https
        ``media_url``."""
        sms_segments.validate_text(content.get("text"))
        media = content.get("media_url")
        if media is not None:
            parts = urlsplit(media) if isinstance(media, str) else None
            if parts is None or parts.scheme != "https" or not parts.netloc or any(
                ch.isspace() or ord(ch) < 32 for ch in str(media)
            ):
                raise InputError("content.media_url", "must be an https URL")

    async def start(self) -> None:
        await self.client.start()

    async def close(self) -> None:
        await self.client.close()

    def render(self, delivery: Delivery, *, now: float | None = None) -> dict[str, str]:
        """The form fields of the Messages API request for ``delivery``."""
        text = delivery.content.get("text")
        if not isinstance(text, str):
            raise DeliveryError(taxonomy.CONTENT_REJECTED, "content.text is missing",
                                provider_code="NO_TEXT")
        form = {"To": delivery.to, **self.sender, "Body": text}
        if delivery.content.get("media_url"):
            form["MediaUrl"] = str(delivery.content["media_url"])
        if self.status_callback_url:
            sep = "&" if "?" in self.status_callback_url else "?"
            form["StatusCallback"] = (
                f"{self.status_callback_url}{sep}{CALLBACK_MESSAGE_PARAM}="
                f"{quote(delivery.message_id, safe='')}"
            )
        # Twilio would otherwise still send a message queued there for 10 hours, long after
        # our TTL gave up on it.
        remaining = delivery.expires_at - (time.time() if now is None else now)
        if remaining < MAX_VALIDITY_S:
            form["ValidityPeriod"] = str(max(1, int(remaining)))
        return form

    async def check(self) -> bool:
        """List one message with the send's credentials: wrong ones answer 401 (20003)."""
        resp = await self.client.get(self.check_url, headers={
            "Authorization": self._auth, "Accept": "application/json"})
        error = classify(resp, self.name)
        if error is not None:
            raise error
        return True

    async def send(self, delivery: Delivery) -> Receipt:
        form = self.render(delivery)
        headers = {
            "Authorization": self._auth,
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            "I-Twilio-Idempotency-Token": delivery.message_id,
        }
        resp = await self.client.post(self.url, data=urlencode(form).encode(), headers=headers)
        error = classify(resp, self.name)
        if error is not None:
            raise error
        body = _json(resp)
        sid = body.get("sid") if body else None
        if not isinstance(sid, str) or not sid:
            raise DeliveryError(
                taxonomy.UNKNOWN, f"Twilio answered {resp.status} without a message SID",
                provider_code=f"HTTP {resp.status}", status=resp.status, raw=resp.text,
                maybe_sent=True,
            )
        info = sms_segments.count(form["Body"])
        cost = sms_segments.estimate_cost(info.segments, self.price)
        plural = "" if info.segments == 1 else "s"
        detail = f"{info.segments} segment{plural} ({info.encoding}), est. ${cost}"
        if "MediaUrl" in form:
            detail += " + MMS media (priced separately)"
        return Receipt(status=resp.status, provider_message_id=sid, detail=detail)
