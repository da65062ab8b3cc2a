"""Slack, Discord, Telegram and Teams against the sandbox chat fakes: what each service saw,
and every answer it can give mapped to the right cause (one contract suite for all four)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from pushguard import taxonomy
from pushguard.config import ProviderConfig
from pushguard.exceptions import ConfigError, DeliveryError, InputError
from pushguard.providers.base import Delivery, ProviderContext
from pushguard.providers.chat import ChatProvider, DiscordProvider, SlackProvider, _webhook_url
from pushguard.providers.chat_errors import classify_discord, classify_slack
from pushguard.providers.httpclient import Response
from pushguard.providers.teams import TeamsProvider, classify_teams
from pushguard.providers.telegram import TelegramProvider, classify_telegram
from pushguard.sandbox import Sandbox
from pushguard.settings import Settings
from pushguard.ssrf import OutboundGuard

T = taxonomy
BOT = "123456:TESTtoken_secret-value"


@dataclass
class Kind:
    """How one provider type is configured and addressed against the sandbox."""

    cls: type[ChatProvider]
    address: Callable[[str, str], str]  # (sandbox URL, name) -> to
    options: Callable[[str], dict[str, Any]] = lambda base: {}
    expected: dict[str, tuple[taxonomy.Cause, int, dict[str, Any]]] = field(default_factory=dict)


OUTAGES: dict[str, tuple[taxonomy.Cause, int, dict[str, Any]]] = {
    "500": (T.PROVIDER_OUTAGE, 500, {}),
    "503": (T.PROVIDER_OUTAGE, 503, {"retry_after": 2.0}),
    "html": (T.PROVIDER_OUTAGE, 502, {}),
}
KINDS: dict[str, Kind] = {
    "slack": Kind(SlackProvider, lambda base, n: f"{base}/chat/slack/{n}", expected={
        "400": (T.CONTENT_REJECTED, 400, {"provider_code": "invalid_payload"}),
        "401": (T.UNREGISTERED_TOKEN, 403, {"provider_code": "invalid_token"}),
        "403": (T.SENDER_CONFIG, 403, {"provider_code": "action_prohibited"}),
        "404": (T.UNREGISTERED_TOKEN, 404, {"provider_code": "no_service"}),
        "410": (T.UNREGISTERED_TOKEN, 410, {"provider_code": "channel_is_archived"}),
        "invalid": (T.INVALID_RECIPIENT, 404, {"provider_code": "channel_not_found"}),
        "413": (T.CONTENT_REJECTED, 413, {}),
        "429": (T.RATE_LIMITED, 429, {"retry_after": 2.0, "scope": "endpoint"}),
    }),
    "slack-bot": Kind(SlackProvider, lambda base, n: f"slack://xoxb-test-token/C{n}",
                      lambda base: {"api_url": f"{base}/chat/slack/api"}, expected={
        "400": (T.CONTENT_REJECTED, 200, {"provider_code": "invalid_blocks"}),
        "401": (T.AUTH_CREDENTIALS, 200, {"provider_code": "invalid_auth"}),
        "403": (T.INVALID_RECIPIENT, 200, {"provider_code": "not_in_channel", "suppress": False}),
        "404": (T.INVALID_RECIPIENT, 200, {"provider_code": "channel_not_found"}),
        "410": (T.UNREGISTERED_TOKEN, 200, {"provider_code": "is_archived"}),
        "invalid": (T.INVALID_RECIPIENT, 200, {}),
        "413": (T.CONTENT_REJECTED, 200, {"provider_code": "msg_too_long"}),
        "429": (T.RATE_LIMITED, 429, {"retry_after": 2.0, "scope": "recipient"}),
    }),
    "discord": Kind(DiscordProvider, lambda base, n: f"{base}/chat/discord/{n}", expected={
        "400": (T.CONTENT_REJECTED, 400, {"provider_code": "50035"}),
        "401": (T.INVALID_RECIPIENT, 401, {"provider_code": "50027"}),
        "403": (T.SENDER_CONFIG, 403, {"provider_code": "50013"}),
        "404": (T.UNREGISTERED_TOKEN, 404, {"provider_code": "10015"}),
        "410": (T.UNREGISTERED_TOKEN, 404, {"provider_code": "10015"}),
        "invalid": (T.INVALID_RECIPIENT, 404, {"provider_code": "10003"}),
        "413": (T.CONTENT_REJECTED, 413, {"provider_code": "40005"}),
        "429": (T.RATE_LIMITED, 429, {"retry_after": 2.0, "scope": "endpoint"}),
    }),
    "telegram": Kind(TelegramProvider, lambda base, n: f"tgram://{BOT}/@{n.replace('-', '_')}",
                     lambda base: {"base_url": f"{base}/chat/telegram"}, expected={
        "400": (T.CONTENT_REJECTED, 400, {}),
        "401": (T.AUTH_CREDENTIALS, 401, {}),
        "403": (T.UNREGISTERED_TOKEN, 403, {}),
        "404": (T.AUTH_CREDENTIALS, 404, {}),
        "410": (T.NO_CONSENT, 403, {}),
        "invalid": (T.INVALID_RECIPIENT, 400, {}),
        "413": (T.CONTENT_REJECTED, 413, {}),
        "429": (T.RATE_LIMITED, 429, {"retry_after": 2.0, "scope": "provider"}),
    }),
    "teams": Kind(TeamsProvider, lambda base, n: f"{base}/chat/teams/{n}", expected={
        "400": (T.CONTENT_REJECTED, 400, {"provider_code": "InvalidRequestContent"}),
        "401": (T.AUTH_CREDENTIALS, 401, {}),
        "403": (T.AUTH_CREDENTIALS, 403, {}),
        "404": (T.UNREGISTERED_TOKEN, 404, {"provider_code": "WorkflowNotFound"}),
        "410": (T.UNREGISTERED_TOKEN, 404, {}),
        "invalid": (T.UNREGISTERED_TOKEN, 404, {}),
        "413": (T.CONTENT_REJECTED, 413, {}),
        "429": (T.RATE_LIMITED, 429, {"retry_after": 2.0, "scope": "endpoint"}),
    }),
    "teams-connector": Kind(TeamsProvider, lambda base, n: f"{base}/chat/teams/{n}",
                            lambda base: {"format": "messagecard"}, expected={
        "400": (T.CONTENT_REJECTED, 400, {}),  # reported inside a 200
        "401": (T.AUTH_CREDENTIALS, 401, {}),
        "403": (T.AUTH_CREDENTIALS, 403, {}),
        "404": (T.UNREGISTERED_TOKEN, 404, {}),
        "410": (T.UNREGISTERED_TOKEN, 410, {}),
        "invalid": (T.CONTENT_REJECTED, 400, {}),
        "413": (T.CONTENT_REJECTED, 413, {}),
        "429": (T.RATE_LIMITED, 429, {"retry_after": None}),
    }),
}
TRANSPORT = {"timeout": (T.NETWORK_TIMEOUT, None, {"maybe_sent": True}),
             "reset": (T.NETWORK_TIMEOUT, None, {"maybe_sent": True})}
CASES = [(kind, fault, *expect) for kind, k in KINDS.items()
         for fault, expect in {**k.expected, **OUTAGES, **TRANSPORT}.items()]
CONTENT = {"text": "hello", "title": "Build"}


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(profiles={"seed": 1, "timeout_s": 5}) as sb:
        yield sb


def make(kind: Kind, base: str, *, timeout: float = 3.0, **options: Any) -> ChatProvider:
    opts = {**kind.options(base), **options}
    return kind.cls(ProviderConfig("chat-x", kind.cls.meta.type, opts, timeout=timeout),
                    ProviderContext(Settings(outbound_allow="127.0.0.1"),
                                    OutboundGuard.from_env("127.0.0.1")))


def delivery(to: str, content: dict[str, Any] | None = None) -> Delivery:
    return Delivery("m-1", "chat", to, content or CONTENT, None, 1, 1, time.time() + 60)


async def send(kind: Kind, sb: Sandbox, to: str, *, timeout: float = 3.0,
               **options: Any) -> Any:
    provider = make(kind, sb.http_url, timeout=timeout, **options)
    await provider.start()
    try:
        return await provider.send(delivery(to))
    finally:
        await provider.close()


@pytest.mark.parametrize(("kind", "fault", "cause", "status", "extra"), CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
async def test_contract(sandbox: Sandbox, kind: str, fault: str, cause: taxonomy.Cause,
                        status: int | None, extra: dict[str, Any]) -> None:
    k = KINDS[kind]
    sandbox.set_profile({"rates": {fault: 1.0}, "retry_after": 2, "timeout_s": 5})
    # a short client timeout only where the fault is a timeout: elsewhere a loaded machine's
    # slow answer must not turn into one
    with pytest.raises(DeliveryError) as info:
        await send(k, sandbox, k.address(sandbox.http_url, f"hook-{fault}"),
                   timeout=0.5 if fault == "timeout" else 3.0)
    err = info.value
    assert (err.cause, err.status) == (cause, status), err
    for name, value in extra.items():
        assert getattr(err, name) == value, name
    assert BOT not in str(err) and BOT.split(":")[1] not in (err.raw or "")
    (record,) = sandbox.recorder.records("chat")
    assert record.outcome in (str(status), fault, "200", "404", "502")


async def test_slack_webhook(sandbox: Sandbox) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]
    k = KINDS["slack"]
    receipt = await send(k, sandbox, k.address(sandbox.http_url, "T1"))
    assert receipt.status == 200
    sandbox.recorder.clear()
    provider = make(k, sandbox.http_url)
    await provider.send(delivery(k.address(sandbox.http_url, "T1"),
                                 {"text": "x", "blocks": blocks}))
    await provider.close()
    (record,) = sandbox.recorder.records("chat")
    assert record.body == {"text": "x", "blocks": blocks} and record.meta["service"] == "slack"


async def test_slack_bot(sandbox: Sandbox) -> None:
    k = KINDS["slack-bot"]
    receipt = await send(k, sandbox, "slack://xoxb-test-token/C042")
    assert receipt.provider_message_id  # the message ts
    (record,) = sandbox.recorder.records("chat")
    assert record.body == {"text": "*Build*\nhello", "channel": "C042"}
    assert record.headers["authorization"] == "present"
    provider = make(k, sandbox.http_url, token="xoxb-from-options")
    assert provider.breaker_key(delivery("slack://C042")) == "chat-x"
    with pytest.raises(DeliveryError) as info:
        await send(KINDS["slack"], sandbox, "slack://C042")  # no token anywhere
    assert info.value.cause is T.SENDER_CONFIG and info.value.provider_code == "NO_TOKEN"


async def test_discord(sandbox: Sandbox) -> None:
    k = KINDS["discord"]
    embeds = [{"title": "e"}]
    provider = make(k, sandbox.http_url)
    url = k.address(sandbox.http_url, "D1")
    assert (await provider.send(delivery(url, {"text": "x", "embeds": embeds}))).status == 204
    waited = await provider.send(delivery(url + "?wait=true"))
    await provider.close()
    assert waited.status == 200 and waited.provider_message_id
    first, second = sandbox.recorder.records("chat")
    assert first.body == {"content": "x", "embeds": embeds}
    assert second.body == {"content": "**Build**\nhello"}


async def test_telegram(sandbox: Sandbox) -> None:
    k = KINDS["telegram"]
    receipt = await send(k, sandbox, f"tgram://{BOT}/-1001234567890")
    assert receipt.status == 200 and receipt.provider_message_id
    (record,) = sandbox.recorder.records("chat")
    assert record.body == {"chat_id": "-1001234567890", "text": "Build\n\nhello"}
    assert record.address == "-1001234567890"
    provider = make(k, sandbox.http_url, token=BOT)
    assert provider.target(delivery("tgram://@mychannel")) == (BOT, "@mychannel")
    assert provider.target(delivery("42")) == (BOT, "42")
    assert provider.breaker_key(delivery("tgram://42")) == "chat-x:bot123456"
    for bad in ("tgram://1/2", "tgram://", "not a chat"):
        with pytest.raises(DeliveryError) as info:
            provider.target(delivery(bad))
        assert info.value.cause is T.INVALID_RECIPIENT
    with pytest.raises(DeliveryError) as info:
        make(k, sandbox.http_url).target(delivery("tgram://42"))
    assert info.value.cause is T.SENDER_CONFIG


async def test_telegram_wrong_base_url_is_sender_config(sandbox: Sandbox) -> None:
    k = KINDS["telegram"]
    provider = make(k, sandbox.http_url, base_url=f"{sandbox.http_url}/chat/telegram/x")
    with pytest.raises(DeliveryError) as info:
        await provider.send(delivery(f"tgram://{BOT}/42"))
    await provider.close()
    assert info.value.cause is T.SENDER_CONFIG and BOT not in str(info.value)


@pytest.mark.parametrize(("kind", "expect"), [
    ("teams", {"type": "message"}), ("teams-connector", {"@type": "MessageCard"})])
async def test_teams(sandbox: Sandbox, kind: str, expect: dict[str, str]) -> None:
    k = KINDS[kind]
    receipt = await send(k, sandbox, k.address(sandbox.http_url, "W1"))
    assert receipt.status == (202 if kind == "teams" else 200)
    (record,) = sandbox.recorder.records("chat")
    assert expect.items() <= record.body.items()
    if kind == "teams":
        card = record.body["attachments"][0]["content"]
        assert [b["text"] for b in card["body"]] == ["Build", "hello"]
    else:
        assert (record.body["title"], record.body["text"]) == ("Build", "hello")


async def test_connection_refused_hides_the_path() -> None:
    k = KINDS["telegram"]
    provider = make(k, "http://127.0.0.1:9")
    with pytest.raises(DeliveryError) as info:
        await provider.send(delivery(f"tgram://{BOT}/42"))
    await provider.close()
    assert info.value.cause is T.NETWORK_TIMEOUT and "TESTtoken" not in str(info.value)


def test_webhook_urls_from_apprise_spelling() -> None:
    d = delivery("discord://111/abc?avatar=no")
    assert _webhook_url(d, "discord", "https://discord.com/api/webhooks") == \
        "https://discord.com/api/webhooks/111/abc"
    with pytest.raises(DeliveryError):
        _webhook_url(delivery("discord://111"), "discord", "https://x")
    provider = make(KINDS["slack"], "http://127.0.0.1")
    assert provider._bot_target(delivery("slack://T1/B2/X3")) is None
    assert provider._bot_target(delivery("slack://xoxb-1/#general?footer=no")) == \
        ("xoxb-1", "#general")


def test_breaker_per_webhook_without_secrets() -> None:
    provider = make(KINDS["slack"], "http://127.0.0.1")
    a = provider.breaker_key(delivery("https://hooks.slack.com/services/T/B/secret1"))
    b = provider.breaker_key(delivery("https://hooks.slack.com/services/T/B/secret2"))
    assert a != b and "secret" not in a


@pytest.mark.parametrize(("cls", "limit"), [
    (SlackProvider, 4000), (DiscordProvider, 2000), (TelegramProvider, 4096),
    (TeamsProvider, 4000)])
def test_text_limits(cls: type[ChatProvider], limit: int) -> None:
    cls.validate_content("chat", {"text": "x" * limit})
    with pytest.raises(InputError) as info:
        cls.validate_content("chat", {"text": "x" * (limit + 1)})
    assert info.value.field == "content.text"
    if cls is not TeamsProvider:  # the title is part of the text everywhere but in a card
        with pytest.raises(InputError):
            cls.validate_content("chat", {"text": "x" * limit, "title": "t"})


@pytest.mark.parametrize(("cls", "content", "field"), [
    (SlackProvider, {}, "content.text"),
    (SlackProvider, {"text": "  "}, "content.text"),
    (DiscordProvider, {"text": 5}, "content.text"),
    (TelegramProvider, {"text": "x", "title": 1}, "content.title"),
    (SlackProvider, {"text": "x", "blocks": {"type": "section"}}, "content.blocks"),
    (SlackProvider, {"text": "x", "blocks": [{}] * 51}, "content.blocks"),
    (DiscordProvider, {"text": "x", "embeds": [{}] * 11}, "content.embeds"),
    (DiscordProvider, {"text": "x", "embeds": ["e"]}, "content.embeds"),
    (TeamsProvider, {"text": "x", "card": []}, "content.card"),
])
def test_validate_content(cls: type[ChatProvider], content: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as info:
        cls.validate_content("chat", content)
    assert info.value.field == field


def test_telegram_token_option(monkeypatch: pytest.MonkeyPatch) -> None:
    config = ProviderConfig("tg", "telegram", {"token": "env:TG_TEST_TOKEN"})
    problems = TelegramProvider.check_options(config, location="providers.tg")
    assert [p.location for p in problems] == ["providers.tg.token"]
    monkeypatch.setenv("TG_TEST_TOKEN", "not-a-token")
    assert TelegramProvider.check_options(config, location="providers.tg")
    monkeypatch.setenv("TG_TEST_TOKEN", BOT)
    assert TelegramProvider.check_options(config, location="providers.tg") == []
    with pytest.raises(ConfigError):
        make(KINDS["telegram"], "http://x", token="nope")


def resp(status: int, body: bytes | str = b"", content_type: str = "application/json",
         **headers: str) -> Response:
    raw = body.encode() if isinstance(body, str) else body
    return Response(status, CIMultiDictProxy(CIMultiDict({"Content-Type": content_type,
                                                         **headers})), raw, 0.01)


def tg(status: int, description: str, **parameters: Any) -> Response:
    import json
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return resp(status, json.dumps(body))


@pytest.mark.parametrize(("answer", "cause"), [
    (resp(200, '{"ok":true,"result":{"message_id":7}}'), None),
    (tg(403, "Forbidden: bot was blocked by the user"), T.NO_CONSENT),
    (tg(403, "Forbidden: bot can't initiate conversation with a user"), T.NO_CONSENT),
    (tg(403, "Forbidden: user is deactivated"), T.UNREGISTERED_TOKEN),
    (tg(400, "Bad Request: chat not found"), T.INVALID_RECIPIENT),
    (tg(400, "Bad Request: message is too long"), T.CONTENT_REJECTED),
    (tg(401, "Unauthorized"), T.AUTH_CREDENTIALS),
    (tg(400, "Bad Request: something new"), T.UNKNOWN),
    (resp(200, "<html>captive portal</html>", "text/html"), T.UNKNOWN),
    (resp(502, "<html>Bad Gateway</html>", "text/html"), T.PROVIDER_OUTAGE),
])
def test_classify_telegram(answer: Response, cause: taxonomy.Cause | None) -> None:
    error = classify_telegram(answer)
    assert (error.cause if error else None) is cause


def test_classify_telegram_hints() -> None:
    limited = classify_telegram(tg(429, "Too Many Requests: retry after 5", retry_after=5))
    assert limited is not None and (limited.retry_after, limited.scope) == (5.0, "provider")
    moved = classify_telegram(tg(400, "Bad Request: group chat was upgraded to a supergroup "
                                      "chat", migrate_to_chat_id=-1001))
    assert moved is not None and moved.extra == {"migrate_to_chat_id": -1001}


@pytest.mark.parametrize(("answer", "bot", "cause"), [
    (resp(200, "ok", "text/plain"), False, None),
    (resp(200, '{"ok":true,"ts":"1.2"}'), True, None),
    (resp(400, "invalid_payload", "text/plain"), False, T.CONTENT_REJECTED),
    (resp(404, "channel_not_found", "text/plain"), False, T.INVALID_RECIPIENT),
    (resp(404, "no_service", "text/plain"), False, T.UNREGISTERED_TOKEN),
    (resp(403, "action_prohibited", "text/plain"), False, T.SENDER_CONFIG),
    (resp(410, "channel_is_archived", "text/plain"), False, T.UNREGISTERED_TOKEN),
    (resp(200, '{"ok":false,"error":"token_revoked"}'), True, T.AUTH_CREDENTIALS),
    (resp(200, '{"ok":false,"error":"brand_new_error"}'), True, T.CONTENT_REJECTED),
    (resp(403, "<html>denied</html>", "text/html"), False, T.AUTH_CREDENTIALS),
])
def test_classify_slack(answer: Response, bot: bool, cause: taxonomy.Cause | None) -> None:
    error = classify_slack(answer, bot=bot)
    assert (error.cause if error else None) is cause


def test_classify_discord_rate_limits() -> None:
    body = '{"message": "You are being rate limited.", "retry_after": 0.776, "global": false}'
    local = classify_discord(resp(429, body))
    assert local is not None and (local.retry_after, local.scope) == (0.776, "endpoint")
    shared = classify_discord(resp(429, body.replace("false", "true"), **{"Retry-After": "3"}))
    assert shared is not None and (shared.retry_after, shared.scope) == (3.0, "provider")
    banned = classify_discord(resp(429, "error code: 1015", "text/plain"))
    assert banned is not None and banned.cause is T.RATE_LIMITED
    assert classify_discord(resp(204)) is None


@pytest.mark.parametrize(("answer", "cause", "status"), [
    (resp(200, "1", "text/plain"), None, None),
    (resp(202), None, None),
    (resp(200, "Webhook message delivery failed with error: Microsoft Teams endpoint returned "
               "HTTP error 429 with ContextId tcid=0..", "text/plain"), T.RATE_LIMITED, 429),
    (resp(200, "Webhook message delivery failed with error: Microsoft Teams endpoint returned "
               "HTTP error 413 with ContextId tcid=0..", "text/plain"), T.CONTENT_REJECTED, 413),
    (resp(400, "Summary or Text is required.", "text/plain"), T.CONTENT_REJECTED, 400),
    (resp(404, '{"error":{"code":"WorkflowNotFound","message":"x"}}'),
     T.UNREGISTERED_TOKEN, 404),
    (resp(403, '{"error":{"code":"WorkflowDisabled","message":"x"}}'), T.SENDER_CONFIG, 403),
])
def test_classify_teams(answer: Response, cause: taxonomy.Cause | None,
                        status: int | None) -> None:
    error = classify_teams(answer)
    assert (error.cause if error else None) is cause
    if error is not None:
        assert error.status == status


@pytest.mark.parametrize(("cls", "options", "where"), [
    (SlackProvider, {"tokn": "x"}, "tokn"),
    (SlackProvider, {"token": "env:SLACK_UNSET_FOR_TEST"}, "token"),
    (SlackProvider, {"api_url": "slack.com/api"}, "api_url"),
    (DiscordProvider, {"token": "x"}, "token"),
    (TelegramProvider, {"base_url": "ftp://x"}, "base_url"),
    (TeamsProvider, {"format": "xml"}, "format"),
])
def test_check_options(cls: type[ChatProvider], options: dict[str, Any], where: str) -> None:
    config = ProviderConfig("c", cls.meta.type, options)
    (problem,) = cls.check_options(config, location="providers.c")
    assert problem.location == f"providers.c.{where}"


def test_check_options_accepts() -> None:
    for cls, options in ((SlackProvider, {"token": "xoxb-1", "api_url": "https://slack.com/api"}),
                         (TeamsProvider, {"format": "adaptive"}), (DiscordProvider, {})):
        assert cls.check_options(ProviderConfig("c", cls.meta.type, options),
                                 location="providers.c") == []
    with pytest.raises(ConfigError):
        make(KINDS["teams"], "http://x", format="xml")


@pytest.mark.parametrize(("kind", "to"), [
    ("slack", "tgram://1:a/2"), ("discord", "slack://T/B/X"), ("teams", "msteams://a/b/c"),
    ("telegram", "https://hooks.slack.com/services/T/B/X")])
async def test_another_services_address_fails_over(kind: str, to: str) -> None:
    provider = make(KINDS[kind], "http://127.0.0.1")
    with pytest.raises(DeliveryError) as info:
        await provider.send(delivery(to))
    await provider.close()
    assert info.value.cause is T.SENDER_CONFIG and info.value.cause.provider_scoped
    assert info.value.provider_code == "UNSUPPORTED_ADDRESS"
    assert provider.breaker_key(delivery(to)) != provider.name
