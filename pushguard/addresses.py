"""Per-channel validation and normalization of a message's ``to`` at intake.

A message whose address cannot work must be refused with a 4xx before it is queued, never
accepted and then lost (FAILURES.md §1.8, class 12). Each channel has its own rules; every one
refuses CR, LF and NUL, because addresses end up in headers (GUARANTEES.md §4.4), and every URL
goes through the SSRF guard (§4.2).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import Any

from yarl import URL

from pushguard.exceptions import HeaderInjection, InvalidAddress
from pushguard.ssrf import OutboundGuard

__all__ = [
    "CHANNELS",
    "CHAT_SCHEMES",
    "SELF_HOSTED_CHAT_SCHEMES",
    "MAX_ADDRESS_LENGTH",
    "check_header_value",
    "normalize_address",
    "normalize_address_async",
]

CHANNELS: frozenset[str] = frozenset({"webhook", "email", "sms", "fcm", "apns", "webpush", "chat"})

MAX_ADDRESS_LENGTH = 2048
# FCM does not publish a token length limit; tokens are ~160 characters today, and a longer cap
# keeps a future format from being refused at intake.
_MAX_LENGTH = {"fcm": 4096}

#: apprise-style chat schemes whose host part is a token or workspace of a hosted service,
#: not a server we connect to.
_HOSTED_CHAT_SCHEMES = frozenset({"tgram", "slack", "discord", "msteams", "gchat", "pover", "pbul"})
#: schemes whose host part is a server we would connect to, so the SSRF guard checks it.
_SELF_HOSTED_CHAT_SCHEMES = frozenset(
    {
        "mailto",
        "mailtos",
        "matrix",
        "matrixs",
        "mmost",
        "mmosts",
        "rocket",
        "rockets",
        "gotify",
        "gotifys",
    }
)
CHAT_SCHEMES: frozenset[str] = _HOSTED_CHAT_SCHEMES | _SELF_HOSTED_CHAT_SCHEMES
#: chat schemes whose host part is a server we connect to (checked by the SSRF guard).
SELF_HOSTED_CHAT_SCHEMES: frozenset[str] = _SELF_HOSTED_CHAT_SCHEMES

_FCM_TOKEN = re.compile(r"[A-Za-z0-9_:.\-]+\Z")
_HEX = re.compile(r"[0-9a-f]+\Z")
_BASE64URL = re.compile(r"[A-Za-z0-9_\-+/]+={0,2}\Z")
_CHAT_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://(.+)\Z", re.DOTALL)
# str.splitlines() breaks on these too, and so does the stdlib email header check.
_OTHER_LINE_BREAKS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_SMS_CHARS = re.compile(r"\+[0-9 ().\-]+\Z")

# (host, field) pairs whose DNS answers still have to be checked by the guard.
_Targets = list[tuple[str, str]]


def check_header_value(value: str, field: str) -> None:
    """Refuse a value bound for a header if it could end the header or start a new one.

    Raises :class:`~pushguard.exceptions.HeaderInjection` for CR, LF, NUL and the other
    characters Python treats as line breaks. NUL is checked here because the stdlib email
    module lets it through.
    """
    if "\r" in value or "\n" in value:
        raise HeaderInjection(field, "contains a line break (CR or LF)")
    if "\x00" in value:
        raise HeaderInjection(field, "contains a NUL byte")
    for char in value:
        if char in _OTHER_LINE_BREAKS:
            raise HeaderInjection(field, f"contains a line separator (U+{ord(char):04X})")


def _webhook(to: str, guard: OutboundGuard, field: str, targets: _Targets) -> str:
    url = guard.check_url(to, field=field, resolve=False)
    targets.append((URL(url).raw_host or "", field))
    return url


def _email(to: str, field: str) -> str:
    if "<" in to or ">" in to:
        raise InvalidAddress(
            field,
            "display names are not accepted (like 'Name <a@example.com>'); give the bare "
            "address, e.g. a@example.com",
        )
    for sep in ",;":
        if sep in to:
            raise InvalidAddress(
                field, f"contains {sep!r}: give exactly one email address per recipient"
            )
    # Imported here: only intake validates addresses, and a worker (which imports this module
    # for check_header_value) should not pay for these two at start-up.
    from email_validator import EmailNotValidError, validate_email

    try:
        result = validate_email(to, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidAddress(field, f"{to!r} is not a valid email address: {exc}") from exc
    normalized: str = result.normalized
    # The library enforces RFC 5321 limits too; these guard a future change of its defaults.
    local = normalized.rpartition("@")[0]
    if len(local.encode()) > 64:
        raise InvalidAddress(field, "the part before the @ is longer than 64 characters")
    if len(result.ascii_email or normalized.encode()) > 254:
        raise InvalidAddress(field, "the address is longer than 254 characters")
    return normalized


def _sms(to: str, field: str) -> str:
    example = "(expected e.g. +14155550100)"
    if not _SMS_CHARS.match(to):
        raise InvalidAddress(field, f"{to!r} is not an E.164 phone number {example}")
    import phonenumbers  # see _email

    try:
        number = phonenumbers.parse(to, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidAddress(field, f"{to!r} is not an E.164 phone number {example}") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidAddress(
            field,
            f"{to!r} is not a valid phone number for country code +{number.country_code} {example}",
        )
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _fcm(to: str, field: str) -> str:
    if not 100 <= len(to) <= 4096:
        raise InvalidAddress(
            field,
            f"is not an FCM registration token: {len(to)} characters, expected 100 to 4096",
        )
    if not _FCM_TOKEN.match(to):
        raise InvalidAddress(
            field,
            "is not an FCM registration token: expected only letters, digits, '_', '-', ':' "
            "and '.'",
        )
    return to


def _apns(to: str, field: str) -> str:
    # Tokens copied from an NSData description look like "<a1b2c3d4 e5f6...>".
    token = to.replace(" ", "").replace("<", "").replace(">", "").lower()
    if not _HEX.match(token):
        raise InvalidAddress(field, "is not an APNs device token: expected hexadecimal digits")
    if not 64 <= len(token) <= 200 or len(token) % 2:
        raise InvalidAddress(
            field,
            f"is not an APNs device token: {len(token)} hex digits, expected an even number "
            "from 64 to 200",
        )
    return token


def _b64url_key(value: object, name: str, size: int, field: str) -> bytes:
    if not isinstance(value, str) or not _BASE64URL.match(value):
        raise InvalidAddress(field, f"keys.{name} is not a base64url string")
    # Browsers emit base64url without padding; older code used standard base64 via btoa().
    text = value.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidAddress(field, f"keys.{name} is not valid base64url") from exc
    if len(raw) != size:
        raise InvalidAddress(field, f"keys.{name} decodes to {len(raw)} bytes, expected {size}")
    return raw


def _webpush(to: str, guard: OutboundGuard, field: str, targets: _Targets) -> str:
    shape = 'expected {"endpoint": "https://...", "keys": {"p256dh": "...", "auth": "..."}}'
    try:
        sub: Any = json.loads(to)
    except json.JSONDecodeError as exc:
        raise InvalidAddress(
            field, f"is not a Web Push subscription: invalid JSON ({exc.msg}); {shape}"
        ) from exc
    if not isinstance(sub, dict):
        raise InvalidAddress(field, f"is not a Web Push subscription; {shape}")
    endpoint, keys = sub.get("endpoint"), sub.get("keys")
    if not isinstance(endpoint, str) or not isinstance(keys, dict):
        raise InvalidAddress(field, f"is not a Web Push subscription; {shape}")
    endpoint_field = f"{field}.endpoint"
    endpoint = guard.check_url(endpoint.strip(), field=endpoint_field, resolve=False)
    url = URL(endpoint)
    host = url.raw_host or ""
    if url.scheme != "https" and not guard.is_allowed(host):
        raise InvalidAddress(
            endpoint_field,
            "Web Push endpoints must use https (http only for hosts allowed by "
            "PUSHGUARD_OUTBOUND_ALLOW)",
        )
    p256dh = _b64url_key(keys.get("p256dh"), "p256dh", 65, field)
    if p256dh[0] != 0x04:
        raise InvalidAddress(
            field, "keys.p256dh is not an uncompressed P-256 public key (must start with 0x04)"
        )
    auth = _b64url_key(keys.get("auth"), "auth", 16, field)
    normal: dict[str, Any] = {
        "endpoint": endpoint,
        "keys": {
            "auth": base64.urlsafe_b64encode(auth).rstrip(b"=").decode(),
            "p256dh": base64.urlsafe_b64encode(p256dh).rstrip(b"=").decode(),
        },
    }
    expiration = sub.get("expirationTime")
    if expiration is not None:
        if isinstance(expiration, bool) or not isinstance(expiration, int | float):
            raise InvalidAddress(field, "expirationTime must be a number (milliseconds) or null")
        normal["expirationTime"] = expiration
    targets.append((host, endpoint_field))
    return json.dumps(normal, sort_keys=True, separators=(",", ":"))


def _chat(to: str, guard: OutboundGuard, field: str, targets: _Targets) -> str:
    match = _CHAT_URL.match(to)
    if match is None:
        raise InvalidAddress(
            field,
            "is not a chat URL: expected an https:// incoming-webhook URL or a scheme:// URL "
            f"with one of: {', '.join(sorted(CHAT_SCHEMES))}",
        )
    scheme = match.group(1).lower()
    if scheme in ("http", "https"):
        return _webhook(to, guard, field, targets)
    if scheme not in CHAT_SCHEMES:
        raise InvalidAddress(
            field,
            f"chat scheme {scheme!r} is not supported; use https:// or one of: "
            f"{', '.join(sorted(CHAT_SCHEMES))}",
        )
    # Both kinds carry their secrets in the URL, so no other rule than "no whitespace" applies.
    for char in to:
        if char.isspace() or not char.isprintable():
            raise InvalidAddress(
                field, f"chat URL contains a space or control character (U+{ord(char):04X})"
            )
    normalized = scheme + to[len(scheme) :]
    if scheme in _SELF_HOSTED_CHAT_SCHEMES:
        try:
            parsed = URL(normalized)
        except (ValueError, UnicodeError) as exc:
            raise InvalidAddress(field, f"chat URL cannot be parsed: {exc}") from exc
        servers = [parsed.raw_host or ""]
        # apprise's mailto:// takes an explicit SMTP server as ?smtp=host.
        servers.extend(parsed.query.getall("smtp", ()))
        for server in servers:
            if not server:
                raise InvalidAddress(field, f"{scheme}:// URL has no server host")
            guard.check_host(server, field=field, resolve=False)
            targets.append((server, field))
    return normalized


def _validate(channel: str, to: str, guard: OutboundGuard, field: str) -> tuple[str, _Targets]:
    if channel not in CHANNELS:
        raise InvalidAddress(
            "channel",
            f"unknown channel {channel!r}; expected one of: {', '.join(sorted(CHANNELS))}",
        )
    if not isinstance(to, str):
        raise InvalidAddress(field, f"must be a string, not {type(to).__name__}")
    check_header_value(to, field)
    to = to.strip()
    if not to:
        raise InvalidAddress(field, "must not be empty")
    limit = _MAX_LENGTH.get(channel, MAX_ADDRESS_LENGTH)
    if len(to) > limit:
        raise InvalidAddress(field, f"is {len(to)} characters long; the limit is {limit}")
    targets: _Targets = []
    simple: dict[str, Callable[[str, str], str]] = {
        "email": _email,
        "sms": _sms,
        "fcm": _fcm,
        "apns": _apns,
    }
    if channel in simple:
        return simple[channel](to, field), targets
    networked = {"webhook": _webhook, "webpush": _webpush, "chat": _chat}[channel]
    return networked(to, guard, field, targets), targets


def normalize_address(
    channel: str, to: str, *, guard: OutboundGuard, field: str = "to", resolve: bool = True
) -> str:
    """Validate ``to`` for ``channel`` and return its normalized form.

    Normal forms: webhook and chat URLs as yarl prints them; email via ``email_validator``
    (domain lower-cased, IDN handled); sms as E.164 (``+14155550100``); APNs tokens as
    lower-case hex; Web Push subscriptions as compact JSON with sorted keys and unpadded
    base64url keys. Raises :class:`~pushguard.exceptions.InvalidAddress`,
    :class:`~pushguard.exceptions.UnsafeURL` or :class:`~pushguard.exceptions.HeaderInjection`.

    URL hosts are resolved (through the guard's cache) unless ``resolve`` is False; that
    blocks on DNS, so async callers should use :func:`normalize_address_async`.
    """
    normalized, targets = _validate(channel, to, guard, field)
    if resolve:
        for host, host_field in targets:
            guard.check_host(host, field=host_field)
    return normalized


async def normalize_address_async(
    channel: str, to: str, *, guard: OutboundGuard, field: str = "to", resolve: bool = True
) -> str:
    """:func:`normalize_address` resolving hosts through the event loop."""
    normalized, targets = _validate(channel, to, guard, field)
    if resolve:
        for host, host_field in targets:
            await guard.check_host_async(host, field=host_field)
    return normalized
