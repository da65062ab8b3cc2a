"""VAPID (RFC 8292): the application server's identity on every Web Push request.

A JWT (ES256) with ``aud`` = the push service's origin, ``exp`` at most 24 hours ahead and
``sub`` = a contact, sent as ``Authorization: vapid t=<jwt>, k=<public key>``. Tokens are
signed with py_vapid and reused per origin for half a day, so signing is not on every send.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid.jwt import sign as sign_jwt

from pushguard.config import resolve
from pushguard.exceptions import ConfigError

#: exp stays under RFC 8292's 24 h with two hours of margin for the push service's clock...
TOKEN_LIFETIME = 22 * 3600
#: ...and a cached token still has ten hours left when it is last used.
TOKEN_REUSE = 12 * 3600
_SUBJECT = re.compile(r"(mailto:[^@\s]+@[^@\s]+|https://[^\s/]+\S*)\Z", re.IGNORECASE)


def b64decode(value: str) -> bytes:
    """base64url, padded or not (standard base64 characters tolerated)."""
    value = value.replace("+", "-").replace("/", "_").rstrip("=")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


class VapidSigner:
    """Signs VAPID tokens with one application-server key, cached per push-service origin."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, subject: str) -> None:
        self._key = key
        self.subject = subject
        raw = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        #: the applicationServerKey browsers must have subscribed with.
        self.public_key = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        self._cache: dict[str, tuple[str, float]] = {}

    def header(self, origin: str, now: float) -> str:
        """``Authorization: vapid t=<jwt>, k=<public key>`` for a push service's origin."""
        hit = self._cache.get(origin)
        if hit is not None and hit[1] > now:
            return hit[0]
        claims = {"aud": origin, "exp": int(now) + TOKEN_LIFETIME, "sub": self.subject}
        value = f"vapid t={sign_jwt(claims, self._key)}, k={self.public_key}"
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[origin] = (value, now + TOKEN_REUSE)
        return value

    def forget(self, origin: str) -> None:
        """Drop the cached token, so the next request signs a new one."""
        self._cache.pop(origin, None)


def load_signer(options: Mapping[str, Any], *, location: str) -> VapidSigner:
    """The signer from ``vapid_private_key`` and ``vapid_subject``; ConfigError otherwise.

    Messages never contain the key itself.
    """
    subject = options.get("vapid_subject")
    if not isinstance(subject, str) or not _SUBJECT.match(subject):
        raise ConfigError("'vapid_subject' must be a mailto: address or an https:// URL "
                          "(push services use it to contact you)",
                          location=f"{location}.vapid_subject")
    if subject.lower().endswith(("@localhost", "//localhost")):
        raise ConfigError("'vapid_subject' must be a real contact: Apple's push service "
                          "refuses localhost subjects (403 BadJwtToken)",
                          location=f"{location}.vapid_subject")
    where = f"{location}.vapid_private_key"
    text = resolve(options.get("vapid_private_key"), location=where)
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("'vapid_private_key' is required (PEM, or base64url of the raw "
                          "32-byte key; `env:NAME` to read it from the environment)",
                          location=where)
    try:
        key = _load_key(text.strip())
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError("'vapid_private_key' is not a readable EC private key (PEM, DER "
                          "base64 or raw base64url)", location=where) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ConfigError("'vapid_private_key' must be a P-256 (prime256v1) EC key",
                          location=where)
    return VapidSigner(key, subject)


def _load_key(text: str) -> object:
    if text.startswith("-----BEGIN"):
        return serialization.load_pem_private_key(text.encode(), password=None)
    raw = b64decode(text)
    if len(raw) == 32:
        return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    return serialization.load_der_private_key(raw, password=None)
