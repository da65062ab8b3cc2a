"""Telegram via the Bot API's ``sendMessage``.

``to`` is apprise's spelling ``tgram://BOT_TOKEN/CHAT_ID`` (the token may be left out when the
provider has one: ``tgram://CHAT_ID``), or a bare chat id / ``@channelname``. Options:
``token`` (the bot token; secret, ``env:`` allowed) and ``base_url`` (default
``https://api.telegram.org``; tests point it at the sandbox).

Every answer is ``{"ok": bool, "error_code"?, "description"?, "parameters"?}``; the
description is the only place Telegram says *why*, so the classifier reads it first.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar

from pushguard import taxonomy
from pushguard.config import resolve
from pushguard.exceptions import ConfigError, DeliveryError
from pushguard.providers.base import Delivery, ProviderContext, ProviderMeta, Receipt
from pushguard.providers.chat import CHAT, ChatProvider
from pushguard.providers.chat_errors import by_status, failure, json_body
from pushguard.providers.httpclient import Response

if TYPE_CHECKING:
    from pushguard.config import ProviderConfig

T = taxonomy
_TOKEN = re.compile(r"\d+:[A-Za-z0-9_\-]+\Z")
_CHAT = re.compile(r"(-?\d+|@[A-Za-z][A-Za-z0-9_]{3,})\Z")

#: (substring of the description, cause, suppress); first match wins. Descriptions from the
#: Bot API's answers as applications log them.
PHRASES: tuple[tuple[str, taxonomy.Cause, bool | None], ...] = (
    ("bot was blocked by the user", T.NO_CONSENT, None),
    ("bot can't initiate conversation", T.NO_CONSENT, None),
    ("user is deactivated", T.UNREGISTERED_TOKEN, None),
    ("bot was kicked", T.UNREGISTERED_TOKEN, None),
    ("bot is not a member", T.UNREGISTERED_TOKEN, None),
    # Also what every chat answers when the bot token belongs to another bot: never suppress.
    ("chat not found", T.INVALID_RECIPIENT, False),
    ("group chat was upgraded", T.INVALID_RECIPIENT, None),
    ("bot can't send messages to bots", T.INVALID_RECIPIENT, None),
    ("peer_id_invalid", T.INVALID_RECIPIENT, None),
    ("not enough rights", T.INVALID_RECIPIENT, False),
    ("have no rights to send", T.INVALID_RECIPIENT, False),
    ("chat_write_forbidden", T.INVALID_RECIPIENT, False),
    ("message is too long", T.CONTENT_REJECTED, None),
    ("can't parse entities", T.CONTENT_REJECTED, None),
    ("message text is empty", T.CONTENT_REJECTED, None),
    ("text must be non-empty", T.CONTENT_REJECTED, None),
)


def classify_telegram(resp: Response) -> DeliveryError | None:
    """None for ``{"ok": true}``, else what the Bot API's answer means."""
    data = json_body(resp)
    if 200 <= resp.status < 300 and data is not None and data.get("ok") is True:
        return None
    if data is None or "description" not in data:
        if 200 <= resp.status < 300:
            return failure(resp, T.UNKNOWN, "Telegram answered 2xx without ok=true",
                           f"HTTP {resp.status}")
        # Bot API errors are always JSON: anything else came from something in front of it,
        # so it says nothing about the chat. A plain 404 means base_url is wrong.
        if resp.status in (404, 410):
            return failure(resp, T.SENDER_CONFIG, f"{resp.status} from {resp.content_type or 'a'} "
                           "page, not the Bot API: check base_url", f"HTTP {resp.status}")
        return by_status(resp, "Telegram", scope="provider")
    description = str(data.get("description", ""))
    error_code = data.get("error_code")
    status = error_code if isinstance(error_code, int) else resp.status
    code = f"{status} {description}"[:120]
    params: Any = data.get("parameters") or {}
    lowered = description.lower()
    for needle, cause, suppress in PHRASES:
        if needle in lowered:
            extra = {}
            if isinstance(params, dict) and "migrate_to_chat_id" in params:
                extra["migrate_to_chat_id"] = params["migrate_to_chat_id"]
            return failure(resp, cause, f"Telegram: {description}", code, status=status,
                           suppress=suppress, extra=extra)
    if status == 429:
        retry = params.get("retry_after") if isinstance(params, dict) else None
        # One bot token shares its limits across chats (about 30 messages/s in all), and
        # Telegram lengthens the wait for bots that keep sending: slow the whole bot down.
        return failure(resp, T.RATE_LIMITED, f"Telegram: {description}", code, status=status,
                       scope="provider",
                       retry_after=float(retry) if isinstance(retry, int | float) else None)
    if status in (401, 404):
        # Telegram answers 404 Not Found for a token it does not know, 401 for a revoked one.
        return failure(resp, T.AUTH_CREDENTIALS, f"Telegram refused the bot token ({status})",
                       code, status=status)
    if status >= 500 or status == 413:
        return by_status(resp, "Telegram", status=status)
    return failure(resp, T.UNKNOWN, f"Telegram: {description}", code, status=status)


