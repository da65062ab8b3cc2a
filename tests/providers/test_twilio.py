"""The Twilio SMS provider: the error-code classifier, content and option checks, and a
contract test against the sandbox's Twilio fake over real HTTP on loopback."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from pushguard import taxonomy
from pushguard.config import ProviderConfig
from pushguard.exceptions import ConfigError, DeliveryError, InputError
from pushguard.providers.base import Delivery, ProviderContext
from pushguard.providers.http import HttpProvider
from pushguard.providers.httpclient import Response
from pushguard.providers.twilio import TwilioProvider, cause_for_code, classify
from pushguard.sandbox import Sandbox
from pushguard.settings import Settings
from pushguard.ssrf import OutboundGuard
from pushguard.taxonomy import Cause

SID = "AC0123456789abcdef0123456789abcdef"
TOKEN = "twilio-provider-test-token"
FROM = "+15017122661"

MakeProvider = Callable[..., Awaitable[TwilioProvider]]


def twilio_body(status: int, code: int, message: str) -> bytes:
    """Twilio's REST error document."""
    return json.dumps({
        "code": code, "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status,
    }).encode()  # fmt: skip


def response(status: int, body: bytes, content_type: str = "application/json",
             **headers: str) -> Response:
    hdrs = CIMultiDict({"Content-Type": content_type, **headers})
    return Response(status, CIMultiDictProxy(hdrs), body, 0.01)


def delivery(to: str = "+15551230000", text: str = "Your code is 123456", **kw: Any) -> Delivery:
    fields: dict[str, Any] = {
        "message_id": "msg_0001", "channel": "sms", "to": to, "content": {"text": text},
        "topic": None, "attempt": 1, "priority": 0, "expires_at": time.time() + 3600,
    }
    fields.update(kw)
    return Delivery(**fields)


def context() -> ProviderContext:
    return ProviderContext(Settings(outbound_allow="127.0.0.1"),
                           OutboundGuard.from_env("127.0.0.1"))


def config(timeout: float = 5.0, **options: Any) -> ProviderConfig:
    opts = {"account_sid": SID, "auth_token": TOKEN, "from": FROM, **options}
    return ProviderConfig("twilio", "twilio", opts, timeout=timeout, concurrency=10)


# -- classifier ---------------------------------------------------------------------------

CODE_TABLE: list[tuple[int, int, Cause]] = [
    (401, 20003, taxonomy.AUTH_CREDENTIALS),
    (429, 20429, taxonomy.RATE_LIMITED),
    (400, 14107, taxonomy.RATE_LIMITED),
    (400, 21211, taxonomy.INVALID_RECIPIENT),
    (400, 21614, taxonomy.INVALID_RECIPIENT),
    (400, 21635, taxonomy.INVALID_RECIPIENT),
    (400, 30005, taxonomy.INVALID_RECIPIENT),
    (400, 30006, taxonomy.INVALID_RECIPIENT),
    (403, 21408, taxonomy.SENDER_CONFIG),
    (400, 21606, taxonomy.SENDER_CONFIG),
    (400, 21608, taxonomy.SENDER_CONFIG),
    (400, 30042, taxonomy.SENDER_CONFIG),
    (400, 21610, taxonomy.NO_CONSENT),
    (400, 63014, taxonomy.NO_CONSENT),
    (400, 30007, taxonomy.CONTENT_REJECTED),
    (400, 30110, taxonomy.CONTENT_REJECTED),
    (400, 30003, taxonomy.RECIPIENT_TEMPORARY),
    (400, 30001, taxonomy.PROVIDER_OUTAGE),
    (500, 30500, taxonomy.PROVIDER_OUTAGE),
    (400, 30008, taxonomy.UNKNOWN),
    (404, 20404, taxonomy.SENDER_CONFIG),
    (400, 21617, taxonomy.CONTENT_REJECTED),
]


@pytest.mark.parametrize(("status", "code", "cause"), CODE_TABLE)
def test_classify_by_twilio_code(status: int, code: int, cause: Cause) -> None:
    err = classify(response(status, twilio_body(status, code, "x")))
    assert err is not None
    assert (err.cause, err.provider_code, err.status) == (cause, str(code), status)
    assert "more_info" in (err.raw or "")
    assert cause_for_code(code) is cause


def test_code_beats_http_status() -> None:
    # 21408 comes with 403 but is a region permission, not bad credentials.
    err = classify(response(403, twilio_body(403, 21408, "Permission to send...")))
    assert err is not None and err.cause is taxonomy.SENDER_CONFIG
    assert err.detail == "Twilio error 21408: Permission to send..."


