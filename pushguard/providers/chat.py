"""Chat providers on the ``chat`` channel: the shared base, Slack and Discord (Teams, Telegram
and apprise live in :mod:`~pushguard.providers.teams`, :mod:`~pushguard.providers.telegram` and
:mod:`~pushguard.providers.apprise_provider`).

``content`` is ``{"text": str, "title"?: str}`` plus what a service passes through untouched:
``blocks`` (Slack Block Kit), ``embeds`` (Discord) or ``card`` (Teams: an Adaptive Card, or a
whole MessageCard for legacy connectors). Each type refuses, at intake, text longer than the
service shows.

Incoming-webhook URLs are their own credentials, so each webhook gets its own circuit breaker
(keyed by a digest, never the URL): one revoked or throttled webhook must not hold the others.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pushguard import taxonomy
from pushguard.config import resolve
from pushguard.exceptions import ConfigError, DeliveryError, InputError
from pushguard.providers.base import Delivery, Provider, ProviderContext, ProviderMeta, Receipt
from pushguard.providers.chat_errors import classify_discord, classify_slack, json_body
from pushguard.providers.httpclient import HttpClient, Response

if TYPE_CHECKING:
    from pushguard.config import ProviderConfig

CHAT = frozenset({"chat"})


def check_chat_content(
    content: Mapping[str, Any], *, limit: int, text: str, lists: Mapping[str, int] | None = None
) -> None:
    """Refuse content without text, with text over ``limit``, or with a malformed
    passthrough list (``lists`` maps a key to its longest allowed length)."""
    if not isinstance(content.get("text"), str) or not content["text"].strip():
        raise InputError("content.text", "is required for chat messages (a non-empty string)")
    if "title" in content and not isinstance(content["title"], str):
        raise InputError("content.title", "must be a string")
    if len(text) > limit:
        raise InputError(
            "content.text", f"is {len(text)} characters (with the title); the limit is {limit}"
        )
    for key, most in (lists or {}).items():
        value = content.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise InputError(f"content.{key}", "must be a list of objects")
        if len(value) > most:
            raise InputError(f"content.{key}", f"has {len(value)} items; the limit is {most}")


class ChatProvider(Provider):
    """A JSON-over-HTTPS chat service: one pooled client, per-type text limits."""

    #: the longest text the service shows, counted in characters.
    max_text: ClassVar[int] = 4000
    #: passthrough list keys and their largest sizes.
    lists: ClassVar[Mapping[str, int]] = {}
    #: how ``title`` is put in front of ``text`` (``{title}`` and ``{text}``).
    title_format: ClassVar[str] = "{title}\n{text}"
    #: option names this type reads; others are reported by ``check_options`` (typos).
    known_options: ClassVar[frozenset[str]] = frozenset()
    #: options whose values must be http(s) base URLs.
    url_options: ClassVar[frozenset[str]] = frozenset()
    #: address prefixes this type sends to.
    schemes: ClassVar[tuple[str, ...]] = ("https://", "http://")

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        self.client = HttpClient.for_provider(config, context)

    @classmethod
    def check_options(cls, config: ProviderConfig, *, location: str) -> list[ConfigError]:
        problems = [
            ConfigError(f"unknown option; {cls.meta.type} reads: "
                        f"{', '.join(sorted(cls.known_options)) or 'none'}",
                        location=f"{location}.{key}")
            for key in config.options if key not in cls.known_options
        ]
        for key in sorted(cls.meta.secret_options & set(config.options)):
            try:
                resolve(config.options[key], location=f"{location}.{key}")
            except ConfigError as exc:
                problems.append(exc)
        for key in sorted(cls.url_options & set(config.options)):
            if not str(config.options[key]).startswith(("https://", "http://")):
                problems.append(ConfigError("must be an http(s) URL",
                                            location=f"{location}.{key}"))
        return problems

    @classmethod
    def compose(cls, content: Mapping[str, Any]) -> str:
        """The text as the recipient sees it, title included."""
        text, title = str(content.get("text", "")), content.get("title")
        return cls.title_format.format(title=title, text=text) if title else text

    @classmethod
    def validate_content(cls, channel: str, content: Mapping[str, Any]) -> None:
        check_chat_content(content, limit=cls.max_text, text=cls.compose(content),
                           lists=cls.lists)

    def breaker_key(self, delivery: Delivery) -> str:
        digest = hashlib.sha256(delivery.to.encode()).hexdigest()[:16]
        return f"{self.name}:{digest}"

    def check_address(self, delivery: Delivery) -> None:
        """Refuse another service's address (say ``tgram://`` on Slack) as a routing problem:
        provider-scoped, so another provider of the channel (apprise) can take it."""
        to = delivery.to
        if "://" in to and not to.startswith(self.schemes):
            raise DeliveryError(
                taxonomy.SENDER_CONFIG,
                f"{self.meta.type} cannot send to {to.split('://')[0]}:// addresses; route them "
                "to a provider that can (apprise covers most services)",
                provider_code="UNSUPPORTED_ADDRESS",
            )

    async def start(self) -> None:
        await self.client.start()

    async def close(self) -> None:
        await self.client.close()

    async def post_json(
        self, url: str, payload: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> Response:
        """POST ``payload`` as JSON (transport failures arrive as ``DeliveryError``)."""
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        try:
            return await self.client.post(
                url, data=body, headers={"Content-Type": "application/json", **(headers or {})}
            )
        except DeliveryError as exc:
            # Webhook and bot URLs carry their secret in the path; keep it out of the record.
            path = url.split("/", 3)[3] if url.count("/") >= 3 else ""
            if path and path in exc.detail:
                exc.detail = exc.detail.replace(path, "***")
                exc.args = (f"{exc.cause.name}: {exc.detail}",)
            raise


def _passthrough(content: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: content[k] for k in keys if content.get(k) is not None}


def _webhook_url(delivery: Delivery, scheme: str, base: str) -> str:
    """An https incoming-webhook URL as given, or built from ``scheme://id/token``."""
    to = delivery.to
    if to.startswith(("https://", "http://")):
        return to
    # Query arguments of apprise's spelling are apprise options, not the service's.
    to = to.split("?")[0]
    parts = [p for p in to[len(scheme) + 3:].split("/") if p] if to.startswith(scheme) else []
    if len(parts) < 2:
        raise DeliveryError(taxonomy.INVALID_RECIPIENT,
                            f"expected an https:// webhook URL or {scheme}://ID/TOKEN",
                            provider_code="BAD_ADDRESS")
    return f"{base.rstrip('/')}/{'/'.join(parts)}"


