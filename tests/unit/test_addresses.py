"""Per-channel validation of ``to`` at intake."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from pushguard.addresses import (
    CHANNELS,
    CHAT_SCHEMES,
    MAX_ADDRESS_LENGTH,
    check_header_value,
    normalize_address,
    normalize_address_async,
)
from pushguard.exceptions import HeaderInjection, InputError, InvalidAddress, UnsafeURL
from pushguard.ssrf import OutboundGuard

PUBLIC_V4 = "93.184.215.14"
P256DH = b"\x04" + bytes(range(1, 65))
AUTH = bytes(range(100, 116))


def b64url(raw: bytes, *, pad: bool = False) -> str:
    text = base64.urlsafe_b64encode(raw).decode()
    return text if pad else text.rstrip("=")


def subscription(**changes: Any) -> str:
    sub: dict[str, Any] = {
        "endpoint": f"https://{PUBLIC_V4}/push/abc",
        "keys": {"p256dh": b64url(P256DH), "auth": b64url(AUTH)},
    }
    sub.update(changes)
    return json.dumps(sub)


@pytest.fixture
def guard() -> OutboundGuard:
    return OutboundGuard()


def norm(channel: str, to: Any, guard: OutboundGuard | None = None, **kw: Any) -> str:
    return normalize_address(channel, to, guard=guard or OutboundGuard(), **kw)


# --- common rules -----------------------------------------------------------------------


def test_channels() -> None:
    assert frozenset({"webhook", "email", "sms", "fcm", "apns", "webpush", "chat"}) == CHANNELS


def test_unknown_channel() -> None:
    with pytest.raises(InvalidAddress) as info:
        norm("pigeon", "a@example.com")
    assert info.value.field == "channel"
    assert info.value.problem == (
        "unknown channel 'pigeon'; expected one of: apns, chat, email, fcm, sms, webhook, webpush"
    )


@pytest.mark.parametrize("channel", sorted(CHANNELS))
@pytest.mark.parametrize("to", ["", "   ", "\t"])
def test_empty_address(channel: str, to: str) -> None:
    with pytest.raises(InvalidAddress, match="must not be empty"):
        norm(channel, to)


@pytest.mark.parametrize("channel", sorted(CHANNELS))
@pytest.mark.parametrize("to", [None, 42, ["a@example.com"]])
def test_address_must_be_a_string(channel: str, to: Any) -> None:
    with pytest.raises(InvalidAddress, match="must be a string"):
        norm(channel, to)


@pytest.mark.parametrize("channel", sorted(CHANNELS))
@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("\r\n", "contains a line break (CR or LF)"),
        ("\n", "contains a line break (CR or LF)"),
        ("\r", "contains a line break (CR or LF)"),
        ("\x00", "contains a NUL byte"),
    ],
)
def test_header_injection_on_every_channel(channel: str, bad: str, problem: str) -> None:
    with pytest.raises(HeaderInjection) as info:
        norm(channel, f"a@example.com{bad}Bcc: victim@example.com", field="recipients[3].to")
    assert info.value.field == "recipients[3].to"
    assert info.value.problem == problem


def test_trailing_newline_is_still_injection() -> None:
    # Surrounding whitespace is stripped, but a line break is refused before stripping.
    with pytest.raises(HeaderInjection):
        norm("email", "a@example.com\n")


@pytest.mark.parametrize("channel", sorted(CHANNELS - {"fcm"}))
def test_length_limit(channel: str) -> None:
    with pytest.raises(InvalidAddress, match="2049 characters long; the limit is 2048"):
        norm(channel, "a" * (MAX_ADDRESS_LENGTH + 1))


def test_surrounding_whitespace_is_stripped() -> None:
    assert norm("email", "  a@example.com\t ") == "a@example.com"
    assert norm("sms", " +14155550100 ") == "+14155550100"


# --- check_header_value -----------------------------------------------------------------


def test_check_header_value_accepts_plain_text() -> None:
    check_header_value("Ava Smith — Bestellung №5", "subject")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("Ava\r\nBcc: victim@example.com", "contains a line break (CR or LF)"),
        ("Ava\nBcc: victim@example.com", "contains a line break (CR or LF)"),
        ("Ava\rBcc: victim@example.com", "contains a line break (CR or LF)"),
        ("Ava\x00", "contains a NUL byte"),
        ("Ava\u2028Bcc: x", "contains a line separator (U+2028)"),
        ("Ava\x85Bcc: x", "contains a line separator (U+0085)"),
        ("Ava\x0bx", "contains a line separator (U+000B)"),
    ],
)
def test_check_header_value_refuses_line_breaks(value: str, problem: str) -> None:
    with pytest.raises(HeaderInjection) as info:
        check_header_value(value, "subject")
    assert info.value.field == "subject"
    assert info.value.problem == problem


# --- webhook ----------------------------------------------------------------------------


def test_webhook_public_url(guard: OutboundGuard) -> None:
    assert norm("webhook", f" HTTPS://{PUBLIC_V4}/hook?x=1 ", guard) == (
        f"https://{PUBLIC_V4}/hook?x=1"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://2130706433/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.5:8080/",
        "http://localhost:8080/hook",
    ],
)
def test_webhook_internal_url_is_refused(url: str, guard: OutboundGuard) -> None:
    with pytest.raises(UnsafeURL) as info:
        norm("webhook", url, guard)
    assert info.value.field == "to"
    assert "PUSHGUARD_OUTBOUND_ALLOW" in info.value.problem


def test_webhook_name_is_resolved() -> None:
    with pytest.raises(UnsafeURL, match="does not resolve"):
        norm("webhook", "https://hooks.nohost.invalid/x")
    # Skipping DNS leaves only what the text itself shows.
    assert norm("webhook", "https://hooks.nohost.invalid/x", resolve=False)


def test_webhook_allowed_name_resolving_to_loopback() -> None:
    url = "http://localhost:9000/hook"
    assert norm("webhook", url, OutboundGuard(["localhost"])) == url
    assert norm("webhook", url, OutboundGuard(["127.0.0.1"])) == url


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "file:///etc/passwd", "example.com/hook", "mailto:a@b.c"]
)
def test_webhook_needs_http(url: str, guard: OutboundGuard) -> None:
    with pytest.raises(UnsafeURL):
        norm("webhook", url, guard)


def test_webhook_credentials_refused(guard: OutboundGuard) -> None:
    with pytest.raises(UnsafeURL, match="credentials"):
        norm("webhook", f"https://u:p@{PUBLIC_V4}/", guard)


async def test_async_variant_resolves_without_blocking() -> None:
    with pytest.raises(UnsafeURL, match="loopback address"):
        await normalize_address_async("webhook", "http://localhost:1/", guard=OutboundGuard())
    allowed = OutboundGuard(["localhost"])
    assert await normalize_address_async("webhook", "http://localhost:1/", guard=allowed)
    with pytest.raises(UnsafeURL, match="does not resolve"):
        await normalize_address_async("webhook", "https://x.invalid/", guard=OutboundGuard())
    assert await normalize_address_async("email", "A@Example.com", guard=OutboundGuard()) == (
        "A@example.com"
    )


# --- email ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("a@example.com", "a@example.com"),
        ("Alice.Smith+tag@Example.COM", "Alice.Smith+tag@example.com"),
        ("user@bücher.de", "user@bücher.de"),
        ("user@xn--bcher-kva.de", "user@bücher.de"),
        ("用户@例子.广告", "用户@例子.广告"),
    ],
)
def test_email_good(to: str, expected: str) -> None:
    assert norm("email", to) == expected


@pytest.mark.parametrize(
    ("to", "problem"),
    [
        ("Alice <a@example.com>", "display names are not accepted"),
        ("<a@example.com>", "display names are not accepted"),
        ("a@example.com, b@example.com", "give exactly one email address"),
        ("a@example.com;b@example.com", "give exactly one email address"),
        ("not-an-address", "is not a valid email address"),
        ("a@", "is not a valid email address"),
        ("@example.com", "is not a valid email address"),
        ("a@@example.com", "is not a valid email address"),
        ("a b@example.com", "is not a valid email address"),
        ("a@example", "is not a valid email address"),
        ("a@localhost", "is not a valid email address"),
        ("a" * 65 + "@example.com", "longer than 64 characters"),
        ("a@" + ".".join(["b" * 60] * 5) + ".com", "too long"),
        ("a" * 64 + "@" + ".".join(["b" * 60] * 4) + ".com", "too long"),
    ],
)
def test_email_bad(to: str, problem: str) -> None:
    with pytest.raises(InvalidAddress) as info:
        norm("email", to)
    assert problem in info.value.problem


def test_email_local_part_of_64_is_fine() -> None:
    assert norm("email", "a" * 64 + "@example.com") == "a" * 64 + "@example.com"


# --- sms --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("+14155550100", "+14155550100"),
        ("+1 (415) 555-0100", "+14155550100"),
        ("+44 20 7946 0958", "+442079460958"),
        ("+49 30 901820", "+4930901820"),
        ("+33.1.42.68.53.00", "+33142685300"),
    ],
)
def test_sms_good(to: str, expected: str) -> None:
    assert norm("sms", to) == expected


def test_sms_problem_text() -> None:
    with pytest.raises(InvalidAddress) as info:
        norm("sms", "0123")
    assert info.value.problem == (
        "'0123' is not an E.164 phone number (expected e.g. +14155550100)"
    )


@pytest.mark.parametrize(
    ("to", "problem"),
    [
        ("4155550100", "is not an E.164 phone number"),
        ("+", "is not an E.164 phone number"),
        ("+1-800-FLOWERS", "is not an E.164 phone number"),
        ("+14155550100 ext. 12", "is not an E.164 phone number"),
        ("++14155550100", "is not an E.164 phone number"),
        ("+1415555", "is not a valid phone number for country code +1"),
        ("+1234567890123456", "is not"),
        ("+0 123 456", "is not"),
    ],
)
def test_sms_bad(to: str, problem: str) -> None:
    with pytest.raises(InvalidAddress) as info:
        norm("sms", to)
    assert problem in info.value.problem
    assert "+14155550100" in info.value.problem


# --- fcm --------------------------------------------------------------------------------

FCM_TOKEN = "dGVzdC1pbnN0YW5jZQ:APA91b" + "Hk_x-9Zq" * 18


def test_fcm_good() -> None:
    assert norm("fcm", f" {FCM_TOKEN} ") == FCM_TOKEN
    assert norm("fcm", "a" * 100) == "a" * 100
    assert norm("fcm", "a.b-c_d:" * 512) == "a.b-c_d:" * 512  # 4096 characters


@pytest.mark.parametrize(
    ("to", "problem"),
    [
        ("a" * 99, "99 characters, expected 100 to 4096"),
        ("a" * 4097, "the limit is 4096"),
        (FCM_TOKEN[:-1] + "/", "expected only letters"),
        (FCM_TOKEN[:50] + " " + FCM_TOKEN[50:], "expected only letters"),
        (FCM_TOKEN[:-1] + "é", "expected only letters"),
    ],
)
def test_fcm_bad(to: str, problem: str) -> None:
    with pytest.raises(InvalidAddress) as info:
        norm("fcm", to)
    assert problem in info.value.problem


# --- apns -------------------------------------------------------------------------------

APNS_TOKEN = "a1b2c3d4" * 8


@pytest.mark.parametrize(
    "to",
    [
        APNS_TOKEN,
        APNS_TOKEN.upper(),
        "<" + " ".join(APNS_TOKEN[i : i + 8] for i in range(0, 64, 8)) + ">",
    ],
)
def test_apns_good(to: str) -> None:
    assert norm("apns", to) == APNS_TOKEN


def test_apns_longer_tokens() -> None:
    assert norm("apns", "ab" * 100) == "ab" * 100


@pytest.mark.parametrize(
    ("to", "problem"),
    [
        ("ab" * 31, "62 hex digits"),
        ("ab" * 101, "202 hex digits"),
        (APNS_TOKEN + "a", "an even number"),
        (APNS_TOKEN[:-1] + "g", "expected hexadecimal digits"),
        ("0x" + APNS_TOKEN, "expected hexadecimal digits"),
    ],
)
def test_apns_bad(to: str, problem: str) -> None:
    with pytest.raises(InvalidAddress) as info:
        norm("apns", to)
    assert problem in info.value.problem


# --- webpush ----------------------------------------------------------------------------


def test_webpush_good_is_compact_and_sorted() -> None:
    out = norm("webpush", subscription())
    assert out == (
        '{"endpoint":"https://93.184.215.14/push/abc","keys":{"auth":"'
        + b64url(AUTH)
        + '","p256dh":"'
        + b64url(P256DH)
        + '"}}'
    )


def test_webpush_keys_are_normalized_to_unpadded_base64url() -> None:
    padded = subscription(
        keys={
            "auth": b64url(AUTH, pad=True),
            "p256dh": base64.b64encode(P256DH).decode(),  # standard alphabet, padded
        }
    )
    assert norm("webpush", padded) == norm("webpush", subscription())


def test_webpush_expiration_time_is_kept() -> None:
    assert '"expirationTime":1700000000000' in norm(
        "webpush", subscription(expirationTime=1700000000000)
    )
    assert "expirationTime" not in norm("webpush", subscription(expirationTime=None))


@pytest.mark.parametrize(
    ("to", "problem"),
    [
        ("not json", "invalid JSON"),
        ("[]", "is not a Web Push subscription"),
        (json.dumps({"keys": {}}), "is not a Web Push subscription"),
        (json.dumps({"endpoint": "https://x/", "keys": "k"}), "is not a Web Push subscription"),
        (subscription(keys={"auth": b64url(AUTH)}), "keys.p256dh is not a base64url string"),
        (subscription(keys={"p256dh": b64url(P256DH)}), "keys.auth is not a base64url string"),
        (
            subscription(keys={"p256dh": b64url(P256DH[:-1]), "auth": b64url(AUTH)}),
            "keys.p256dh decodes to 64 bytes, expected 65",
        ),
        (
            subscription(keys={"p256dh": b64url(b"\x02" + P256DH[1:]), "auth": b64url(AUTH)}),
            "must start with 0x04",
        ),
        (
            subscription(keys={"p256dh": b64url(P256DH), "auth": b64url(AUTH + b"x")}),
            "keys.auth decodes to 17 bytes, expected 16",
        ),
        (
            subscription(keys={"p256dh": "!!" + b64url(P256DH), "auth": b64url(AUTH)}),
            "keys.p256dh is not a base64url string",
        ),
        (
            subscription(keys={"p256dh": b64url(P256DH)[:-1], "auth": b64url(AUTH)}),
            "keys.p256dh",
        ),
        (subscription(expirationTime="soon"), "expirationTime must be a number"),
        (subscription(expirationTime=True), "expirationTime must be a number"),
    ],
)
def test_webpush_bad(to: str, problem: str) -> None:
    with pytest.raises(InvalidAddress) as info:
        norm("webpush", to)
    assert problem in info.value.problem


def test_webpush_endpoint_must_be_https() -> None:
    with pytest.raises(InvalidAddress) as info:
        norm("webpush", subscription(endpoint=f"http://{PUBLIC_V4}/push"))
    assert info.value.field == "to.endpoint"
    assert "must use https" in info.value.problem


def test_webpush_http_endpoint_allowed_for_allowed_hosts() -> None:
    guard = OutboundGuard(["localhost"])
    out = json.loads(norm("webpush", subscription(endpoint="http://localhost:8080/push"), guard))
    assert out["endpoint"] == "http://localhost:8080/push"


@pytest.mark.parametrize(
    "endpoint",
    ["https://127.0.0.1/push", "https://[fd00::1]/push", "https://localhost/push", "ftp://x/"],
)
def test_webpush_endpoint_goes_through_the_guard(endpoint: str) -> None:
    with pytest.raises(UnsafeURL) as info:
        norm("webpush", subscription(endpoint=endpoint))
    assert info.value.field == "to.endpoint"


def test_webpush_endpoint_is_resolved() -> None:
    with pytest.raises(UnsafeURL, match="does not resolve"):
        norm("webpush", subscription(endpoint="https://push.nohost.invalid/x"))


# --- chat -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "to",
    [
        "tgram://123456:ABCdef/987654",
        "slack://TokenA/TokenB/TokenC/#general",
        "discord://1234/abcd",
        "msteams://team/tokenA/tokenB/tokenC",
        "TGRAM://123456:ABCdef/987654",
    ],
)
def test_chat_hosted_schemes(to: str) -> None:
    out = norm("chat", to)
    assert out.split("://")[0] in CHAT_SCHEMES
    assert out.split("://")[1] == to.split("://")[1]


def test_chat_https_webhook() -> None:
    url = f"https://{PUBLIC_V4}/services/T000/B000/XXXX"
    assert norm("chat", url) == url


@pytest.mark.parametrize(
    "to",
    [
        "https://127.0.0.1/services/x",
        "http://169.254.169.254/",
        "mmost://10.0.0.8/token",
        "gotify://[::1]/token",
        "mailto://user:pw@localhost",
        f"mailto://user:pw@{PUBLIC_V4}?smtp=192.168.0.10",
    ],
)
def test_chat_internal_targets_refused(to: str) -> None:
    with pytest.raises(UnsafeURL):
        norm("chat", to, resolve=False)


def test_chat_self_hosted_server_is_resolved() -> None:
    with pytest.raises(UnsafeURL, match="does not resolve"):
        norm("chat", "rocket://user:pw@chat.nohost.invalid/#general")
    with pytest.raises(UnsafeURL, match="loopback"):
        norm("chat", "rocket://user:pw@localhost/#general")
    assert norm("chat", "rocket://user:pw@localhost/#general", OutboundGuard(["localhost"]))


@pytest.mark.parametrize(
    ("to", "problem"),
    [
        ("just-text", "is not a chat URL"),
        ("irc://irc.example.com/#x", "chat scheme 'irc' is not supported"),
        ("json://10.0.0.1/", "chat scheme 'json' is not supported"),
        ("tgram://a b/c", "space or control character"),
        ("mmost:///token", "has no server host"),
    ],
)
def test_chat_bad(to: str, problem: str) -> None:
    with pytest.raises(InputError) as info:
        norm("chat", to)
    assert problem in info.value.problem


def test_chat_ftp_is_not_a_chat_scheme() -> None:
    with pytest.raises(InvalidAddress, match="not supported"):
        norm("chat", "ftp://example.com/")