def test_opt_out_suppresses_and_rate_limits_are_scoped() -> None:
    err = classify(response(400, twilio_body(400, 21610, "Attempt to send to unsubscribed")))
    assert err is not None and err.suppress is True
    err = classify(response(429, twilio_body(429, 20429, "Too Many Requests"), **{
        "Retry-After": "7"}))
    assert err is not None and (err.scope, err.retry_after) == ("provider", 7.0)
    # One From/To pair's limit must not open the breaker for every other recipient.
    err = classify(response(400, twilio_body(400, 14107, "SMS send rate limit exceeded")))
    assert err is not None and err.scope == "recipient"


def test_unmapped_codes() -> None:
    err = classify(response(400, twilio_body(400, 21999, "Something new")))
    assert err is not None and err.cause is taxonomy.CONTENT_REJECTED  # permanent, loud
    assert "not in pushguard's table" in err.detail and err.provider_code == "21999"
    err = classify(response(400, twilio_body(400, 39999, "New delivery error")))
    assert err is not None and err.cause is taxonomy.UNKNOWN
    # Unmapped codes on a server error or an auth failure follow the status class.
    err = classify(response(503, twilio_body(503, 29999, "Service unavailable")))
    assert err is not None and err.cause is taxonomy.PROVIDER_OUTAGE
    err = classify(response(401, twilio_body(401, 20005, "Account not active")))
    assert err is not None and err.cause is taxonomy.AUTH_CREDENTIALS


@pytest.mark.parametrize(
    ("status", "body", "ctype", "cause"),
    [
        (503, b"", "text/plain", taxonomy.PROVIDER_OUTAGE),
        (504, b"", "text/plain", taxonomy.NETWORK_TIMEOUT),
        (502, b"<html>502</html>", "text/html", taxonomy.PROVIDER_OUTAGE),
        (403, b"<html>Blocked by WAF</html>", "text/html", taxonomy.UNKNOWN),
        (404, b"not found", "text/plain", taxonomy.SENDER_CONFIG),
        (400, b"{garbage", "application/json", taxonomy.CONTENT_REJECTED),
        (429, b"[1, 2]", "application/json", taxonomy.RATE_LIMITED),
        (302, b"", "text/plain", taxonomy.SENDER_CONFIG),
    ],
)
def test_classify_without_a_twilio_code(status: int, body: bytes, ctype: str,
                                        cause: Cause) -> None:
    err = classify(response(status, body, ctype))
    assert err is not None
    assert (err.cause, err.provider_code) == (cause, f"HTTP {status}")
    assert err.maybe_sent is (status == 504)


def test_success_is_not_an_error() -> None:
    assert classify(response(201, b'{"sid": "SM1"}')) is None


# -- content and options -------------------------------------------------------------------

def test_validate_content() -> None:
    TwilioProvider.validate_content("sms", {"text": "hi"})
    TwilioProvider.validate_content("sms", {"text": "hi", "media_url": "https://x.io/a.png"})
    TwilioProvider.validate_content("sms", {"text": "ж" * 1600})
    bad: list[tuple[dict[str, Any], str]] = [
        ({}, "content.text"),
        ({"text": 5}, "content.text"),
        ({"text": ""}, "content.text"),
        ({"text": "a" * 1601}, "content.text"),
        ({"text": "{" * 801}, "content.text"),
        ({"text": "a\x00"}, "content.text"),
        ({"text": "hi", "media_url": "http://x.io/a.png"}, "content.media_url"),
        ({"text": "hi", "media_url": "https:///a.png"}, "content.media_url"),
        ({"text": "hi", "media_url": "https://x.io/a b.png"}, "content.media_url"),
        ({"text": "hi", "media_url": ["https://x.io/a.png"]}, "content.media_url"),
    ]
    for content, field in bad:
        with pytest.raises(InputError) as info:
            TwilioProvider.validate_content("sms", content)
        assert info.value.field == field, content


def test_generic_http_provider_checks_sms_text_only() -> None:
    HttpProvider.validate_content("sms", {"text": "hi"})
    HttpProvider.validate_content("webhook", {"anything": 1})
    HttpProvider.validate_content("email", {})
    with pytest.raises(InputError):
        HttpProvider.validate_content("sms", {"message": "hi"})
    with pytest.raises(InputError):
        HttpProvider.validate_content("sms", {"text": "a" * 1601})