class SlackProvider(ChatProvider):
    """Slack incoming webhooks (``to`` = the hook URL), or ``chat.postMessage`` with a bot
    token when ``to`` is ``slack://[xoxb-token/]channel``.

    Options: ``token`` (bot token; secret, ``env:`` allowed), ``api_url`` (default
    ``https://slack.com/api``), ``webhook_url`` base for ``slack://T/B/X`` hooks.
    """

    meta = ProviderMeta(type="slack", channels=CHAT, secret_options=frozenset({"token"}),
                        description="Slack incoming webhooks or chat.postMessage")
    lists: ClassVar[Mapping[str, int]] = {"blocks": 50}
    title_format: ClassVar[str] = "*{title}*\n{text}"
    known_options: ClassVar[frozenset[str]] = frozenset({"token", "api_url", "webhook_url"})
    url_options: ClassVar[frozenset[str]] = frozenset({"api_url", "webhook_url"})
    schemes: ClassVar[tuple[str, ...]] = ("https://", "http://", "slack://")

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        opts = config.options
        token = resolve(opts.get("token"), location=f"providers.{config.name}.token")
        self.token = str(token) if token else None
        self.api_url = str(opts.get("api_url", "https://slack.com/api")).rstrip("/")
        self.hook_base = str(opts.get("webhook_url", "https://hooks.slack.com/services"))

    def breaker_key(self, delivery: Delivery) -> str:
        # A bot token is one credential for every channel; a webhook is one per URL.
        try:
            if delivery.to.startswith("slack://") and self._bot_target(delivery) is not None:
                return self.name
        except DeliveryError:  # send() reports the bad address; routing must not crash on it
            pass
        return super().breaker_key(delivery)

    def _bot_target(self, delivery: Delivery) -> tuple[str, str] | None:
        """(token, channel) for a ``slack://`` bot address, None for a webhook address."""
        parts = [p for p in delivery.to[len("slack://"):].split("?")[0].split("/") if p]
        token = next((p for p in parts if p.startswith(("xoxb-", "xoxp-"))), None)
        rest = [p for p in parts if p != token]
        if token is None and len(rest) == 3:
            return None  # slack://T.../B.../X... is apprise's spelling of a webhook
        if not (token or self.token):
            raise DeliveryError(taxonomy.SENDER_CONFIG, "slack://CHANNEL addresses need a bot "
                                "token: set 'token' or write slack://xoxb-.../CHANNEL",
                                provider_code="NO_TOKEN")
        if len(rest) != 1:
            raise DeliveryError(taxonomy.INVALID_RECIPIENT,
                                "expected slack://[xoxb-token/]channel with one channel",
                                provider_code="BAD_ADDRESS")
        return str(token or self.token), rest[0]

    async def send(self, delivery: Delivery) -> Receipt:
        self.check_address(delivery)
        content = delivery.content
        payload = {"text": self.compose(content), **_passthrough(content, "blocks")}
        bot = self._bot_target(delivery) if delivery.to.startswith("slack://") else None
        if bot is not None:
            payload["channel"] = bot[1]
            resp = await self.post_json(f"{self.api_url}/chat.postMessage", payload,
                                        {"Authorization": f"Bearer {bot[0]}"})
        else:
            url = _webhook_url(delivery, "slack", self.hook_base)
            resp = await self.post_json(url, payload)
        error = classify_slack(resp, bot=bot is not None)
        if error is not None:
            raise error
        ts = (json_body(resp) or {}).get("ts")
        return Receipt(status=resp.status, provider_message_id=str(ts) if ts else None,
                       detail=f"HTTP {resp.status}")


