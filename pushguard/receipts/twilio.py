"""Twilio message status callbacks: checking ``X-Twilio-Signature`` and reading the status.

Twilio signs each callback with HMAC-SHA1, keyed with the account's Auth Token, over the full
URL it called (query string included) followed by every POST parameter as name + value, sorted
by name (https://www.twilio.com/docs/usage/webhooks/webhooks-security). A JSON body is covered
instead by a ``bodySHA256`` query parameter. While an Auth Token is being rotated, callbacks
may be signed with either the primary or the secondary token, so both are tried.

Statuses (FAILURES.md §1.5): no callback comes for the initial ``queued``/``accepted``;
``sent`` means a carrier took it and may be the last word we ever get; ``delivered`` (and
``read``) confirm it; ``undelivered`` and ``failed`` are final with an ``ErrorCode`` that maps
to a cause through the same table the provider uses for its REST errors.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import parse_qs, urlsplit, urlunsplit

from pushguard import taxonomy
from pushguard.exceptions import InputError
from pushguard.providers.twilio import CALLBACK_MESSAGE_PARAM, cause_for_code
from pushguard.receipts import StatusReceipt

__all__ = ["CALLBACK_MESSAGE_PARAM", "compute_signature", "parse_status", "verify_signature"]

SIGNATURE_HEADER = "X-Twilio-Signature"

Params = Mapping[str, str] | Iterable[tuple[str, str]]

#: in flight: more callbacks may follow.
PENDING = frozenset({"queued", "accepted", "scheduled", "sending", "sent"})
#: the recipient has it.
DELIVERED = frozenset({"delivered", "read"})
#: final without delivery; the ErrorCode says why.
FAILED = frozenset({"undelivered", "failed", "partially_delivered"})
#: statuses of messages we *received*: a callback with one is misrouted.
INBOUND = frozenset({"receiving", "received"})


def compute_signature(auth_token: str, url: str, params: Params) -> str:
    """The ``X-Twilio-Signature`` Twilio would send for ``url`` and ``params``."""
    values: dict[str, set[str]] = {}
    for name, value in params.items() if isinstance(params, Mapping) else params:
        values.setdefault(name, set()).add(value)
    # Same order as Twilio's own validator: names sorted, then each name's distinct values.
    payload = url + "".join(name + v for name in sorted(values) for v in sorted(values[name]))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _url_variants(url: str) -> list[str]:
    # Twilio's signer is inconsistent about default ports, so its validators accept the URL
    # with the port removed and with the scheme's default port added.
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return [url]
    host = parts.netloc.rsplit("@", 1)[-1]
    userinfo = parts.netloc[: len(parts.netloc) - len(host)]
    bare = host if port is None else host.rsplit(":", 1)[0]
    default = "443" if parts.scheme == "https" else "80"
    variants = [url]
    for netloc in (userinfo + bare, userinfo + (host if port else f"{bare}:{default}")):
        variant = urlunsplit(parts._replace(netloc=netloc))
        if variant not in variants:
            variants.append(variant)
    return variants


def verify_signature(
    auth_token: str | Sequence[str],
    url: str,
    params: Params,
    signature: str,
    *,
    body: bytes | None = None,
) -> bool:
    """Whether ``signature`` (the ``X-Twilio-Signature`` header) signs this request.

    ``auth_token`` is the Auth Token, or a sequence of tokens (primary, secondary) during a
    rotation. ``url`` must be the exact public URL Twilio called, query string included (behind
    a proxy, rebuild it from the configured ``status_callback_url``, not from the request's own
    host). ``params`` are the form fields (a multidict's repeated fields included); for a JSON
    callback pass ``body`` and Twilio's ``bodySHA256`` query parameter is checked instead.
    """
    if not signature:
        return False
    tokens = [auth_token] if isinstance(auth_token, str) else list(auth_token)
    hashes = parse_qs(urlsplit(url).query).get("bodySHA256")
    if hashes:
        if body is None:
            return False
        digest = hashlib.sha256(body).hexdigest()
        if not hmac.compare_digest(digest.encode(), hashes[0].lower().encode()):
            return False
        params = {}
    offered = signature.strip().encode()
    for token in tokens:
        if not token:
            continue  # an unset secondary token must not verify an unsigned request
        for variant in _url_variants(url):
            if hmac.compare_digest(compute_signature(token, variant, params).encode(), offered):
                return True
    return False


def parse_status(params: Mapping[str, str]) -> StatusReceipt:
    """The status a (verified) Twilio callback reports; ``InputError`` if it is not one."""
    sid = params.get("MessageSid") or params.get("SmsSid")
    if not sid:
        raise InputError("MessageSid", "is required in a message status callback")
    status = (params.get("MessageStatus") or params.get("SmsStatus") or "").strip().lower()
    if not status:
        raise InputError("MessageStatus", "is required in a message status callback")
    if status in INBOUND:
        raise InputError("MessageStatus", f"{status!r} is an inbound message, not a receipt")
    error_code = (params.get("ErrorCode") or "").strip() or None
    cause = None
    if status in FAILED:
        code = int(error_code) if error_code and error_code.isdigit() else None
        cause = cause_for_code(code) if code is not None else taxonomy.UNKNOWN
    return StatusReceipt(
        provider_message_id=sid,
        status=status,
        error_code=error_code,
        cause=cause,
        # Unknown future statuses are treated as in flight: a later one will settle it.
        terminal=status in DELIVERED or status in FAILED or status == "canceled",
        delivered=status in DELIVERED,
        to=params.get("To") or None,
        account_sid=params.get("AccountSid") or None,
    )