def test_check_options(monkeypatch: pytest.MonkeyPatch) -> None:
    ok = TwilioProvider.check_options(config(), location="providers.t")
    assert ok == []
    cfg = ProviderConfig("t", "twilio", {"account_sid": "nope", "base_url": "ftp://x",
                                         "price_per_segment": "cheap"})
    problems = {p.location for p in TwilioProvider.check_options(cfg, location="p")}
    assert problems == {"p.account_sid", "p.auth_token", "p.from", "p.base_url",
                        "p.price_per_segment"}
    cfg = ProviderConfig("t", "twilio", {"account_sid": SID, "api_key_sid": "SKx",
                                         "messaging_service_sid": "MGx"})
    assert [p.location for p in TwilioProvider.check_options(cfg, location="p")] == [
        "p.api_key_secret"]
    cfg = ProviderConfig("t", "twilio", {"account_sid": SID, "api_key_sid": "SKx",
                                         "api_key_secret": "s", "from": FROM,
                                         "status_callback_url": "https://pg.example.com/cb"})
    assert [p.location for p in TwilioProvider.check_options(cfg, location="p")] == [
        "p.auth_token"]
    tokens = TwilioProvider(config(secondary_auth_token="old"), context()).callback_tokens
    assert tokens == (TOKEN, "old")
    with pytest.raises(ConfigError, match="TWILIO_TEST_TOKEN"):
        TwilioProvider(config(auth_token="env:TWILIO_TEST_TOKEN"), context())
    monkeypatch.setenv("TWILIO_TEST_TOKEN", TOKEN)
    provider = TwilioProvider(config(auth_token="env:TWILIO_TEST_TOKEN"), context())
    assert provider.describe()["options"]["auth_token"] == "***"
    assert TOKEN not in repr(provider.describe())


def test_render() -> None:
    provider = TwilioProvider(config(status_callback_url="https://pg.example.com/cb"), context())
    now = 1_000_000.0
    form = provider.render(delivery(message_id="m/1 2", expires_at=now + 120), now=now)
    assert form == {
        "To": "+15551230000", "From": FROM, "Body": "Your code is 123456",
        "StatusCallback": "https://pg.example.com/cb?message_id=m%2F1%202",
        "ValidityPeriod": "120",
    }
    provider = TwilioProvider(config(
        messaging_service_sid="MG123", status_callback_url="https://pg.example.com/cb?t=1",
    ), context())
    d = delivery(content={"text": "hi", "media_url": "https://x.io/a.png"},
                 expires_at=now + 86400)
    form = provider.render(d, now=now)
    assert "From" not in form and form["MessagingServiceSid"] == "MG123"
    assert form["StatusCallback"] == "https://pg.example.com/cb?t=1&message_id=msg_0001"
    assert form["MediaUrl"] == "https://x.io/a.png" and "ValidityPeriod" not in form
    assert provider.render(delivery(expires_at=now - 5), now=now)["ValidityPeriod"] == "1"


# -- contract against the sandbox's Twilio fake ---------------------------------------------

@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(twilio_auth_token=TOKEN, profiles={"seed": 3, "timeout_s": 3}) as sb:
        yield sb


@pytest.fixture
async def make_provider(sandbox: Sandbox) -> AsyncIterator[MakeProvider]:
    made: list[TwilioProvider] = []

    async def make(timeout: float = 5.0, **options: Any) -> TwilioProvider:
        options.setdefault("base_url", f"{sandbox.http_url}/twilio")
        provider = TwilioProvider(config(timeout, **options), context())
        await provider.start()
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.close()


async def failure(provider: TwilioProvider, d: Delivery | None = None) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        await provider.send(d or delivery())
    return info.value


async def test_accepted(sandbox: Sandbox, make_provider: MakeProvider) -> None:
    provider = await make_provider()
    receipt = await provider.send(delivery())
    assert receipt.status == 201 and (receipt.provider_message_id or "").startswith("SM")
    assert receipt.detail == "1 segment (GSM-7), est. $0.0079"
    [record] = sandbox.recorder.records("twilio")
    assert record.headers["authorization"] == "present"
    assert record.meta["idempotency_token"] == "msg_0001"
    form = record.meta["form"]
    assert (form["To"], form["From"], form["Body"]) == ("+15551230000", FROM, "Your code is 123456")
    assert 3590 <= int(form["ValidityPeriod"]) <= 3600


async def test_accepted_ucs2_cost_and_api_key(make_provider: MakeProvider) -> None:
    provider = await make_provider(api_key_sid="SK0123", api_key_secret=TOKEN,
                                   price_per_segment="0.0079")
    receipt = await provider.send(delivery(text="Привет! " * 10))
    assert receipt.detail == "2 segments (UCS-2), est. $0.0158"


