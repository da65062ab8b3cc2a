"""Twilio status callbacks: signatures checked against Twilio's own library, status parsing,
and the sandbox's signed callbacks received by a real server on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from multidict import MultiDict, MultiDictProxy
from twilio.request_validator import RequestValidator

from pushguard import taxonomy
from pushguard.config import ProviderConfig
from pushguard.exceptions import InputError
from pushguard.providers.base import Delivery, ProviderContext
from pushguard.providers.twilio import CALLBACK_MESSAGE_PARAM, TwilioProvider
from pushguard.receipts.twilio import compute_signature, parse_status, verify_signature
from pushguard.sandbox import Sandbox
from pushguard.settings import Settings
from pushguard.ssrf import OutboundGuard
from pushguard.taxonomy import Cause

PRIMARY = "12345678901234567890123456789012"
SECONDARY = "abcdefabcdefabcdefabcdefabcdefab"
URL = "https://pushguard.example.com/v1/receipts/twilio?message_id=msg_42"
PARAMS = {
    "MessageSid": "SM0123456789abcdef0123456789abcdef",
    "SmsSid": "SM0123456789abcdef0123456789abcdef",
    "AccountSid": "AC0123456789abcdef0123456789abcdef",
    "To": "+15558675310",
    "From": "+15017122661",
    "MessageStatus": "undelivered",
    "SmsStatus": "undelivered",
    "ErrorCode": "30005",
    "ApiVersion": "2010-04-01",
}


def twilio_sign(token: str, url: str, params: object) -> str:
    signed: str = RequestValidator(token).compute_signature(url, params)
    return signed


def test_signature_matches_twilios_library() -> None:
    assert compute_signature(PRIMARY, URL, PARAMS) == twilio_sign(PRIMARY, URL, PARAMS)
    multi = MultiDict([("MediaUrl", "b"), ("MediaUrl", "a"), ("To", "+1")])
    assert compute_signature(PRIMARY, URL, MultiDictProxy(multi)) == twilio_sign(
        PRIMARY, URL, multi)
    assert compute_signature(PRIMARY, URL, list(multi.items())) == twilio_sign(
        PRIMARY, URL, multi)


def test_verify_official_signature() -> None:
    signature = twilio_sign(PRIMARY, URL, PARAMS)
    assert verify_signature(PRIMARY, URL, PARAMS, signature)
    assert verify_signature(PRIMARY, URL, PARAMS, f" {signature}\n")


def test_tampered_param_fails() -> None:
    signature = twilio_sign(PRIMARY, URL, PARAMS)
    assert not verify_signature(PRIMARY, URL, {**PARAMS, "MessageStatus": "delivered"}, signature)
    assert not verify_signature(PRIMARY, URL, {**PARAMS, "Extra": "1"}, signature)
    params = dict(PARAMS)
    del params["ErrorCode"]
    assert not verify_signature(PRIMARY, URL, params, signature)


def test_different_url_fails() -> None:
    signature = twilio_sign(PRIMARY, URL, PARAMS)
    assert not verify_signature(PRIMARY, URL.replace("msg_42", "msg_43"), PARAMS, signature)
    assert not verify_signature(PRIMARY, URL.replace("https", "http"), PARAMS, signature)
    assert not verify_signature(PRIMARY, URL.split("?")[0], PARAMS, signature)


def test_default_port_variants_verify() -> None:
    with_port = URL.replace(".com/", ".com:443/")
    assert verify_signature(PRIMARY, URL, PARAMS, twilio_sign(PRIMARY, with_port, PARAMS))
    assert verify_signature(PRIMARY, with_port, PARAMS, twilio_sign(PRIMARY, URL, PARAMS))


def test_secondary_token() -> None:
    by_secondary = twilio_sign(SECONDARY, URL, PARAMS)
    assert not verify_signature(PRIMARY, URL, PARAMS, by_secondary)
    assert verify_signature([PRIMARY, SECONDARY], URL, PARAMS, by_secondary)
    assert verify_signature((PRIMARY, SECONDARY), URL, PARAMS, twilio_sign(PRIMARY, URL, PARAMS))
    assert not verify_signature([PRIMARY, SECONDARY], URL, PARAMS, twilio_sign("x", URL, PARAMS))


def test_missing_signature_or_token_fails() -> None:
    assert not verify_signature(PRIMARY, URL, PARAMS, "")
    unsigned_with_empty_key = twilio_sign("", URL, PARAMS)
    assert not verify_signature(["", PRIMARY], URL, PARAMS, unsigned_with_empty_key)
    assert not verify_signature([], URL, PARAMS, twilio_sign(PRIMARY, URL, PARAMS))
    assert not verify_signature(PRIMARY, URL, PARAMS, "é" * 28)  # non-ASCII must not raise


def test_json_body_hash() -> None:
    body = b'{"MessageSid": "SM1", "MessageStatus": "delivered"}'
    url = f"{URL}&bodySHA256={hashlib.sha256(body).hexdigest()}"
    signature = twilio_sign(PRIMARY, url, {})
    assert RequestValidator(PRIMARY).validate(url, body.decode(), signature)
    assert verify_signature(PRIMARY, url, {}, signature, body=body)
    assert not verify_signature(PRIMARY, url, {}, signature, body=body + b" ")
    assert not verify_signature(PRIMARY, url, {}, signature)


@pytest.mark.parametrize(
    ("status", "code", "cause", "terminal", "delivered", "suppress"),
    [
        ("queued", None, None, False, False, False),
        ("accepted", None, None, False, False, False),
        ("sending", None, None, False, False, False),
        ("sent", None, None, False, False, False),
        ("delivered", None, None, True, True, False),
        ("read", None, None, True, True, False),
        ("canceled", None, None, True, False, False),
        ("undelivered", "30005", taxonomy.INVALID_RECIPIENT, True, False, True),
        ("undelivered", "30006", taxonomy.INVALID_RECIPIENT, True, False, True),
        ("undelivered", "30003", taxonomy.RECIPIENT_TEMPORARY, True, False, False),
        ("undelivered", "30007", taxonomy.CONTENT_REJECTED, True, False, False),
        ("undelivered", "30008", taxonomy.UNKNOWN, True, False, False),
        ("undelivered", "30999", taxonomy.UNKNOWN, True, False, False),
        ("undelivered", None, taxonomy.UNKNOWN, True, False, False),
        ("failed", "30001", taxonomy.PROVIDER_OUTAGE, True, False, False),
        ("failed", "30500", taxonomy.PROVIDER_OUTAGE, True, False, False),
        ("failed", "21610", taxonomy.NO_CONSENT, True, False, True),
        ("failed", "63014", taxonomy.NO_CONSENT, True, False, True),
        ("failed", "21408", taxonomy.SENDER_CONFIG, True, False, False),
        ("failed", "junk", taxonomy.UNKNOWN, True, False, False),
        ("partially_delivered", None, taxonomy.UNKNOWN, True, False, False),
        ("some_future_status", None, None, False, False, False),
    ],
)
def test_parse_status(status: str, code: str | None, cause: Cause | None, terminal: bool,
                      delivered: bool, suppress: bool) -> None:
    params = {"MessageSid": "SM1", "MessageStatus": status.upper(), "To": "+1555", "AccountSid":
              "AC1", **({"ErrorCode": code} if code else {})}
    receipt = parse_status(params)
    assert (receipt.provider_message_id, receipt.status, receipt.error_code) == ("SM1", status,
                                                                                 code)
    assert (receipt.cause, receipt.terminal, receipt.delivered) == (cause, terminal, delivered)
    assert receipt.suppress is suppress
    assert (receipt.to, receipt.account_sid) == ("+1555", "AC1")


def test_parse_status_legacy_names_and_errors() -> None:
    receipt = parse_status({"SmsSid": "SM2", "SmsStatus": "delivered"})
    assert (receipt.provider_message_id, receipt.delivered) == ("SM2", True)
    with pytest.raises(InputError) as info:
        parse_status({"MessageStatus": "sent"})
    assert info.value.field == "MessageSid"
    with pytest.raises(InputError) as info:
        parse_status({"MessageSid": "SM3"})
    assert info.value.field == "MessageStatus"
    with pytest.raises(InputError, match="inbound"):
        parse_status({"MessageSid": "SM4", "MessageStatus": "received"})


# -- the sandbox's signed callbacks, received on loopback -------------------------------------

@dataclass
class Callback:
    url: str
    form: MultiDictProxy[str]
    signature: str


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, asyncio.Queue[Callback]]]:
    """A tiny status-callback endpoint; it rebuilds the URL from its public base, as the real
    endpoint must behind a proxy."""
    received: asyncio.Queue[Callback] = asyncio.Queue()
    public: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        form = MultiDictProxy(MultiDict((k, str(v)) for k, v in (await request.post()).items()))
        url = f"{public[0]}?{request.query_string}" if request.query_string else public[0]
        await received.put(Callback(url, form, request.headers.get("X-Twilio-Signature", "")))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/v1/receipts/twilio", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    public.append(f"http://127.0.0.1:{runner.addresses[0][1]}/v1/receipts/twilio")
    try:
        yield public[0], received
    finally:
        await runner.cleanup()


async def test_sandbox_callbacks_verify_and_parse(
    receiver: tuple[str, asyncio.Queue[Callback]],
) -> None:
    callback_url, received = receiver
    options = {"account_sid": PARAMS["AccountSid"], "auth_token": PRIMARY, "from": "+1500",
               "status_callback_url": callback_url}
    context = ProviderContext(Settings(outbound_allow="127.0.0.1"),
                              OutboundGuard.from_env("127.0.0.1"))
    async with Sandbox(twilio_auth_token=PRIMARY) as sb:
        options["base_url"] = f"{sb.http_url}/twilio"
        provider = TwilioProvider(ProviderConfig("tw", "twilio", options), context)
        await provider.start()
        try:
            sids = {}
            for mid, to in (("msg_ok", "+15551230000"), ("msg_dead", "+1555dead")):
                d = Delivery(mid, "sms", to, {"text": "hi"}, None, 1, 0, time.time() + 60)
                # With a StatusCallback a dead number is accepted; the bad news comes later.
                sids[mid] = (await provider.send(d)).provider_message_id
            callbacks = [await asyncio.wait_for(received.get(), 5) for _ in range(4)]
        finally:
            await provider.close()
    seen: dict[str, list[tuple[str, str | None, Cause | None, bool]]] = {}
    for cb in callbacks:
        assert verify_signature(PRIMARY, cb.url, cb.form, cb.signature)
        assert verify_signature([SECONDARY, PRIMARY], cb.url, cb.form, cb.signature)
        assert not verify_signature(SECONDARY, cb.url, cb.form, cb.signature)
        tampered = MultiDict(cb.form)
        tampered["MessageStatus"] = "read"
        assert not verify_signature(PRIMARY, cb.url, tampered, cb.signature)
        assert not verify_signature(PRIMARY, cb.url + "x", cb.form, cb.signature)
        receipt = parse_status(cb.form)
        message_id = cb.url.split(f"{CALLBACK_MESSAGE_PARAM}=")[1]
        assert receipt.provider_message_id == sids[message_id]
        seen.setdefault(message_id, []).append(
            (receipt.status, receipt.error_code, receipt.cause, receipt.terminal))
    assert seen["msg_ok"] == [("sent", None, None, False), ("delivered", None, None, True)]
    assert seen["msg_dead"] == [
        ("sent", None, None, False), ("undelivered", "30005", taxonomy.INVALID_RECIPIENT, True)]
