"""The apprise provider against the sandbox's webhook receiver, reached through apprise's own
``json://`` plugin: apprise's boolean answer and log lines become taxonomy causes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pushguard import taxonomy
from pushguard.config import ProviderConfig
from pushguard.exceptions import ConfigError, DeliveryError, InputError
from pushguard.providers.apprise_provider import (
    AppriseProvider,
    classify_log,
    redact,
    secrets_of,
)
from pushguard.providers.base import Delivery, ProviderContext
from pushguard.sandbox import Sandbox
from pushguard.settings import Settings
from pushguard.ssrf import OutboundGuard

T = taxonomy


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(profiles={"seed": 1, "timeout_s": 5}) as sb:
        yield sb


@pytest.fixture
async def provider() -> AsyncIterator[AppriseProvider]:
    p = AppriseProvider(ProviderConfig("ap", "apprise", {}, timeout=5),
                        ProviderContext(Settings(outbound_allow="127.0.0.1"),
                                        OutboundGuard.from_env("127.0.0.1")))
    await p.start()
    yield p
    await p.close()


def delivery(to: str, content: dict[str, Any] | None = None) -> Delivery:
    return Delivery("m-1", "chat", to, content or {"text": "hello", "title": "Build"}, None, 1,
                    1, time.time() + 60)


def json_url(sb: Sandbox, name: str, query: str = "") -> str:
    return f"json://user:hunter2pass@127.0.0.1:{sb.http_port}/hooks/{name}{query}"


async def test_sends(sandbox: Sandbox, provider: AppriseProvider) -> None:
    receipt = await provider.send(delivery(json_url(sandbox, "ok")))
    assert "JSON" in receipt.detail
    (record,) = sandbox.recorder.records("webhook")
    assert (record.body["title"], record.body["message"]) == ("Build", "hello")


FAULTS = [
    ("400", T.UNKNOWN, 400),
    ("401", T.AUTH_CREDENTIALS, 401),
    ("403", T.AUTH_CREDENTIALS, 403),
    ("404", T.UNREGISTERED_TOKEN, 404),
    ("410", T.UNREGISTERED_TOKEN, 410),
    ("413", T.CONTENT_REJECTED, 413),
    ("429", T.RATE_LIMITED, 429),
    ("500", T.PROVIDER_OUTAGE, 500),
    ("503", T.PROVIDER_OUTAGE, 503),
    ("html", T.PROVIDER_OUTAGE, 502),
    ("reset", T.NETWORK_TIMEOUT, None),
    ("timeout", T.NETWORK_TIMEOUT, None),
]


@pytest.mark.parametrize(("fault", "cause", "status"), FAULTS, ids=[f[0] for f in FAULTS])
async def test_faults(sandbox: Sandbox, provider: AppriseProvider, fault: str,
                      cause: taxonomy.Cause, status: int | None) -> None:
    sandbox.set_profile({"rates": {fault: 1.0}, "timeout_s": 5})
    # rto: apprise's own read timeout, so the plugin's thread gives up with the test.
    with pytest.raises(DeliveryError) as info:
        await provider.send(delivery(json_url(sandbox, fault, "?rto=1")))
    err = info.value
    assert (err.cause, err.status) == (cause, status), err.raw
    assert err.raw and "hunter2pass" not in err.raw
    if cause is T.NETWORK_TIMEOUT:
        assert err.maybe_sent


async def test_unknown_url_is_an_invalid_recipient(provider: AppriseProvider) -> None:
    with pytest.raises(DeliveryError) as info:
        await provider.send(delivery("nosuchservice://token"))
    assert info.value.cause is T.INVALID_RECIPIENT


async def test_self_hosted_servers_pass_the_ssrf_guard(provider: AppriseProvider) -> None:
    for url in ("json://10.1.2.3/hooks/x", "mailto://u:p@example.invalid?smtp=169.254.169.254"):
        with pytest.raises(DeliveryError) as info:
            await provider.send(delivery(url))
        assert info.value.cause is T.VALIDATION_ERROR
        assert info.value.provider_code == "SSRF_BLOCKED"


def test_breaker_keys_hold_no_secrets(provider: AppriseProvider) -> None:
    assert provider.breaker_key(delivery("tgram://123:SECRET/42")) == "ap:tgram"
    assert provider.breaker_key(delivery("json://u:pw@127.0.0.1:8/x")) == "ap:json:127.0.0.1"


def test_redaction() -> None:
    url = "tgram://123456:SECRETTOKEN/-100200300"
    log = ("WARNING: Failed to send to tgram://123456:SECRETTOKEN/-100200300, error=403.\n"
           "DEBUG: GET https://api.telegram.org/bot123456:SECRETTOKEN/x?key=abc")
    cleaned = redact(log, secrets_of(url))
    assert "SECRETTOKEN" not in cleaned and "-100200300" not in cleaned
    assert "?***" in cleaned and "error=403" in cleaned
    assert "pw" not in redact("see json://me:pw@host/x", [])


@pytest.mark.parametrize(("log", "cause"), [
    ("WARNING: Failed to send Telegram notification to 1: Forbidden: bot was blocked by the "
     "user, error=403.", T.AUTH_CREDENTIALS),
    ("WARNING: Failed to send Discord notification: Not Found, error=404.", T.UNREGISTERED_TOKEN),
    ("WARNING: Failed to send Slack notification: error=429.", T.RATE_LIMITED),
    ("WARNING: Failed to send JSON POST notification: Bad gateway., error=502.",
     T.PROVIDER_OUTAGE),
    ("WARNING: A Connection error occurred sending JSON notification to h.", T.NETWORK_TIMEOUT),
    ("WARNING: Failed to send JSON POST notification: error=400.", T.UNKNOWN),
    ("", T.UNKNOWN),
])
def test_classify_log(log: str, cause: taxonomy.Cause) -> None:
    assert classify_log(log).cause is cause


def test_classify_log_timeout_without_a_line() -> None:
    err = classify_log("", timed_out=True)
    assert err.cause is T.NETWORK_TIMEOUT and err.maybe_sent


def test_content_and_options() -> None:
    AppriseProvider.validate_content("chat", {"text": "x" * 4000})
    for content in ({}, {"text": "x" * 4001}, {"text": "x", "title": 3}):
        with pytest.raises(InputError):
            AppriseProvider.validate_content("chat", content)
    with pytest.raises(ConfigError):
        AppriseProvider(ProviderConfig("ap", "apprise", {"body_format": "rtf"}),
                        ProviderContext(Settings(), OutboundGuard.from_env("")))


def test_check_options() -> None:
    config = ProviderConfig("ap", "apprise", {"body_format": "rtf", "urls": []})
    problems = AppriseProvider.check_options(config, location="providers.ap")
    assert sorted(p.location for p in problems) == ["providers.ap.body_format",
                                                     "providers.ap.urls"]
    ok = ProviderConfig("ap", "apprise", {"body_format": "markdown"})
    assert AppriseProvider.check_options(ok, location="providers.ap") == []