@pytest.mark.parametrize(
    ("to", "rate", "cause", "code"),
    [
        ("+1555invalid", None, taxonomy.INVALID_RECIPIENT, "21211"),
        ("+1555dead", None, taxonomy.INVALID_RECIPIENT, "21211"),  # no StatusCallback
        ("+15551230000", "400", taxonomy.CONTENT_REJECTED, "21602"),
        ("+15551230000", "403", taxonomy.SENDER_CONFIG, "21408"),
        ("+15551230000", "404", taxonomy.SENDER_CONFIG, "20404"),
        ("+15551230000", "413", taxonomy.CONTENT_REJECTED, "21617"),
        ("+15551230000", "500", taxonomy.PROVIDER_OUTAGE, "20500"),
        ("+15551230000", "502", taxonomy.PROVIDER_OUTAGE, "20500"),
        ("+15551230000", "html", taxonomy.PROVIDER_OUTAGE, "HTTP 502"),
    ],
)
async def test_error_answers(sandbox: Sandbox, make_provider: MakeProvider, to: str,
                             rate: str | None, cause: Cause, code: str) -> None:
    if rate:
        sandbox.set_profile({"rates": {rate: 1.0}}, "twilio")
    err = await failure(await make_provider(), delivery(to=to))
    assert (err.cause, err.provider_code) == (cause, code)
    assert not err.maybe_sent and err.raw


async def test_wrong_credentials(make_provider: MakeProvider) -> None:
    err = await failure(await make_provider(auth_token="wrong"))
    assert (err.cause, err.provider_code, err.status) == (taxonomy.AUTH_CREDENTIALS, "20003", 401)
    assert "wrong" not in err.detail and "wrong" not in (err.raw or "")


async def test_rate_limited_with_retry_after(sandbox: Sandbox,
                                             make_provider: MakeProvider) -> None:
    sandbox.set_profile({"rates": {"429": 1.0}, "retry_after": 3}, "twilio")
    err = await failure(await make_provider())
    assert (err.cause, err.provider_code, err.retry_after) == (taxonomy.RATE_LIMITED, "20429", 3.0)
    assert err.scope == "provider"


async def test_unavailable_with_retry_after(sandbox: Sandbox,
                                            make_provider: MakeProvider) -> None:
    sandbox.set_profile({"rates": {"503": 1.0}, "retry_after": 2}, "twilio")
    err = await failure(await make_provider())
    assert (err.cause, err.provider_code, err.retry_after) == (
        taxonomy.PROVIDER_OUTAGE, "20503", 2.0)


async def test_flaky_then_accepted(make_provider: MakeProvider) -> None:
    provider = await make_provider()
    err = await failure(provider, delivery(to="+1555flaky"))
    assert err.cause is taxonomy.PROVIDER_OUTAGE
    assert (await provider.send(delivery(to="+1555flaky", attempt=2))).status == 201


async def test_timeout(sandbox: Sandbox, make_provider: MakeProvider) -> None:
    sandbox.set_profile({"rates": {"timeout": 1.0}, "timeout_s": 2}, "twilio")
    err = await failure(await make_provider(timeout=0.3))
    assert (err.cause, err.provider_code, err.maybe_sent) == (
        taxonomy.NETWORK_TIMEOUT, "TIMEOUT", True)


async def test_connection_reset(sandbox: Sandbox, make_provider: MakeProvider) -> None:
    sandbox.set_profile({"rates": {"reset": 1.0}}, "twilio")
    err = await failure(await make_provider())
    assert (err.cause, err.provider_code, err.maybe_sent) == (
        taxonomy.NETWORK_TIMEOUT, "CONNECTION_RESET", True)


async def test_garbled_success_body(make_provider: MakeProvider) -> None:
    # Twilio said 201 but we cannot read the SID: maybe sent, bounded retries, raw kept.
    err = await failure(await make_provider(), delivery(to="+1555garbled"))
    assert (err.cause, err.status, err.maybe_sent) == (taxonomy.UNKNOWN, 201, True)
    assert (err.raw or "").startswith('{"sid": "SM')


async def test_unreachable_provider(make_provider: MakeProvider) -> None:
    err = await failure(await make_provider(base_url="http://127.0.0.1:9/twilio"))
    assert (err.cause, err.provider_code) == (taxonomy.NETWORK_TIMEOUT, "CONNECT_ERROR")


async def test_the_live_check_reads_with_the_send_credentials_and_sends_nothing(
    sandbox: Sandbox, make_provider: MakeProvider,
) -> None:
    assert await (await make_provider()).check() is True
    assert await (await make_provider(api_key_sid="SK0123", api_key_secret=TOKEN)).check()
    with pytest.raises(DeliveryError) as info:
        await (await make_provider(auth_token="wrong")).check()
    err = info.value
    assert (err.cause, err.provider_code, err.status) == (taxonomy.AUTH_CREDENTIALS, "20003", 401)
    assert "wrong" not in err.detail
    assert sandbox.recorder.records("twilio") == []  # no message was sent
