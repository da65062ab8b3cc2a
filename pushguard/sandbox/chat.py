"""Chat fakes: Slack (incoming webhooks and ``chat.postMessage``), Discord webhooks, the
Telegram Bot API's ``sendMessage`` and Microsoft Teams (workflow and connector webhooks).

Every route follows the ``"chat"`` fault profile; records carry ``meta["service"]``. Each fake
first refuses what the real service refuses for the message itself (no text, text over the
service's limit), then renders the profile's fault in that service's own words:

- Slack webhooks answer ``ok`` or a status with a text code (``invalid_payload``,
  ``channel_not_found``, ``no_service``, ``action_prohibited``...); the Web API answers JSON
  ``{"ok": false, "error": ...}`` with a 200 except for 429 and 5xx.
- Discord answers 204 (200 and the message with ``?wait=true``) or ``{"code", "message"}``;
  a 429 carries ``retry_after`` in seconds and ``global``.
- Telegram answers ``{"ok": false, "error_code", "description", "parameters"?}``.
- Teams workflows answer 202 or ``{"error": {"code", "message"}}``; legacy connectors (a
  MessageCard body) answer 200 ``1`` and, like the real ones, report 400, 413 and 429 *inside*
  a 200 ("Microsoft Teams endpoint returned HTTP error 429 ...").
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from pushguard.sandbox.faulting import json_response, note, respond
from pushguard.sandbox.profile import Fault

SERVICE = "chat"
_BOT = re.compile(r"bot\d+:[A-Za-z0-9_\-]+\Z")

# fault status -> (HTTP status, Slack webhook code); "invalid" and "gone" are keyed by reason.
_SLACK_HOOK = {
    400: (400, "invalid_payload"), 401: (403, "invalid_token"), 403: (403, "action_prohibited"),
    404: (404, "no_service"), 410: (410, "channel_is_archived"), 413: (413, "request_too_large"),
    429: (429, "rate_limited"), "invalid": (404, "channel_not_found"),
}  # fmt: skip
# fault status -> Slack Web API error code (sent with HTTP 200, as Slack does).
_SLACK_API = {
    400: "invalid_blocks", 401: "invalid_auth", 403: "not_in_channel", 404: "channel_not_found",
    410: "is_archived", 413: "msg_too_long", "invalid": "channel_not_found",
}  # fmt: skip
_DISCORD = {
    400: (400, 50035, "Invalid Form Body"), 401: (401, 50027, "Invalid Webhook Token"),
    403: (403, 50013, "Missing Permissions"), 404: (404, 10015, "Unknown Webhook"),
    410: (404, 10015, "Unknown Webhook"), 413: (413, 40005, "Request entity too large"),
    "invalid": (404, 10003, "Unknown Channel"),
}  # fmt: skip
_TELEGRAM = {
    400: (400, "Bad Request: can't parse entities: Can't find end of the entity starting at "
               "byte offset 0"),
    401: (401, "Unauthorized"), 403: (403, "Forbidden: bot was kicked from the group chat"),
    404: (404, "Not Found"), 410: (403, "Forbidden: bot was blocked by the user"),
    413: (413, "Request Entity Too Large"), "invalid": (400, "Bad Request: chat not found"),
}  # fmt: skip
_WORKFLOW = {
    400: "InvalidRequestContent", 401: "DirectApiAuthorizationRequired",
    403: "AuthorizationFailed", 404: "WorkflowNotFound", 410: "WorkflowNotFound",
    413: "RequestEntityTooLarge", 429: "WorkflowTriggerIsThrottled", "invalid": "WorkflowNotFound",
}  # fmt: skip


def add_routes(app: web.Application) -> None:
    """Register the chat routes (the Slack API route first: ``{hook}`` is one segment)."""
    app.router.add_post("/chat/slack/api/chat.postMessage", _slack_api)
    app.router.add_post("/chat/slack/{hook}", _slack_hook)
    app.router.add_post("/chat/discord/{hook}", _discord)
    app.router.add_post("/chat/telegram/{bot}/sendMessage", _telegram)
    app.router.add_post("/chat/teams/{hook}", _teams)


def _key(fault: Fault) -> int | str:
    return "invalid" if fault.reason == "invalid" else fault.status


def _json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain")


def _refuse(request: web.Request, address: str, raw: bytes, service: str,
            resp: web.Response) -> web.Response:
    note(request, SERVICE, address, raw, str(resp.status), {"service": service,
                                                            "error": "refused"})
    return resp


async def _serve(request: web.Request, address: str, raw: bytes, service: str,
                 render: Callable[[Fault], web.Response]) -> web.Response:
    return await respond(request, SERVICE, address, raw, render, meta={"service": service})


async def _slack_hook(request: web.Request) -> web.Response:
    hook, raw = request.match_info["hook"], await request.read()
    data = _json(raw)
    if not data:
        return _refuse(request, hook, raw, "slack", _text(400, "invalid_payload"))
    if not data.get("text") and not data.get("blocks"):
        return _refuse(request, hook, raw, "slack", _text(400, "no_text"))

    def render(fault: Fault) -> web.Response:
        if fault.kind == "ok":
            return _text(200, "ok")
        status, code = _SLACK_HOOK.get(_key(fault), (fault.status, "internal_error"))
        return _text(status, code)

    return await _serve(request, hook, raw, "slack", render)


async def _slack_api(request: web.Request) -> web.Response:
    raw = await request.read()
    data = _json(raw)
    channel = str(data.get("channel", ""))

    def fail(status: int, code: str) -> web.Response:
        return json_response(status, json.dumps({"ok": False, "error": code}).encode())

    if not request.headers.get("Authorization", "").startswith(("Bearer xoxb-", "Bearer xoxp-")):
        return _refuse(request, channel, raw, "slack-api", fail(200, "not_authed"))
    if not channel:
        return _refuse(request, channel, raw, "slack-api", fail(200, "channel_not_found"))
    if not data.get("text") and not data.get("blocks"):
        return _refuse(request, channel, raw, "slack-api", fail(200, "no_text"))

    def render(fault: Fault) -> web.Response:
        if fault.kind == "ok":
            ts = f"{time.time():.6f}"
            return web.json_response({"ok": True, "channel": channel, "ts": ts})
        if fault.status == 429:
            return fail(429, "ratelimited")
        if fault.status >= 500:
            return fail(fault.status, "fatal_error")
        return fail(200, _SLACK_API.get(_key(fault), "invalid_arguments"))

    return await _serve(request, channel, raw, "slack-api", render)


async def _discord(request: web.Request) -> web.Response:
    hook, raw = request.match_info["hook"], await request.read()
    data = _json(raw)

    def error(status: int, code: int, message: str, **extra: Any) -> web.Response:
        body = {"message": message, "code": code, **extra}
        return json_response(status, json.dumps(body).encode())

    content = data.get("content") or ""
    if not content and not data.get("embeds"):
        return _refuse(request, hook, raw, "discord",
                             error(400, 50006, "Cannot send an empty message"))
    if len(content) > 2000:
        errors = {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH",
                                           "message": "Must be 2000 or fewer in length."}]}}
        return _refuse(request, hook, raw, "discord",
                             error(400, 50035, "Invalid Form Body", errors=errors))
    wait = request.query.get("wait") == "true"

    def render(fault: Fault) -> web.Response:
        if fault.kind == "ok":
            if wait:
                return web.json_response({"id": str(secrets.randbits(62)), "content": content})
            return web.Response(status=204)
        if fault.status == 429:
            retry = fault.retry_after if fault.retry_after is not None else 1.0
            return error(429, 0, "You are being rate limited.", retry_after=retry,
                         **{"global": False})
        status, code, message = _DISCORD.get(
            _key(fault), (fault.status, 0, f"{fault.status}: Internal Server Error"))
        return error(status, code, message)

    return await _serve(request, hook, raw, "discord", render)


async def _telegram(request: web.Request) -> web.Response:
    bot, raw = request.match_info["bot"], await request.read()
    data = _json(raw)
    chat = str(data.get("chat_id", ""))
    text = data.get("text") or ""

    def error(code: int, description: str, **parameters: Any) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
        if parameters:
            body["parameters"] = parameters
        return json_response(code, json.dumps(body).encode())

    if not _BOT.match(bot):
        return _refuse(request, chat, raw, "telegram", error(404, "Not Found"))
    if not chat:
        return _refuse(request, chat, raw, "telegram",
                             error(400, "Bad Request: chat_id is empty"))
    if not text.strip():
        return _refuse(request, chat, raw, "telegram",
                             error(400, "Bad Request: message text is empty"))
    if len(text) > 4096:
        return _refuse(request, chat, raw, "telegram",
                             error(400, "Bad Request: message is too long"))

    def render(fault: Fault) -> web.Response:
        if fault.kind == "ok":
            message = {"message_id": secrets.randbelow(10**6), "chat": {"id": chat},
                       "date": int(time.time()), "text": text}
            return web.json_response({"ok": True, "result": message})
        if fault.status == 429:
            retry = fault.retry_after if fault.retry_after is not None else 1
            retry = int(retry) if float(retry).is_integer() else retry
            return error(429, f"Too Many Requests: retry after {retry}", retry_after=retry)
        status, description = _TELEGRAM.get(_key(fault), (fault.status, "Internal Server Error"))
        return error(status, description)

    return await _serve(request, chat, raw, "telegram", render)


async def _teams(request: web.Request) -> web.Response:
    hook, raw = request.match_info["hook"], await request.read()
    data = _json(raw)
    connector = data.get("@type") == "MessageCard"
    if connector and not (data.get("text") or data.get("summary")):
        return _refuse(request, hook, raw, "teams", _text(400, "Summary or Text is "
                                                                     "required."))
    if not connector and not (data.get("type") == "message" and data.get("attachments")):
        return _refuse(request, hook, raw, "teams",
                             _text(400, "Bad payload received by generic incoming webhook."))

    def render(fault: Fault) -> web.Response:
        if connector:
            if fault.kind == "ok":
                return _text(200, "1")
            status = 400 if fault.reason == "invalid" else fault.status
            message = (f"Webhook message delivery failed with error: Microsoft Teams endpoint "
                       f"returned HTTP error {status} with ContextId tcid=0,server=sandbox..")
            # Connectors wrap what Teams says about the message in a 200, as the real ones do.
            return _text(200 if status in (400, 413, 429) else status, message)
        if fault.kind == "ok":
            return web.Response(status=202)
        code = _WORKFLOW.get(_key(fault), "ServiceUnavailable")
        status = 404 if fault.reason in ("invalid", "gone") else fault.status
        body = {"error": {"code": code, "message": f"sandbox fault {fault.outcome}"}}
        return json_response(status, json.dumps(body).encode())

    return await _serve(request, hook, raw, "teams", render)
