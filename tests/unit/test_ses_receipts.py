"""SNS signature verification and SES notification parsing (FAILURES.md §1.6)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from pushguard import taxonomy
from pushguard.exceptions import AuthError, InputError
from pushguard.receipts.dsn import Bounce, record_bounces
from pushguard.receipts.ses import (
    CertCache,
    SesBounce,
    canonical_string,
    check_cert_url,
    confirmation_url,
    parse_ses,
    verify_sns,
)

CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc123.pem"
TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-receipts"
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def clock() -> float:
    return NOW.timestamp()


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def pem(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=30))
        .not_valid_after(NOW + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


class Fetcher:
    """A fake certificate fetch that records the URLs it was asked for."""

    def __init__(self, pem: bytes) -> None:
        self.pem = pem
        self.calls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        return self.pem


def sign(key: rsa.RSAPrivateKey, msg: dict[str, Any], version: str = "1") -> dict[str, Any]:
    msg = {**msg, "SignatureVersion": version}
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    sig = key.sign(canonical_string(msg), padding.PKCS1v15(), algorithm)
    msg["Signature"] = base64.b64encode(sig).decode()
    return msg


def notification(message: str = '{"notificationType":"Delivery"}', **extra: Any
                 ) -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": TOPIC,
        "Message": message,
        "Timestamp": "2024-05-01T11:59:30.123Z",
        "SigningCertURL": CERT_URL,
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&x=1",
        **extra,
    }


def confirmation(kind: str = "SubscriptionConfirmation") -> dict[str, Any]:
    return {
        "Type": kind,
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a",
        "TopicArn": TOPIC,
        "Message": "You have chosen to subscribe to the topic " + TOPIC,
        "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription"
        "&TopicArn=" + TOPIC + "&Token=2336412f37",
        "Timestamp": "2024-05-01T11:58:00.000Z",
        "SigningCertURL": CERT_URL,
    }


# -- verification -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_signed_notification_verifies(key: rsa.RSAPrivateKey, pem: bytes, version: str) -> None:
    fetch = Fetcher(pem)
    verify_sns(sign(key, notification(), version), fetch_cert=fetch, cert_hosts=(), now=clock,
               topic_arns={TOPIC})
    assert fetch.calls == [CERT_URL]


def test_subject_is_signed_when_present(key: rsa.RSAPrivateKey, pem: bytes) -> None:
    msg = sign(key, notification(Subject="Amazon SES Email Event Notification"))
    verify_sns(msg, fetch_cert=Fetcher(pem), cert_hosts=(), now=clock)
    with pytest.raises(AuthError, match="signature"):
        verify_sns({**msg, "Subject": "changed"}, fetch_cert=Fetcher(pem), now=clock)


@pytest.mark.parametrize("kind", ["SubscriptionConfirmation", "UnsubscribeConfirmation"])
def test_confirmations_verify(key: rsa.RSAPrivateKey, pem: bytes, kind: str) -> None:
    msg = sign(key, confirmation(kind), "2")
    verify_sns(msg, fetch_cert=Fetcher(pem), cert_hosts=(), now=clock)
    with pytest.raises(AuthError, match="signature"):
        verify_sns({**msg, "Token": "other"}, fetch_cert=Fetcher(pem), now=clock)


def test_tampered_message_fails(key: rsa.RSAPrivateKey, pem: bytes) -> None:
    msg = sign(key, notification())
    msg["Message"] = '{"notificationType":"Complaint"}'
    with pytest.raises(AuthError, match="signature does not match"):
        verify_sns(msg, fetch_cert=Fetcher(pem), cert_hosts=(), now=clock)


def test_other_key_fails(key: rsa.RSAPrivateKey, pem: bytes) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(AuthError, match="signature does not match"):
        verify_sns(sign(other, notification()), fetch_cert=Fetcher(pem), now=clock)


@pytest.mark.parametrize("url", [
    "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
    "https://evil.example/sns.us-east-1.amazonaws.com/cert.pem",
    "https://sns.us-east-1.amazonaws.com@evil.example/cert.pem",
    "https://sns.us-east-1.amazonaws.com:8443/cert.pem",
    "https://s3.amazonaws.com/cert.pem",
    "https://sns.us-east-1.amazonaws.com/cert.txt",
    "http://sns.us-east-1.amazonaws.com/cert.pem",
    "ftp://sns.us-east-1.amazonaws.com/cert.pem",
    "",
])
def test_bad_cert_url_refused_before_fetch(key: rsa.RSAPrivateKey, pem: bytes, url: str) -> None:
    fetch = Fetcher(pem)
    with pytest.raises(AuthError, match="SigningCertURL"):
        verify_sns(sign(key, notification(SigningCertURL=url)), fetch_cert=fetch, cert_hosts=(),
                   now=clock)
    assert fetch.calls == []


def test_china_region_host_accepted() -> None:
    url = "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-x.pem"
    assert check_cert_url(url) == url


def test_http_only_for_allow_listed_host(key: rsa.RSAPrivateKey, pem: bytes) -> None:
    url = "http://127.0.0.1:8081/certs/sns.pem"
    msg = sign(key, notification(SigningCertURL=url))
    fetch = Fetcher(pem)
    with pytest.raises(AuthError, match="https"):
        verify_sns(msg, fetch_cert=fetch, cert_hosts=(), now=clock)
    assert fetch.calls == []
    verify_sns(msg, fetch_cert=fetch, cert_hosts=["127.0.0.1"], now=clock)
    verify_sns(msg, fetch_cert=fetch, cert_hosts=["127.0.0.1:8081"], now=clock)
    assert fetch.calls == [url, url]
    # Exact match only: an allow-listed name does not admit its subdomains.
    with pytest.raises(AuthError):
        check_cert_url("http://x.sns.local/c.pem", ["sns.local"])


def test_stale_and_future_timestamps_refused(key: rsa.RSAPrivateKey, pem: bytes) -> None:
    fetch = Fetcher(pem)
    stale = sign(key, notification(Timestamp="2024-05-01T10:59:59.000Z"))
    with pytest.raises(AuthError, match="too old"):
        verify_sns(stale, fetch_cert=fetch, now=clock)
    future = sign(key, notification(Timestamp="2024-05-01T12:30:00.000Z"))
    with pytest.raises(AuthError, match="future"):
        verify_sns(future, fetch_cert=fetch, now=clock)
    bad = sign(key, notification(Timestamp="yesterday"))
    with pytest.raises(AuthError, match="ISO 8601"):
        verify_sns(bad, fetch_cert=fetch, now=clock)
    assert fetch.calls == []
    # Within the hour is fine: the clock is injectable.
    verify_sns(stale, fetch_cert=fetch, now=lambda: NOW.timestamp() - 600)


@pytest.mark.parametrize("version", ["3", "", None, 1])
def test_unknown_signature_version_refused(key: rsa.RSAPrivateKey, pem: bytes,
                                           version: Any) -> None:
    msg = {**sign(key, notification()), "SignatureVersion": version}
    fetch = Fetcher(pem)
    with pytest.raises(AuthError, match="SignatureVersion"):
        verify_sns(msg, fetch_cert=fetch, now=clock)
    assert fetch.calls == []


def test_unknown_type_and_missing_fields_refused(key: rsa.RSAPrivateKey, pem: bytes) -> None:
    msg = sign(key, notification())
    with pytest.raises(AuthError, match="unknown Type"):
        verify_sns({**msg, "Type": "Other"}, fetch_cert=Fetcher(pem), now=clock)
    with pytest.raises(AuthError, match="TopicArn is missing"):
        verify_sns({k: v for k, v in msg.items() if k != "TopicArn"}, fetch_cert=Fetcher(pem),
                   now=clock)
    with pytest.raises(AuthError, match="base64"):
        verify_sns({**msg, "Signature": "not base64!"}, fetch_cert=Fetcher(pem), now=clock)


def test_foreign_topic_refused(key: rsa.RSAPrivateKey, pem: bytes) -> None:
    msg = sign(key, notification(TopicArn="arn:aws:sns:us-east-1:999999999999:theirs"))
    fetch = Fetcher(pem)
    with pytest.raises(AuthError, match="not ours"):
        verify_sns(msg, fetch_cert=fetch, topic_arns={TOPIC}, now=clock)
    assert fetch.calls == []


def test_expired_certificate_refused(key: rsa.RSAPrivateKey, pem: bytes) -> None:
    msg = sign(key, notification())
    later = NOW + timedelta(days=60)
    with pytest.raises(AuthError, match="expired"):
        verify_sns({**msg, "Timestamp": later.isoformat()}, fetch_cert=Fetcher(pem),
                   now=later.timestamp)


def test_not_a_certificate_refused(key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(AuthError, match="PEM"):
        verify_sns(sign(key, notification()), fetch_cert=Fetcher(b"<html>"), now=clock)


def test_cert_cache_fetches_once(key: rsa.RSAPrivateKey, pem: bytes) -> None:
    fetch = Fetcher(pem)
    cache = CertCache(fetch, max_entries=1)
    msg = sign(key, notification(), "2")
    for _ in range(3):
        verify_sns(msg, fetch_cert=cache, now=clock)
    assert fetch.calls == [CERT_URL]
    other = CERT_URL.replace("abc123", "def456")
    verify_sns(sign(key, notification(SigningCertURL=other)), fetch_cert=cache, now=clock)
    assert len(cache) == 1  # the LRU evicted the first URL
    assert cache(CERT_URL) == pem and fetch.calls == [CERT_URL, other, CERT_URL]


def test_confirmation_url() -> None:
    msg = confirmation()
    assert confirmation_url(msg) == msg["SubscribeURL"]
    assert confirmation_url(confirmation("UnsubscribeConfirmation")) is None
    assert confirmation_url(notification()) is None
    with pytest.raises(AuthError, match="SubscribeURL"):
        confirmation_url({**msg, "SubscribeURL": "https://evil.example/?Action=Confirm"})


# -- SES parsing (payload shapes from docs.aws.amazon.com/ses/latest/dg/notification-contents) --


MAIL = {
    "timestamp": "2024-05-01T11:58:00.000Z",
    "source": "Pushguard <noreply@example.com>",
    "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/example.com",
    "sourceIp": "203.0.113.7",
    "sendingAccountId": "123456789012",
    "callerIdentity": "pushguard",
    "messageId": "0100018f33e1c0a1-7a1b2c3d-0000-0000-0000-000000000000-000000",
    "destination": ["jane@example.org", "mary@example.org"],
    "headersTruncated": False,
    "headers": [{"name": "Message-ID", "value": "<msg_01HX@example.com>"}],
    "commonHeaders": {
        "from": ["Pushguard <noreply@example.com>"],
        "to": ["jane@example.org"],
        "messageId": "<msg_01HX@example.com>",
        "subject": "Your code",
    },
    "tags": {"ses:configuration-set": ["receipts"]},  # an extra field parsers must ignore
}


def ses(payload: dict[str, Any]) -> dict[str, Any]:
    return notification(json.dumps({**payload, "mail": payload.get("mail", MAIL)}))


def test_permanent_bounce() -> None:
    bounces = parse_ses(ses({
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [
                {"emailAddress": "jane@example.org", "action": "failed", "status": "5.1.1",
                 "diagnosticCode": "smtp; 550 5.1.1 <jane@example.org>... User unknown"},
                {"emailAddress": "mary@example.org"},
            ],
            "timestamp": "2024-05-01T11:58:02.000Z",
            "feedbackId": "0100018f33e1c7aa-0000-000000",
            "remoteMtaIp": "198.51.100.9",
            "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
        },
    }))
    assert len(bounces) == 2
    jane, mary = bounces
    assert isinstance(jane, SesBounce)
    assert (jane.message_id, jane.provider_message_id) == ("msg_01HX", "<msg_01HX@example.com>")
    assert jane.ses_message_id == MAIL["messageId"]
    assert (jane.recipient, jane.action, jane.status) == ("jane@example.org", "failed", "5.1.1")
    assert jane.cause is taxonomy.INVALID_RECIPIENT and jane.suppress and jane.permanent
    assert "550 5.1.1" in jane.diagnostic and "Permanent/General" in jane.diagnostic
    assert mary.status == "5.0.0" and mary.suppress  # no status given: still a hard bounce


@pytest.mark.parametrize(("btype", "sub", "cause", "suppress"), [
    ("Permanent", "NoEmail", taxonomy.INVALID_RECIPIENT, True),
    ("Permanent", "Suppressed", taxonomy.INVALID_RECIPIENT, True),
    ("Permanent", "OnAccountSuppressionList", taxonomy.NO_CONSENT, True),
    ("Permanent", "SomethingNew", taxonomy.INVALID_RECIPIENT, True),
    ("Transient", "General", taxonomy.RECIPIENT_TEMPORARY, False),
    ("Transient", "MailboxFull", taxonomy.RECIPIENT_TEMPORARY, False),
    ("Transient", "MessageTooLarge", taxonomy.CONTENT_REJECTED, False),
    ("Transient", "ContentRejected", taxonomy.CONTENT_REJECTED, False),
    ("Transient", "AttachmentRejected", taxonomy.CONTENT_REJECTED, False),
    ("Undetermined", "Undetermined", taxonomy.UNKNOWN, False),
])
def test_bounce_classes(btype: str, sub: str, cause: taxonomy.Cause, suppress: bool) -> None:
    [b] = parse_ses(ses({
        "eventType": "Bounce",  # event publishing uses eventType instead
        "bounce": {"bounceType": btype, "bounceSubType": sub,
                   "bouncedRecipients": [{"emailAddress": "jane@example.org"}]},
    }))
    assert b.cause is cause and b.suppress is suppress
    assert b.action == ("failed" if btype == "Permanent" else "delayed")
    assert b.status[0] == ("5" if btype == "Permanent" else "4")


def test_transient_bounce_keeps_status() -> None:
    [b] = parse_ses(ses({
        "notificationType": "Bounce",
        "bounce": {"bounceType": "Transient", "bounceSubType": "MailboxFull",
                   "bouncedRecipients": [{"emailAddress": "jane@example.org", "status": "4.2.2",
                                          "diagnosticCode": "smtp; 452 4.2.2 Mailbox full"}]},
    }))
    assert (b.action, b.status, b.cause) == ("delayed", "4.2.2", taxonomy.RECIPIENT_TEMPORARY)
    assert not b.suppress


def test_complaint_suppresses() -> None:
    bounces = parse_ses(ses({
        "notificationType": "Complaint",
        "complaint": {
            "userAgent": "AnyCompany Feedback Loop (V0.01)",
            "complainedRecipients": [{"emailAddress": "jane@example.org"},
                                     {"emailAddress": "mary@example.org"}],
            "complaintFeedbackType": "abuse",
            "complaintSubType": None,
            "arrivalDate": "2024-05-01T11:59:00.000Z",
            "timestamp": "2024-05-01T11:59:01.000Z",
            "feedbackId": "0100018f33e1c7aa-0000-000001",
        },
    }))
    assert [b.recipient for b in bounces] == ["jane@example.org", "mary@example.org"]
    for b in bounces:
        assert (b.action, b.status, b.cause) == ("complained", "abuse", taxonomy.NO_CONSENT)
        assert b.suppress and not b.permanent
    [nofeedback] = parse_ses(ses({"notificationType": "Complaint", "complaint": {
        "complainedRecipients": [{"emailAddress": "jane@example.org"}]}}))
    assert nofeedback.status == "abuse" and nofeedback.suppress


def test_delivery() -> None:
    [b] = parse_ses(ses({
        "notificationType": "Delivery",
        "delivery": {
            "timestamp": "2024-05-01T11:58:01.000Z",
            "processingTimeMillis": 546,
            "recipients": ["jane@example.org"],
            "smtpResponse": "250 ok:  Message 64111812 accepted",
            "remoteMtaIp": "198.51.100.9",
            "reportingMTA": "a8-70.smtp-out.amazonses.com",
        },
    }))
    assert (b.action, b.status, b.cause, b.suppress) == ("delivered", "2.0.0", None, False)
    assert b.message_id == "msg_01HX" and "250 ok" in b.diagnostic


def test_message_id_fallbacks() -> None:
    bare = {**MAIL, "commonHeaders": {"messageId": "msg_02AB@example.com"}}
    [b] = parse_ses(ses({"notificationType": "Delivery", "mail": bare,
                         "delivery": {"recipients": ["jane@example.org"]}}))
    assert (b.message_id, b.provider_message_id) == ("msg_02AB", "<msg_02AB@example.com>")
    raw_only = {k: v for k, v in MAIL.items() if k != "commonHeaders"}
    [b] = parse_ses(ses({"notificationType": "Delivery", "mail": raw_only,
                         "delivery": {"recipients": ["jane@example.org"]}}))
    assert b.message_id == "msg_01HX"
    foreign = {"messageId": "ses-only-id"}  # sent by someone else: no Message-ID of ours
    [b] = parse_ses(ses({"notificationType": "Delivery", "mail": foreign,
                         "delivery": {"recipients": ["jane@example.org"]}}))
    assert (b.message_id, b.provider_message_id) == (None, "ses-only-id")


def test_unknown_fields_and_kinds_tolerated() -> None:
    [b] = parse_ses(ses({
        "notificationType": "Bounce",
        "futureTopLevel": {"x": 1},
        "bounce": {"bounceType": "Permanent", "bounceSubType": "NoEmail", "newField": [1, 2],
                   "bouncedRecipients": [{"emailAddress": "jane@example.org", "extra": True},
                                         "garbage", {"status": "5.1.1"}]},
    }))
    assert b.recipient == "jane@example.org"
    assert parse_ses(ses({"eventType": "Open", "open": {}})) == []
    assert parse_ses(notification(json.dumps({
        "notificationType": "AmazonSnsSubscriptionSucceeded", "message": "ok"}))) == []
    # Message already decoded (a caller that parsed it) is accepted too.
    assert parse_ses({"Message": {"notificationType": "Delivery",
                                  "delivery": {"recipients": ["a@b.c"]}}})[0].action == "delivered"


@pytest.mark.parametrize("message", ["not json", "[1]", '{"mail": {}}', None])
def test_not_ses_raises_input_error(message: Any) -> None:
    with pytest.raises(InputError) as err:
        parse_ses({"Message": message})
    assert err.value.field == "Message"


class FakeStore:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str | None, tuple[str, str] | None]] = []

    def add_receipt(self, message_id: str, provider_message_id: str, note: str, *,
                    cause: str | None = None, suppress: tuple[str, str] | None = None) -> bool:
        self.calls.append((message_id, provider_message_id, cause, suppress))
        return True


def test_record_bounces_suppresses_complaints() -> None:
    bounces = parse_ses(ses({"notificationType": "Complaint", "complaint": {
        "complainedRecipients": [{"emailAddress": "jane@example.org"}]}}))
    bounces += parse_ses(ses({"notificationType": "Bounce", "bounce": {
        "bounceType": "Transient", "bounceSubType": "MailboxFull",
        "bouncedRecipients": [{"emailAddress": "jane@example.org"}]}}))
    store = FakeStore()
    out = record_bounces(store, bounces)  # type: ignore[arg-type]
    assert [c[3] for c in store.calls] == [("email", "NO_CONSENT"), None]
    assert [o["suppressed"] for o in out] == [True, False]
    # A plain Bounce keeps dsn.py's rule: a complaint-like record alone would not suppress.
    plain = Bounce("m", "<m@x>", "a@b.c", "complained", "abuse", "", taxonomy.NO_CONSENT)
    assert not plain.suppress


def test_general_bounce_for_our_own_dmarc_does_not_suppress() -> None:
    ses = {"notificationType": "Bounce",
           "mail": {"messageId": "x", "commonHeaders": {"messageId": "<msg_1@shop.example>"}},
           "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                      "bouncedRecipients": [{
                          "emailAddress": "a@example.com", "status": "5.7.26",
                          "diagnosticCode": "smtp; 550 5.7.26 Unauthenticated email from "
                                            "shop.example is not accepted due to DMARC policy"}]}}
    (b,) = parse_ses({"Type": "Notification", "Message": json.dumps(ses)})
    assert b.cause is not None and b.cause.name == "SENDER_CONFIG"
    assert not b.suppress