class TelegramProvider(ChatProvider):
    """Telegram bots: ``sendMessage`` to one chat per message."""

    meta = ProviderMeta(type="telegram", channels=CHAT, secret_options=frozenset({"token"}),
                        description="Telegram Bot API sendMessage")
    max_text: ClassVar[int] = 4096
    title_format: ClassVar[str] = "{title}\n\n{text}"
    known_options: ClassVar[frozenset[str]] = frozenset({"token", "base_url"})
    url_options: ClassVar[frozenset[str]] = frozenset({"base_url"})
    schemes: ClassVar[tuple[str, ...]] = ("tgram://",)

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        loc = f"providers.{config.name}"
        token = resolve(config.options.get("token"), location=f"{loc}.token")
        if token is not None and not _TOKEN.match(str(token)):
            raise ConfigError("'token' is not a bot token (digits:letters, from @BotFather)",
                              location=f"{loc}.token")
        self.token = str(token) if token else None
        self.base_url = str(config.options.get("base_url", "https://api.telegram.org"))

    @classmethod
    def check_options(cls, config: ProviderConfig, *, location: str) -> list[ConfigError]:
        problems = super().check_options(config, location=location)
        if problems:
            return problems
        token = resolve(config.options.get("token"), location=f"{location}.token")
        if token is not None and not _TOKEN.match(str(token)):
            return [ConfigError("'token' is not a bot token (digits:letters, from @BotFather)",
                                location=f"{location}.token")]
        return []

    def target(self, delivery: Delivery) -> tuple[str, str]:
        """(bot token, chat id) for this address; the token never appears in errors."""
        self.check_address(delivery)
        to = delivery.to
        parts = [p for p in to[len("tgram://"):].split("?")[0].split("/") if p] if to.startswith(
            "tgram://") else [to]
        token = parts[0] if parts and _TOKEN.match(parts[0]) else None
        chats = parts[1:] if token else parts
        if len(chats) != 1 or not _CHAT.match(chats[0]):
            raise DeliveryError(T.INVALID_RECIPIENT, "expected tgram://BOT_TOKEN/CHAT_ID with "
                                "one chat id (digits, or @channelname)",
                                provider_code="BAD_ADDRESS")
        token = token or self.token
        if token is None:
            raise DeliveryError(T.SENDER_CONFIG, "no bot token: set 'token' for this provider "
                                "or put it in the address", provider_code="NO_TOKEN")
        return token, chats[0]

    def breaker_key(self, delivery: Delivery) -> str:
        # One breaker per bot: its token is the credential and its limits are shared. The
        # bot id (before the colon) is public; the secret half never leaves this module.
        try:
            return f"{self.name}:bot{self.target(delivery)[0].split(':')[0]}"
        except DeliveryError as exc:  # send() reports it; routing must not crash on it
            return self.name if exc.provider_code == "NO_TOKEN" else f"{self.name}:other"

    async def send(self, delivery: Delivery) -> Receipt:
        token, chat = self.target(delivery)
        payload = {"chat_id": chat, "text": self.compose(delivery.content)}
        resp = await self.post_json(f"{self.base_url.rstrip('/')}/bot{token}/sendMessage",
                                    payload)
        error = classify_telegram(resp)
        if error is not None:
            raise error
        result = (json_body(resp) or {}).get("result")
        message_id = result.get("message_id") if isinstance(result, dict) else None
        return Receipt(status=resp.status, detail=f"HTTP {resp.status}",
                       provider_message_id=None if message_id is None else str(message_id))
