"""Amazon SES bounce, complaint and delivery notifications, as delivered by Amazon SNS.

SES reports what happened to a message after it accepted it by publishing to an SNS topic;
SNS POSTs each notification to our HTTPS endpoint as a JSON envelope whose ``Message`` field
is the SES notification, itself JSON (FAILURES.md §1.6). Two steps, both pure:

* :func:`verify_sns` checks the envelope is really from SNS: the signing certificate must
  come from an SNS host (checked *before* anything is fetched, so a forged envelope cannot make
  us request an arbitrary URL), the RSA signature must cover the canonical string AWS defines
  (https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html), and the
  timestamp must be recent so a captured message cannot be replayed later.
* :func:`parse_ses` turns the verified ``Message`` into :class:`~pushguard.receipts.dsn.Bounce`
  records (one per recipient), so :func:`pushguard.receipts.dsn.record_bounces` applies them
  exactly as it applies SMTP DSNs.

A valid SNS signature only proves *some* AWS account's topic sent the message: anyone can
subscribe our endpoint to their own topic. Pass ``topic_arns`` to accept only our topics.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from pushguard import taxonomy
from pushguard.exceptions import AuthError, InputError
from pushguard.providers.smtp import classify
from pushguard.receipts.dsn import Bounce
from pushguard.taxonomy import Cause

__all__ = [
    "MAX_AGE",
    "CertCache",
    "SesBounce",
    "canonical_string",
    "check_cert_url",
    "confirmation_url",
    "parse_ses",
    "verify_sns",
]

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"

#: seconds after its Timestamp that an SNS message is still accepted (replay window).
MAX_AGE = 3600.0
#: how far in the future a Timestamp may be: tolerates clock skew, not post-dated messages.
MAX_SKEW = 300.0

_SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")

# AWS signs these fields, in this order, as "Key\nValue\n" each (Subject only when present).
_NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_KEYS = (
    "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
)
_KEYS = {
    NOTIFICATION: _NOTIFICATION_KEYS,
    SUBSCRIPTION_CONFIRMATION: _CONFIRMATION_KEYS,
    UNSUBSCRIBE_CONFIRMATION: _CONFIRMATION_KEYS,
}
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}

_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
_MSGID = re.compile(r"<([^@<>\s]+)@[^<>\s]+>")
_BARE_MSGID = re.compile(r"^([^@<>\s]+)@([^<>\s]+)$")

# bounceSubType first: content problems and account suppression mean the same thing whatever
# bounceType SES files them under.
_SUBTYPE_CAUSES: dict[str, Cause] = {
    "MessageTooLarge": taxonomy.CONTENT_REJECTED,
    "ContentRejected": taxonomy.CONTENT_REJECTED,
    "AttachmentRejected": taxonomy.CONTENT_REJECTED,
    "OnAccountSuppressionList": taxonomy.NO_CONSENT,
}
# Otherwise by bounceType; unknown Permanent subtypes are hard bounces ("General" per AWS).
_TYPE_CAUSES: dict[str, Cause] = {
    "Permanent": taxonomy.INVALID_RECIPIENT,
    "Transient": taxonomy.RECIPIENT_TEMPORARY,
    "Undetermined": taxonomy.UNKNOWN,
}


# -- SNS verification ---------------------------------------------------------------------------


class CertCache:
    """Fetches SNS signing certificates once per URL and keeps them parsed.

    Pass an instance as ``fetch_cert`` to :func:`verify_sns`; it is callable like the fetch
    function it wraps. A per-instance cache (no module globals) so tests and tenants stay
    independent. Only certificates that parsed are kept, so a bad fetch is retried next time.
    """

    def __init__(self, fetch: Callable[[str], bytes], *, max_entries: int = 16) -> None:
        self._fetch = fetch
        self._max = max_entries
        self._certs: OrderedDict[str, tuple[bytes, x509.Certificate]] = OrderedDict()

    def __call__(self, url: str) -> bytes:
        return self._entry(url)[0]

    def certificate(self, url: str) -> x509.Certificate:
        """The parsed certificate at ``url``; ``AuthError`` if it is not a PEM certificate."""
        return self._entry(url)[1]

    def _entry(self, url: str) -> tuple[bytes, x509.Certificate]:
        hit = self._certs.get(url)
        if hit is not None:
            self._certs.move_to_end(url)
            return hit
        pem = self._fetch(url)
        entry = (pem, _load_cert(pem))
        self._certs[url] = entry
        # SNS rotates certificates rarely; a small LRU bounds memory if URLs ever churn.
        while len(self._certs) > self._max:
            self._certs.popitem(last=False)
        return entry

    def __len__(self) -> int:
        return len(self._certs)


def check_cert_url(
    url: object, cert_hosts: Collection[str] = (), *, field: str = "SigningCertURL"
) -> str:
    """``url``, if it is an SNS host over https or an allow-listed host; else ``AuthError``.

    ``cert_hosts`` entries match the host (or ``host:port``) exactly, no suffixes: they are for
    tests and on-premises SNS stand-ins, which may use plain http.
    """
    if not isinstance(url, str) or not url:
        raise AuthError(f"SNS message refused: {field} is missing")
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError as err:
        raise AuthError(f"SNS message refused: {field} is not a valid URL ({err})") from err
    if "@" in parts.netloc or any(c in url for c in "\r\n\t "):
        raise AuthError(f"SNS message refused: {field} has userinfo or whitespace")
    netloc = f"{host}:{port}" if port is not None else host
    allowed = {h.lower() for h in cert_hosts}
    if host in allowed or netloc in allowed:
        if parts.scheme not in ("http", "https"):
            raise AuthError(f"SNS message refused: {field} must be http(s), not {parts.scheme!r}")
    elif parts.scheme != "https":
        raise AuthError(f"SNS message refused: {field} must use https")
    elif not _SNS_HOST.match(host) or port not in (None, 443):
        raise AuthError(f"SNS message refused: {field} host {host!r} is not an SNS host")
    if field == "SigningCertURL" and not parts.path.endswith(".pem"):
        raise AuthError("SNS message refused: SigningCertURL path must end in .pem")
    return url


def canonical_string(message: Mapping[str, Any]) -> bytes:
    """The bytes SNS signs for ``message`` (its type decides the fields)."""
    kind = message.get("Type")
    keys = _KEYS.get(kind) if isinstance(kind, str) else None
    if keys is None:
        raise AuthError(f"SNS message refused: unknown Type {kind!r}")
    out = []
    for key in keys:
        value = message.get(key)
        if value is None and key == "Subject":
            continue  # AWS includes Subject only when the publisher set one
        if not isinstance(value, str):
            raise AuthError(f"SNS message refused: {key} is missing or not a string")
        out.append(f"{key}\n{value}\n")
    return "".join(out).encode()


def verify_sns(
    message: Mapping[str, Any],
    *,
    fetch_cert: Callable[[str], bytes],
    cert_hosts: Collection[str] = (),
    topic_arns: Collection[str] | None = None,
    now: Callable[[], float] = time.time,
    max_age: float = MAX_AGE,
) -> None:
    """Return if ``message`` (the parsed SNS JSON body) is signed by SNS; ``AuthError`` if not.

    ``fetch_cert`` GETs a certificate URL (use a :class:`CertCache` to fetch each only once);
    it is only called for URLs that passed :func:`check_cert_url`. ``topic_arns``, when given,
    is the set of our topics: anything else is refused, because any AWS account can produce a
    validly signed message. ``now`` is the clock, for the replay window.
    """
    if not isinstance(message, Mapping):
        raise AuthError("SNS message refused: body is not a JSON object")
    data = canonical_string(message)  # first: it rejects unknown types and missing fields
    version = message.get("SignatureVersion")
    algorithm = _HASHES.get(version) if isinstance(version, str) else None
    if algorithm is None:
        raise AuthError(f"SNS message refused: unsupported SignatureVersion {version!r}")
    if topic_arns is not None and message.get("TopicArn") not in topic_arns:
        raise AuthError(f"SNS message refused: TopicArn {message.get('TopicArn')!r} is not ours")
    _check_timestamp(message["Timestamp"], now(), max_age)
    # Before fetching: never GET a URL an attacker chose.
    url = check_cert_url(message.get("SigningCertURL"), cert_hosts)
    try:
        signature = base64.b64decode(str(message.get("Signature") or ""), validate=True)
    except (binascii.Error, ValueError) as err:
        raise AuthError("SNS message refused: Signature is not base64") from err
    if not signature:
        raise AuthError("SNS message refused: Signature is missing")
    if isinstance(fetch_cert, CertCache):
        cert = fetch_cert.certificate(url)
    else:
        cert = _load_cert(fetch_cert(url))
    _check_validity(cert, now())
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise AuthError("SNS message refused: signing certificate does not hold an RSA key")
    try:
        key.verify(signature, data, padding.PKCS1v15(), algorithm())
    except InvalidSignature as err:
        raise AuthError("SNS message refused: signature does not match") from err


def _load_cert(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except (ValueError, TypeError) as err:
        raise AuthError("SNS message refused: SigningCertURL is not a PEM certificate") from err


def _check_validity(cert: x509.Certificate, now: float) -> None:
    # Cached certificates outlive their validity unless checked on every use.
    start = cert.not_valid_before_utc.timestamp()
    end = cert.not_valid_after_utc.timestamp()
    if not start <= now <= end:
        raise AuthError("SNS message refused: signing certificate is expired or not yet valid")


def _check_timestamp(value: str, now: float, max_age: float) -> None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as err:
        raise AuthError(f"SNS message refused: Timestamp {value!r} is not ISO 8601") from err
    # SNS always sends UTC ("...Z"); a zone-less value must not be read as local time.
    at = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    if now - at > max_age:
        raise AuthError(f"SNS message refused: Timestamp {value} is too old (possible replay)")
    if at - now > MAX_SKEW:
        raise AuthError(f"SNS message refused: Timestamp {value} is in the future")


def confirmation_url(
    message: Mapping[str, Any], *, cert_hosts: Collection[str] = ()
) -> str | None:
    """The ``SubscribeURL`` to GET to confirm a (verified) SubscriptionConfirmation.

    None for other message types. ``AuthError`` if the URL is not an SNS host (or one of
    ``cert_hosts``): the GET is ours, so its target gets the same check as a certificate URL.
    """
    if message.get("Type") != SUBSCRIPTION_CONFIRMATION:
        return None
    return check_cert_url(message.get("SubscribeURL"), cert_hosts, field="SubscribeURL")


# -- SES parsing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SesBounce(Bounce):
    """A :class:`Bounce` from SES, which can also say "suppress" where a DSN cannot.

    ``Bounce.suppress`` needs a 5.x.x failure whose cause's action is SUPPRESS; a complaint
    (NO_CONSENT, action SKIP, no status code) and an account-suppression bounce must still
    put the address on our list, or we keep mailing people who marked us as spam.
    """

    #: SES's own id for the message (``mail.messageId``).
    ses_message_id: str | None = None
    #: ``Bounce``, ``Complaint`` or ``Delivery``.
    kind: str = ""
    #: ``bounceType/bounceSubType`` or the complaint's sub-type, for the history.
    subtype: str = ""
    force_suppress: bool = False

    @property
    def suppress(self) -> bool:
        # Two-argument super(): zero-argument super() breaks in slotted dataclasses.
        return self.force_suppress or super(SesBounce, self).suppress


_REPLY = re.compile(r"([245]\d\d)\b")


def parse_ses(message: Mapping[str, Any]) -> list[Bounce]:
    """The recipients' fates in one (verified) SNS notification carrying an SES event.

    ``InputError`` when ``Message`` is not an SES notification. Event kinds other than Bounce,
    Complaint and Delivery (Send, Open, the subscription-succeeded notice…) give ``[]``.
    """
    body = message.get("Message")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError as err:
            raise InputError("Message", "is not JSON (expected an SES notification)") from err
    if not isinstance(body, dict):
        raise InputError("Message", "is not a JSON object (expected an SES notification)")
    kind = body.get("notificationType") or body.get("eventType")
    if not isinstance(kind, str):
        raise InputError("Message", "has no notificationType or eventType")
    mail = _obj(body.get("mail"))
    header_id = _header_message_id(mail)
    ours = _our_id(header_id)
    ses_id = _str(mail.get("messageId")) or None
    # The SMTP provider stores the Message-ID header as the provider id, so that is what the
    # store matches; SES's id is kept aside for people reading the history.
    provider_id = header_id or ses_id

    def make(recipient: str, action: str, status: str, diagnostic: str, cause: Cause | None,
             subtype: str, force: bool = False) -> SesBounce:
        return SesBounce(ours, provider_id, recipient, action, status, diagnostic, cause,
                         ses_message_id=ses_id, kind=kind, subtype=subtype, force_suppress=force)

    if kind == "Bounce":
        bounce = _obj(body.get("bounce"))
        btype = _str(bounce.get("bounceType")) or "Undetermined"
        sub = _str(bounce.get("bounceSubType")) or "Undetermined"
        cause = _SUBTYPE_CAUSES.get(sub) or _TYPE_CAUSES.get(btype, taxonomy.UNKNOWN)
        permanent = btype == "Permanent"
        # SES has stopped trying by the time it reports any bounce; "delayed" marks the
        # transient kinds as not the address's fault, as a DSN's delayed action would.
        action = "failed" if permanent else "delayed"
        default_status = "5.0.0" if permanent else "4.0.0"
        force = permanent and cause in (taxonomy.INVALID_RECIPIENT, taxonomy.NO_CONSENT)
        out: list[Bounce] = []
        for r in _list(bounce.get("bouncedRecipients")):
            rec = _obj(r)
            addr = _str(rec.get("emailAddress")).strip()
            if not addr:
                continue
            status = _str(rec.get("status")).strip()
            if not _STATUS.match(status):
                status = default_status
            diag = _str(rec.get("diagnosticCode")).split(";", 1)[-1].strip()
            note = f"SES {btype}/{sub}" + (f": {diag}" if diag else "")
            rcause, rforce = cause, force
            if sub == "General" and _STATUS.match(_str(rec.get("status")).strip()):
                # "Permanent/General" also covers the receiver refusing our own DMARC/DKIM
                # (5.7.26) or content (5.7.1): read the recipient's status like a DSN, and
                # suppress only when it is about the address.
                reply = _REPLY.match(diag)
                code = int(reply.group(1)) if reply else (550 if status[0] == "5" else 450)
                rest = diag[reply.end():].strip() if reply else diag
                rcause = classify(code, f"{status} {rest}".strip(), stage="rcpt").cause
                rforce = permanent and rcause is taxonomy.INVALID_RECIPIENT
            out.append(make(addr, action, status, note, rcause, f"{btype}/{sub}", rforce))
        return out
    if kind == "Complaint":
        complaint = _obj(body.get("complaint"))
        feedback = _str(complaint.get("complaintFeedbackType")).strip() or "abuse"
        sub = _str(complaint.get("complaintSubType"))
        note = f"SES complaint ({feedback})" + (f", {sub}" if sub else "")
        return [
            make(addr, "complained", feedback, note, taxonomy.NO_CONSENT, sub, True)
            for r in _list(complaint.get("complainedRecipients"))
            if (addr := _str(_obj(r).get("emailAddress")).strip())
        ]
    if kind == "Delivery":
        delivery = _obj(body.get("delivery"))
        smtp = _str(delivery.get("smtpResponse")).strip()
        return [
            make(addr, "delivered", "2.0.0", f"SES delivered: {smtp}" if smtp else "", None, "")
            for r in _list(delivery.get("recipients"))
            if isinstance(r, str) and (addr := r.strip())
        ]
    return []


def _obj(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _header_message_id(mail: dict[str, Any]) -> str | None:
    """Our Message-ID header as sent, ``<local@domain>``, from the SES ``mail`` object."""
    value = _str(_obj(mail.get("commonHeaders")).get("messageId")).strip()
    if not value:
        # commonHeaders can be absent; the raw headers are there when the identity has
        # "include original headers" enabled.
        for header in _list(mail.get("headers")):
            h = _obj(header)
            if _str(h.get("name")).lower() == "message-id":
                value = _str(h.get("value")).strip()
                break
    if not value:
        return None
    if _MSGID.search(value):
        return value
    bare = _BARE_MSGID.match(value)
    return f"<{value}>" if bare else value


def _our_id(header_id: str | None) -> str | None:
    if not header_id:
        return None
    found = _MSGID.search(header_id)
    return found.group(1) if found else None