class DiscordProvider(ChatProvider):
    """Discord webhooks: ``to`` is the webhook URL (or ``discord://ID/TOKEN``).

    Option ``api_url`` (default ``https://discord.com/api/webhooks``) is the base for
    ``discord://`` addresses.
    """

    meta = ProviderMeta(type="discord", channels=CHAT, description="Discord webhooks")
    max_text: ClassVar[int] = 2000
    lists: ClassVar[Mapping[str, int]] = {"embeds": 10}
    title_format: ClassVar[str] = "**{title}**\n{text}"
    known_options: ClassVar[frozenset[str]] = frozenset({"api_url"})
    url_options: ClassVar[frozenset[str]] = frozenset({"api_url"})
    schemes: ClassVar[tuple[str, ...]] = ("https://", "http://", "discord://")

    async def send(self, delivery: Delivery) -> Receipt:
        self.check_address(delivery)
        base = str(self.config.options.get("api_url", "https://discord.com/api/webhooks"))
        url = _webhook_url(delivery, "discord", base)
        payload = {"content": self.compose(delivery.content),
                   **_passthrough(delivery.content, "embeds")}
        resp = await self.post_json(url, payload)
        error = classify_discord(resp)
        if error is not None:
            raise error
        message_id = (json_body(resp) or {}).get("id")  # only with ?wait=true
        return Receipt(status=resp.status, provider_message_id=str(message_id) if message_id
                       else None,
                       detail=f"HTTP {resp.status}")
