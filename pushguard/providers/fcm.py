"""Firebase Cloud Messaging, HTTP v1 API, authenticated as a Google service account.

``POST {base_url}/v1/projects/{project_id}/messages:send`` with an OAuth2 access token got by
the JWT-bearer grant (an RS256 assertion signed with the service account's key). The token is
cached until five minutes before it expires, one refresh at a time; a 401 ``UNAUTHENTICATED``
refreshes it once and sends once more (FCM has no idempotency key, but a 401 was not
processed). Errors are classified by the FCM ``errorCode``, then the google.rpc ``status``,
then the HTTP status (FAILURES.md §1.1).

Content (``channel = "fcm"``): ``title``, ``body``, ``image`` (URL), ``data`` (string to string),
``collapse_key``, ``apns`` (an FCM ``ApnsConfig`` passed through). It needs a title or body, or
data; the serialized message must fit 4096 bytes, which intake checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from pushguard import taxonomy
from pushguard.config import resolve
from pushguard.exceptions import ConfigError, DeliveryError, InputError
from pushguard.providers.base import Delivery, Provider, ProviderContext, ProviderMeta, Receipt
from pushguard.providers.httpclient import HttpClient, Response, parse_retry_after

if TYPE_CHECKING:
    from pushguard.config import ProviderConfig

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
MAX_MESSAGE = 4096
MAX_TTL = 28 * 86400
#: FCM asks for at least a minute of back-off after the project or topic quota is exceeded
QUOTA_MIN_DELAY = 60.0
CONTENT_KEYS = frozenset({"title", "body", "image", "data", "collapse_key", "apns"})
RESERVED_DATA_KEYS = frozenset({"from", "gcm", "message_type"})
RESERVED_DATA_PREFIXES = ("google", "gcm.")
_INVALID_TOKEN = "not a valid fcm registration token"

# FCM errorCode or google.rpc status -> (cause, what it means); the first match wins.
_CODES: dict[str, tuple[taxonomy.Cause, str]] = {
    "UNREGISTERED": (taxonomy.UNREGISTERED_TOKEN,
                     "the registration token is no longer valid (app uninstalled or expired)"),
    "SENDER_ID_MISMATCH": (taxonomy.SENDER_CONFIG, "the token belongs to another Firebase "
                           "project; check project_id and the service account"),
    "THIRD_PARTY_AUTH_ERROR": (taxonomy.AUTH_CREDENTIALS, "the APNs key or Web Push "
                               "credentials uploaded to Firebase are invalid or missing"),
    "UNAUTHENTICATED": (taxonomy.AUTH_CREDENTIALS,
                        "the service account's access token was refused even after a refresh"),
    "PERMISSION_DENIED": (taxonomy.AUTH_CREDENTIALS,
                          "the service account may not send messages for this project"),
    "NOT_FOUND": (taxonomy.SENDER_CONFIG, "FCM does not know this project; check project_id"),
    "UNAVAILABLE": (taxonomy.PROVIDER_OUTAGE, "FCM is overloaded"),
    "INTERNAL": (taxonomy.PROVIDER_OUTAGE, "FCM had an internal error"),
    "DEADLINE_EXCEEDED": (taxonomy.NETWORK_TIMEOUT, "FCM timed out inside"),
    "UNSPECIFIED_ERROR": (taxonomy.UNKNOWN, "FCM gave no reason"),
}


def build_message(
    content: Mapping[str, Any], *, token: str, ttl: int, priority: int
) -> dict[str, Any]:
    """The v1 ``message`` for ``content``; raises ``InputError`` for content FCM refuses."""
    unknown = sorted(set(content) - CONTENT_KEYS)
    if unknown:
        raise InputError(f"content.{unknown[0]}", "is not an FCM content field; expected one of "
                         + ", ".join(sorted(CONTENT_KEYS)))
    notification: dict[str, str] = {}
    for key in ("title", "body", "image"):
        if key in content:
            value = content[key]
            if not isinstance(value, str) or not value:
                raise InputError(f"content.{key}", "must be a non-empty string")
            notification[key] = value
    if "image" in notification and not notification["image"].startswith(("https://", "http://")):
        raise InputError("content.image", "must be an http(s) URL")
    if notification and not notification.keys() & {"title", "body"}:
        raise InputError("content.image", "needs a title or body to go with it")
    data = content.get("data", {})
    if not isinstance(data, Mapping):
        raise InputError("content.data", "must be an object of strings")
    for key, value in data.items():
        if not isinstance(key, str) or not key:
            raise InputError("content.data", "keys must be non-empty strings")
        if key in RESERVED_DATA_KEYS or key.startswith(RESERVED_DATA_PREFIXES):
            raise InputError(f"content.data.{key}", "is a key reserved by FCM")
        if not isinstance(value, str):
            raise InputError(f"content.data.{key}", "must be a string (FCM data values are "
                             "strings; encode other values as JSON text)")
    if not notification and not data:
        raise InputError("content", "needs a title or body, or data")
    android: dict[str, Any] = {
        "ttl": f"{min(max(ttl, 0), MAX_TTL)}s",
        "priority": "HIGH" if priority <= 0 else "NORMAL",
    }
    if "collapse_key" in content:
        if not isinstance(content["collapse_key"], str) or not content["collapse_key"]:
            raise InputError("content.collapse_key", "must be a non-empty string")
        android["collapse_key"] = content["collapse_key"]
    message: dict[str, Any] = {"token": token}
    if notification:
        message["notification"] = notification
    if data:
        message["data"] = dict(data)
    message["android"] = android
    if "apns" in content:
        if not isinstance(content["apns"], Mapping):
            raise InputError("content.apns", "must be an FCM ApnsConfig object")
        message["apns"] = dict(content["apns"])
    return message


def _encode(message: dict[str, Any]) -> bytes:
    """The request body; UTF-8 rather than \\u escapes, so the size counts what FCM counts."""
    return json.dumps({"message": message}, separators=(",", ":"), ensure_ascii=False).encode()


def _google_error(resp: Response) -> tuple[str | None, str | None, str, list[dict[str, Any]]]:
    """(FCM errorCode, google.rpc status, message, details) of an error body."""
    try:
        error = json.loads(resp.body).get("error")
    except (ValueError, AttributeError):
        return None, None, "", []
    if not isinstance(error, dict):
        return None, None, "", []
    details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    fcm_code = next((str(d.get("errorCode")) for d in details if d.get("@type") == FCM_ERROR
                     and d.get("errorCode")), None)
    status = error.get("status")
    return fcm_code, str(status) if status else None, str(error.get("message") or ""), details


def _quota_scope(details: list[dict[str, Any]], message: str) -> str:
    """Which quota ran out, from the QuotaFailure violations (else the message): device,
    topic or the whole project."""
    words = [str(v.get(k, "")) for d in details if d.get("@type") == QUOTA_FAILURE
             for v in d.get("violations") or [] if isinstance(v, dict)
             for k in ("subject", "description")]
    text = " ".join(words or [message]).lower()
    return "device" if "device" in text else "topic" if "topic" in text else "provider"


def classify(resp: Response) -> DeliveryError | None:
    """None for success, else what an FCM answer means (FAILURES.md §1.1)."""
    status = resp.status
    if status == 200:
        return None
    fcm_code, rpc_status, message, details = _google_error(resp)
    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
    code = fcm_code or rpc_status or f"HTTP {status}"

    def error(cause: taxonomy.Cause, what: str, **kw: Any) -> DeliveryError:
        text = f"FCM {status} {code}: {what}" + (f" ({message})" if message else "")
        return DeliveryError(cause, text, provider_code=code, status=status, raw=resp.text, **kw)

    codes = [c for c in (fcm_code, rpc_status) if c]
    if "INVALID_ARGUMENT" in codes or any(d.get("@type") == BAD_REQUEST for d in details):
        fields = [str(v.get("field")) for d in details if d.get("@type") == BAD_REQUEST
                  for v in d.get("fieldViolations") or [] if isinstance(v, dict)]
        if _INVALID_TOKEN in message.lower() or "message.token" in fields:
            return error(taxonomy.INVALID_RECIPIENT, "the registration token is malformed")
        return error(taxonomy.CONTENT_REJECTED, "FCM refused the message")
    if {"QUOTA_EXCEEDED", "RESOURCE_EXHAUSTED"} & set(codes) or (not codes and status == 429):
        scope = _quota_scope(details, message)
        if scope != "device":
            retry_after = max(retry_after or 0.0, QUOTA_MIN_DELAY)
        return error(taxonomy.RATE_LIMITED, f"{scope} sending quota exceeded",
                     retry_after=retry_after, scope=scope)
    for name in codes:
        if name in _CODES:
            cause, what = _CODES[name]
            return error(cause, what, maybe_sent=cause is taxonomy.NETWORK_TIMEOUT,
                         retry_after=retry_after if cause.transient else None)
    if status >= 500:
        return error(taxonomy.PROVIDER_OUTAGE, "server error", retry_after=retry_after)
    if status == 413:
        return error(taxonomy.CONTENT_REJECTED, "the message is too large")
    if status in (401, 403) and resp.content_type == "application/json":
        return error(taxonomy.AUTH_CREDENTIALS, "the service account was refused")
    return error(taxonomy.UNKNOWN, "unrecognised answer")


@dataclass(frozen=True)
class ServiceAccount:
    """The parts of a service-account JSON key that sending needs."""

    client_email: str
    private_key: rsa.RSAPrivateKey
    token_uri: str
    project_id: str | None
    private_key_id: str | None = None


def load_service_account(value: Any, *, location: str) -> ServiceAccount:
    """A service account from a dict, JSON text or a path to the JSON file (``env:`` resolved
    by the caller). Error messages never quote the value: it is a secret."""
    doc = value
    if isinstance(value, str):
        text = value
        if not value.lstrip().startswith("{"):
            try:
                text = Path(value).expanduser().read_text()
            except (OSError, ValueError) as exc:
                raise ConfigError("service_account is neither JSON nor a readable file",
                                  location=location) from exc
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ConfigError("service_account is not valid JSON", location=location) from exc
    if not isinstance(doc, Mapping):
        raise ConfigError("service_account must be a service-account JSON key", location=location)
    missing = [k for k in ("client_email", "private_key") if not isinstance(doc.get(k), str)]
    if missing:
        raise ConfigError(f"service_account lacks {', '.join(missing)}", location=location)
    try:
        key = load_pem_private_key(doc["private_key"].encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError("service_account private_key is not a PEM key",
                          location=location) from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError("service_account private_key must be an RSA key", location=location)
    return ServiceAccount(
        client_email=doc["client_email"],
        private_key=key,
        token_uri=str(doc.get("token_uri") or GOOGLE_TOKEN_URI),
        project_id=str(doc["project_id"]) if doc.get("project_id") else None,
        private_key_id=str(doc["private_key_id"]) if doc.get("private_key_id") else None,
    )


class AccessTokens:
    """OAuth2 access tokens for a service account, fetched one at a time and cached until
    five minutes before they expire (``clock`` times the cache; the assertion always carries
    the real time, as Google checks it)."""

    def __init__(self, account: ServiceAccount, client: HttpClient, token_uri: str,
                 *, clock: Callable[[], float] = time.time) -> None:
        self.account, self.client, self.token_uri, self._clock = account, client, token_uri, clock
        self._token = ""
        self._renew_at = 0.0
        self._lock = asyncio.Lock()
        #: token requests made so far
        self.fetches = 0

    def assertion(self) -> str:
        """The signed JWT that the token endpoint trades for an access token."""
        now = int(time.time())
        claims = {"iss": self.account.client_email, "scope": SCOPE, "aud": self.token_uri,
                  "iat": now, "exp": now + 3600}
        headers = {"kid": self.account.private_key_id} if self.account.private_key_id else None
        return jwt.encode(claims, self.account.private_key, algorithm="RS256", headers=headers)

    async def get(self) -> str:
        """A valid access token, fetching one if needed."""
        if self._token and self._clock() < self._renew_at:
            return self._token
        async with self._lock:
            if not self._token or self._clock() >= self._renew_at:
                await self._fetch()
            return self._token

    async def fresh(self) -> str:
        """A token fetched now, whatever is cached (a live check of the credentials)."""
        async with self._lock:
            await self._fetch()
            return self._token

    async def refresh(self, rejected: str) -> str:
        """A token other than ``rejected`` (which FCM refused), fetching one unless another
        send already did."""
        async with self._lock:
            if self._token == rejected or self._clock() >= self._renew_at:
                await self._fetch()
            return self._token

    async def _fetch(self) -> None:
        self.fetches += 1
        form = urlencode({"grant_type": JWT_BEARER, "assertion": self.assertion()}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        try:
            resp = await self.client.post(self.token_uri, data=form, headers=headers)
        except DeliveryError as exc:
            # The message itself was never sent, whatever happened to the token request.
            raise DeliveryError(exc.cause, f"OAuth2 token endpoint: {exc.detail}",
                                provider_code=exc.provider_code, status=exc.status,
                                retry_after=exc.retry_after) from exc
        doc: Any = None
        with contextlib.suppress(ValueError):
            doc = json.loads(resp.body)
        if resp.status == 200 and isinstance(doc, dict) and isinstance(doc.get("access_token"),
                                                                       str):
            try:
                lifetime = float(doc.get("expires_in") or 3600)
            except (TypeError, ValueError):
                lifetime = 3600.0
            self._token = doc["access_token"]
            self._renew_at = self._clock() + lifetime - min(300.0, lifetime / 2)
            return
        raise _token_error(resp, doc)


def _token_error(resp: Response, doc: Any) -> DeliveryError:
    status = resp.status
    reason = ""
    if isinstance(doc, dict) and status != 200:
        reason = f": {doc.get('error', '')} {doc.get('error_description', '')}".rstrip()
    detail = f"OAuth2 token endpoint answered {status}{reason}"
    code = f"OAUTH {status}"
    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
    raw = resp.text if status != 200 else None  # a 200 body may hold a token: never keep it
    if status >= 500:
        return DeliveryError(taxonomy.PROVIDER_OUTAGE, detail, provider_code=code, status=status,
                             raw=raw, retry_after=retry_after)
    if status == 429:
        return DeliveryError(taxonomy.RATE_LIMITED, detail, provider_code=code, status=status,
                             raw=raw, retry_after=retry_after, scope="provider")
    if status == 200:
        return DeliveryError(taxonomy.UNKNOWN, f"{detail} without an access token",
                             provider_code=code, status=status)
    return DeliveryError(taxonomy.AUTH_CREDENTIALS, f"{detail}; check the service account key "
                         "(revoked or deleted?) and the host clock", provider_code=code,
                         status=status, raw=raw)


def _account(options: Mapping[str, Any], location: str) -> ServiceAccount:
    loc = f"{location}.service_account"
    if options.get("service_account") is None:
        raise ConfigError("'service_account' (path, JSON or env:NAME) is required", location=loc)
    return load_service_account(resolve(options["service_account"], location=loc), location=loc)


class FcmProvider(Provider):
    """Sends on the ``fcm`` channel through the FCM HTTP v1 API."""

    meta = ProviderMeta(
        type="fcm",
        channels=frozenset({"fcm"}),
        secret_options=frozenset({"service_account"}),
        max_payload_bytes=MAX_MESSAGE,
        description="Firebase Cloud Messaging HTTP v1 (service account)",
    )

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        loc = f"providers.{config.name}"
        account = _account(config.options, loc)
        project = config.options.get("project_id") or account.project_id
        if not project:
            raise ConfigError("'project_id' is required (the service account has none)",
                              location=f"{loc}.project_id")
        base = str(config.options.get("base_url") or "https://fcm.googleapis.com").rstrip("/")
        self.url = f"{base}/v1/projects/{project}/messages:send"
        self.client = HttpClient.for_provider(config, context)
        token_uri = str(config.options.get("token_uri") or account.token_uri)
        self.tokens = AccessTokens(account, self.client, token_uri)

    @classmethod
    def check_options(cls, config: ProviderConfig, *, location: str) -> list[ConfigError]:
        try:
            account = _account(config.options, location)
        except ConfigError as exc:
            return [exc]
        if not (config.options.get("project_id") or account.project_id):
            return [ConfigError("'project_id' is required (the service account has none)",
                                location=f"{location}.project_id")]
        return []

    @classmethod
    def validate_content(cls, channel: str, content: Mapping[str, Any]) -> None:
        message = build_message(content, token="", ttl=MAX_TTL, priority=1)
        size = len(_encode(message))
        if size > MAX_MESSAGE:
            raise InputError("content", f"makes an FCM message of {size} bytes; the limit is "
                             f"{MAX_MESSAGE}")

    async def start(self) -> None:
        await self.client.start()

    async def close(self) -> None:
        await self.client.close()

    async def check(self) -> bool:
        """Trade the service account's signed assertion for a fresh access token, as a send
        would: a revoked key or a wrong token endpoint fails here. Nothing is sent."""
        await self.tokens.fresh()
        return True

    async def _post(self, body: bytes, token: str) -> Response:
        headers = {"Authorization": f"Bearer {token}",
                   "Content-Type": "application/json; charset=UTF-8"}
        return await self.client.post(self.url, data=body, headers=headers)

    async def send(self, delivery: Delivery) -> Receipt:
        ttl = int(delivery.expires_at - time.time())
        try:
            message = build_message(delivery.content, token=delivery.to, ttl=ttl,
                                    priority=delivery.priority)
        except InputError as exc:
            raise DeliveryError(taxonomy.CONTENT_REJECTED, f"{exc.field}: {exc.problem}",
                                provider_code="INVALID_CONTENT") from exc
        body = _encode(message)
        token = await self.tokens.get()
        resp = await self._post(body, token)
        if resp.status == 401 and _google_error(resp)[0] != "THIRD_PARTY_AUTH_ERROR":
            resp = await self._post(body, await self.tokens.refresh(token))
        error = classify(resp)
        if error is not None:
            raise error
        try:
            name = json.loads(resp.body)["name"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DeliveryError(taxonomy.UNKNOWN, "FCM answered 200 without a message name; it "
                                "may or may not have accepted the message",
                                provider_code="HTTP 200", status=200, raw=resp.text,
                                maybe_sent=True) from exc
        return Receipt(status=200, provider_message_id=str(name), detail="accepted by FCM")
