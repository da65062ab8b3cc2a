"""Microsoft Teams: Workflows (Power Automate) webhooks with an Adaptive Card, or the legacy
Office 365 connector webhooks with a MessageCard.

Workflows answer 202, or ``{"error": {"code", "message"}}`` with a 4xx/5xx. Connectors answer
200 with body ``1``, and report what Teams said about the message *inside* a 200 ("Webhook
message delivery failed with error: Microsoft Teams endpoint returned HTTP error 429 ..."),
so the body is read even on success (MicrosoftDocs/msteams-docs issues #402, #1810, #7425).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pushguard import taxonomy
from pushguard.exceptions import ConfigError, DeliveryError, InputError
from pushguard.providers.base import Delivery, ProviderContext, ProviderMeta, Receipt
from pushguard.providers.chat import CHAT, ChatProvider, check_chat_content
from pushguard.providers.chat_errors import by_status, failure, json_body
from pushguard.providers.httpclient import Response

if TYPE_CHECKING:
    from pushguard.config import ProviderConfig

T = taxonomy
#: (substring of a Logic Apps / connector error, cause, detail), first match wins.
TEAMS: tuple[tuple[str, taxonomy.Cause, str], ...] = (
    ("notfound", T.UNREGISTERED_TOKEN, "the workflow or connector no longer exists"),
    ("disabled", T.SENDER_CONFIG, "the workflow is turned off"),
    ("notenabled", T.SENDER_CONFIG, "the workflow is turned off"),
    ("throttled", T.RATE_LIMITED, "the workflow is throttled"),
    ("summary or text is required", T.CONTENT_REJECTED, "the card has no text"),
    ("bad payload", T.CONTENT_REJECTED, "Teams could not read the card"),
    ("invalidrequestcontent", T.CONTENT_REJECTED, "Teams could not read the card"),
    ("triggerinputschemamismatch", T.CONTENT_REJECTED, "the card does not fit the workflow"),
)
_TEAMS_HTTP_ERROR = re.compile(r"returned HTTP error (\d{3})")
#: hosts of the legacy Office 365 connectors, which take MessageCards only.
_CONNECTOR_HOSTS = ("webhook.office.com", "outlook.office.com", "outlook.office365.com")
_FORMATS = ("auto", "adaptive", "messagecard")


def classify_teams(resp: Response) -> DeliveryError | None:
    """Workflows answer 202, legacy connectors 200 with body ``1``; connectors also report a
    throttled or failed delivery inside a 200 ("...returned HTTP error 429...")."""
    text = resp.text
    embedded = _TEAMS_HTTP_ERROR.search(text)
    if 200 <= resp.status < 300 and embedded is None:
        return None
    data = json_body(resp)
    error = data.get("error") if data else None
    code = str(error.get("code", "")) if isinstance(error, dict) else ""
    haystack = (code or text).lower()
    for needle, cause, detail in TEAMS:
        if needle in haystack:
            return failure(resp, cause, f"Teams: {detail}", code or f"HTTP {resp.status}")
    status = int(embedded.group(1)) if embedded else resp.status
    return by_status(resp, "Teams", status=status)


class TeamsProvider(ChatProvider):
    """Teams incoming webhooks; ``to`` is the workflow's or connector's https URL.

    Option ``format``: ``auto`` (default: MessageCard for connector hosts, else Adaptive
    Card), ``adaptive`` or ``messagecard``.
    """

    meta = ProviderMeta(type="teams", channels=CHAT,
                        description="Microsoft Teams workflow or connector webhooks")
    known_options: ClassVar[frozenset[str]] = frozenset({"format"})

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        self.format = str(config.options.get("format", "auto"))
        if self.format not in _FORMATS:
            raise ConfigError(f"'format' must be one of {', '.join(_FORMATS)}",
                              location=f"providers.{config.name}.format")

    @classmethod
    def check_options(cls, config: ProviderConfig, *, location: str) -> list[ConfigError]:
        problems = super().check_options(config, location=location)
        if str(config.options.get("format", "auto")) not in _FORMATS:
            problems.append(ConfigError(f"must be one of {', '.join(_FORMATS)}",
                                        location=f"{location}.format"))
        return problems

    @classmethod
    def validate_content(cls, channel: str, content: Mapping[str, Any]) -> None:
        check_chat_content(content, limit=cls.max_text, text=str(content.get("text", "")))
        if "card" in content and not isinstance(content["card"], dict):
            raise InputError("content.card", "must be an object (an Adaptive Card)")

    def render(self, delivery: Delivery) -> dict[str, Any]:
        """The JSON body for this webhook's kind."""
        content, fmt = delivery.content, self.format
        host = delivery.to.split("/")[2] if delivery.to.count("/") >= 2 else ""
        if fmt == "messagecard" or (fmt == "auto" and host.endswith(_CONNECTOR_HOSTS)):
            if isinstance(content.get("card"), dict):
                return dict(content["card"])
            text, title = str(content["text"]), content.get("title")
            card = {"@type": "MessageCard", "@context": "https://schema.org/extensions",
                    "summary": str(title or text[:80]), "text": text}
            return {**card, "title": title} if title else card
        body = [{"type": "TextBlock", "text": str(content["text"]), "wrap": True}]
        if content.get("title"):
            body.insert(0, {"type": "TextBlock", "text": str(content["title"]),
                            "weight": "Bolder", "size": "Medium", "wrap": True})
        card = content.get("card") or {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard", "version": "1.4", "body": body}
        return {"type": "message", "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}]}

    async def send(self, delivery: Delivery) -> Receipt:
        self.check_address(delivery)
        resp = await self.post_json(delivery.to, self.render(delivery))
        error = classify_teams(resp)
        if error is not None:
            raise error
        return Receipt(status=resp.status, detail=f"HTTP {resp.status}")
