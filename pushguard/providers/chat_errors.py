"""What Slack and Discord answers mean, as taxonomy causes, and the helpers every chat
classifier shares (:func:`failure`, :func:`by_status`, :func:`json_body`).

Each service's own error code wins over the HTTP status (Slack's Web API even reports errors
with a 200); the status class decides only when the code is unknown, and an unknown answer
that is neither is ``UNKNOWN`` with the raw body kept.
"""

from __future__ import annotations

import json
from typing import Any

from pushguard import taxonomy
from pushguard.exceptions import DeliveryError
from pushguard.providers.httpclient import Response, parse_retry_after

T = taxonomy
_C = tuple[taxonomy.Cause, str]

# https://api.slack.com/messaging/webhooks#handling_errors and the chat.postMessage errors.
SLACK: dict[str, _C] = {
    "invalid_payload": (T.CONTENT_REJECTED, "Slack could not parse the message"),
    "no_text": (T.CONTENT_REJECTED, "the message has no text"),
    "missing_text_or_fallback_or_attachments": (T.CONTENT_REJECTED, "the message is empty"),
    "too_many_attachments": (T.CONTENT_REJECTED, "too many attachments"),
    "invalid_blocks": (T.CONTENT_REJECTED, "the blocks are invalid"),
    "invalid_blocks_format": (T.CONTENT_REJECTED, "the blocks are malformed"),
    "msg_too_long": (T.CONTENT_REJECTED, "the text is too long"),
    "invalid_attachments": (T.CONTENT_REJECTED, "the attachments are invalid"),
    "user_not_found": (T.INVALID_RECIPIENT, "the user does not exist"),
    "channel_not_found": (T.INVALID_RECIPIENT, "the channel does not exist"),
    "no_service_id": (T.INVALID_RECIPIENT, "the webhook URL is malformed"),
    "no_team": (T.INVALID_RECIPIENT, "the webhook URL names no workspace"),
    "channel_is_archived": (T.UNREGISTERED_TOKEN, "the channel is archived"),
    "is_archived": (T.UNREGISTERED_TOKEN, "the channel is archived"),
    "no_service": (T.UNREGISTERED_TOKEN, "the webhook was disabled or removed"),
    "invalid_token": (T.UNREGISTERED_TOKEN, "the webhook's token was revoked"),
    "team_disabled": (T.UNREGISTERED_TOKEN, "the workspace is disabled"),
    "action_prohibited": (T.SENDER_CONFIG, "an admin restricted posting to this channel"),
    "posting_to_general_channel_denied": (T.SENDER_CONFIG, "posting to #general is denied"),
    "restricted_action": (T.SENDER_CONFIG, "a workspace setting prevents posting"),
    "missing_scope": (T.SENDER_CONFIG, "the bot token lacks the chat:write scope"),
    "invalid_auth": (T.AUTH_CREDENTIALS, "the bot token is invalid"),
    "not_authed": (T.AUTH_CREDENTIALS, "no bot token was sent"),
    "token_revoked": (T.AUTH_CREDENTIALS, "the bot token was revoked"),
    "token_expired": (T.AUTH_CREDENTIALS, "the bot token expired"),
    "account_inactive": (T.AUTH_CREDENTIALS, "the bot's account is inactive"),
    "ratelimited": (T.RATE_LIMITED, "Slack is rate-limiting this channel"),
    "rate_limited": (T.RATE_LIMITED, "Slack is rate-limiting this channel"),
    "internal_error": (T.PROVIDER_OUTAGE, "Slack internal error"),
    "fatal_error": (T.PROVIDER_OUTAGE, "Slack internal error"),
    "service_unavailable": (T.PROVIDER_OUTAGE, "Slack is unavailable"),
    "request_timeout": (T.PROVIDER_OUTAGE, "Slack timed out"),
}
#: Slack problems that belong to one channel, not the bot: fail without suppressing.
_SLACK_KEEP = frozenset({"not_in_channel"})

# https://discord.com/developers/docs/topics/opcodes-and-status-codes#json
DISCORD: dict[int, _C] = {
    10015: (T.UNREGISTERED_TOKEN, "the webhook was deleted"),
    10003: (T.INVALID_RECIPIENT, "the channel does not exist"),
    50027: (T.INVALID_RECIPIENT, "the webhook token in the URL is wrong"),
    50013: (T.SENDER_CONFIG, "the webhook lacks permission in this channel"),
    50001: (T.SENDER_CONFIG, "the webhook has no access to this channel"),
    50006: (T.CONTENT_REJECTED, "the message is empty"),
    50035: (T.CONTENT_REJECTED, "Discord refused a field of the message"),
    50109: (T.CONTENT_REJECTED, "the body is not valid JSON"),
    40005: (T.CONTENT_REJECTED, "the message is too large"),
}

def json_body(resp: Response) -> dict[str, Any] | None:
    """The body as a JSON object, or None (HTML pages, garbage, arrays)."""
    try:
        data = json.loads(resp.body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def failure(
    resp: Response, cause: taxonomy.Cause, detail: str, code: str, *, status: int | None = None,
    scope: str | None = "endpoint", retry_after: float | None = None, **kw: Any,
) -> DeliveryError:
    """A ``DeliveryError`` carrying the answer's status, raw body and retry hint."""
    status = resp.status if status is None else status
    if retry_after is None:
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
    return DeliveryError(
        cause, detail, provider_code=code, status=status, raw=resp.text,
        retry_after=retry_after if cause in (T.RATE_LIMITED, T.PROVIDER_OUTAGE) else None,
        scope=scope if cause is T.RATE_LIMITED else None, **kw,
    )


def by_status(resp: Response, service: str, *, status: int | None = None,
              scope: str | None = "endpoint") -> DeliveryError:
    """The fallback when the service's own code is unknown: the status class decides."""
    status = resp.status if status is None else status
    code = f"HTTP {status}"
    html = resp.content_type == "text/html"
    if status in (404, 410):
        # A bare 404 is also what a mistyped configured base URL answers for every address,
        # so only an explicit 410 (or the service's own code, handled before) suppresses.
        return failure(resp, T.UNREGISTERED_TOKEN, f"{service} says the webhook or chat is "
                       f"gone ({status})", code, status=status,
                       suppress=None if status == 410 else False)
    if status == 413:
        return failure(resp, T.CONTENT_REJECTED, f"{service}: message too large", code,
                       status=status)
    if status == 429:
        return failure(resp, T.RATE_LIMITED, f"{service} asked us to slow down", code,
                       status=status, scope=scope)
    if status >= 500:
        return failure(resp, T.PROVIDER_OUTAGE, f"{service} error {status}", code,
                       status=status, maybe_sent=status == 504)
    if status in (401, 403):
        return failure(resp, T.AUTH_CREDENTIALS, f"{service} refused our credentials "
                       f"({status})", code, status=status)
    if status == 400 and not html:
        return failure(resp, T.CONTENT_REJECTED, f"{service} rejected the message (400)", code,
                       status=status)
    # Redirects, odd 4xx and a proxy's HTML page: bounded retries, raw answer kept.
    return failure(resp, T.UNKNOWN, f"unexpected answer {status} from {service}", code,
                   status=status)


def classify_slack(resp: Response, *, bot: bool = False) -> DeliveryError | None:
    """Slack webhooks answer ``ok`` or a status with a text code; the Web API answers JSON
    ``{"ok": false, "error": code}``, usually with a 200."""
    data = json_body(resp) if resp.content_type == "application/json" else None
    ok = 200 <= resp.status < 300
    if ok and (data is None or data.get("ok") is not False):
        return None
    code = str(data.get("error", "")) if data else resp.text.strip()[:64]
    scope = "recipient" if bot else "endpoint"
    if code in _SLACK_KEEP:
        return failure(resp, T.INVALID_RECIPIENT, "the bot is not in this channel; invite it",
                       code, suppress=False)
    if code in SLACK:
        cause, detail = SLACK[code]
        return failure(resp, cause, f"Slack: {detail}", code, scope=scope)
    return by_status(resp, "Slack", status=400 if ok else None, scope=scope)


def classify_discord(resp: Response) -> DeliveryError | None:
    """Discord answers 204 (200 with ``?wait=true``) or JSON ``{"code", "message"}``; a 429
    carries ``retry_after`` (seconds) and ``global``."""
    if 200 <= resp.status < 300:
        return None
    data = json_body(resp) or {}
    if resp.status == 429:
        retry = parse_retry_after(resp.headers.get("Retry-After"))
        if retry is None and isinstance(data.get("retry_after"), int | float):
            retry = float(data["retry_after"])
        shared = data.get("global") is True or resp.headers.get("X-RateLimit-Scope") in (
            "global", "shared")
        return failure(resp, T.RATE_LIMITED, "Discord asked us to slow down"
                       + (" (global limit)" if shared else ""), "HTTP 429",
                       retry_after=retry, scope="provider" if shared else "endpoint")
    code = data.get("code")
    if isinstance(code, int) and code in DISCORD:
        cause, detail = DISCORD[code]
        return failure(resp, cause, f"Discord: {detail}", str(code))
    return by_status(resp, "Discord")
