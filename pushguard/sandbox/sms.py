"""SMS fakes: Twilio's Messages API and a generic JSON HTTP gateway.

Twilio answers with its JSON error document (``code``, ``message``, ``more_info``,
``status``). Like the real service it learns about an unknown handset only after accepting
the message, so with a ``StatusCallback`` a dead number is accepted (201) and then reported
``undelivered`` with error 30005; without one the fake rejects it up front (21211) so that
the failure is still observable.

Each Twilio record keeps the form fields (``meta["form"]``) and the idempotency token the
client sent (``meta["idempotency_token"]``). A ``To`` containing ``garbled`` is accepted with a
truncated JSON body, for clients that must cope with an answer they cannot parse.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
from email.utils import formatdate
from typing import Any

from aiohttp import web

from pushguard.sandbox.faulting import STATE, HttpState, json_response, note, respond
from pushguard.sandbox.profile import Fault

#: pause between the status callbacks of one message
CALLBACK_DELAY_S = 0.05

# status -> (HTTP status, Twilio code, message)
_TWILIO_ERRORS: dict[int, tuple[int, int, str]] = {
    400: (400, 21602, "Message body is required."),
    401: (401, 20003, "Authenticate"),
    403: (403, 21408, "Permission to send an SMS has not been enabled for the region."),
    404: (404, 20404, "The requested resource was not found"),
    413: (400, 21617, "The concatenated message body exceeds the 1600 character limit."),
    429: (429, 20429, "Too Many Requests"),
    500: (500, 20500, "An internal server error has occurred"),
    502: (502, 20500, "An internal server error has occurred"),
    503: (503, 20503, "Service unavailable"),
}

_GATEWAY_ERRORS: dict[int, str] = {
    400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
    410: "NUMBER_INACTIVE", 413: "MESSAGE_TOO_LONG", 429: "RATE_LIMITED",
    500: "INTERNAL", 502: "BAD_GATEWAY", 503: "UNAVAILABLE",
}  # fmt: skip


def twilio_error(status: int, code: int, message: str) -> web.Response:
    """A Twilio REST error response."""
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return json_response(status, json.dumps(body).encode())


def twilio_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """``X-Twilio-Signature``: HMAC-SHA1 over the URL and the sorted POST parameters."""
    payload = url + "".join(k + params[k] for k in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def add_routes(app: web.Application) -> None:
    """Register the Twilio and generic gateway routes."""
    app.router.add_post("/twilio/2010-04-01/Accounts/{sid}/Messages.json", _twilio)
    app.router.add_get("/twilio/2010-04-01/Accounts/{sid}/Messages.json", _twilio_list)
    app.router.add_post("/sms/{gateway}/send", _gateway)


def basic_credentials(header: str) -> tuple[str, str] | None:
    """``(user, password)`` from an HTTP Basic ``Authorization`` header, if well formed."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except ValueError:  # bad base64 and bad UTF-8 alike
        return None
    return (user, password) if sep else None


def _twilio_password(request: web.Request, state: HttpState, sid: str) -> str | None:
    creds = basic_credentials(request.headers.get("Authorization", ""))
    if creds is None:
        return None
    user, password = creds
    # An API key (SK...) may stand in for the account SID, as with the real API.
    if user != sid and not user.startswith("SK"):
        return None
    if not password or state.twilio_auth_token not in (None, password):
        return None
    return password


async def _twilio_list(request: web.Request) -> web.Response:
    """The first page of the account's messages (empty): what a credentials check reads."""
    sid = request.match_info["sid"]
    if _twilio_password(request, request.app[STATE], sid) is None:
        resp = twilio_error(401, 20003, "Authenticate")
        resp.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        return resp
    body = {"messages": [], "page": 0, "page_size": 1, "first_page_uri":
            f"/2010-04-01/Accounts/{sid}/Messages.json?PageSize=1&Page=0"}
    return json_response(200, json.dumps(body).encode())


async def _twilio(request: web.Request) -> web.Response:
    state = request.app[STATE]
    sid = request.match_info["sid"]
    raw = await request.read()
    form = {k: str(v) for k, v in (await request.post()).items()}
    to = form.get("To", "")
    password = _twilio_password(request, state, sid)
    if password is None:
        note(request, "twilio", to, raw, "401", {"error": "authenticate"})
        resp = twilio_error(401, 20003, "Authenticate")
        resp.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        return resp
    problem = None
    if not to:
        problem = (21604, "A 'To' phone number is required.")
    elif not (form.get("From") or form.get("MessagingServiceSid")):
        problem = (21603, "A 'From' phone number is required.")
    elif not (form.get("Body") or form.get("MediaUrl")):
        problem = (21602, "Message body is required.")
    if problem is not None:
        note(request, "twilio", to, raw, "400", {"error": problem[1]})
        return twilio_error(400, *problem)
    callback = form.get("StatusCallback")
    meta = {
        "form": form,
        "idempotency_token": request.headers.get("I-Twilio-Idempotency-Token"),
    }

    def render(fault: Fault) -> web.Response:
        if fault.kind == "ok" and "garbled" in to:
            return json_response(201, b'{"sid": "SM' + secrets.token_hex(4).encode())
        if fault.reason == "invalid" or (fault.reason == "gone" and not callback):
            return twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if fault.kind != "ok" and fault.reason != "gone":
            http, code, text = _TWILIO_ERRORS.get(
                fault.status, (fault.status, 20500, "An internal server error has occurred")
            )
            return twilio_error(http, code, text)
        msg = _twilio_message(sid, form)
        if callback:
            final = ("undelivered", "30005") if fault.reason == "gone" else ("delivered", "")
            token = state.twilio_auth_token or password
            state.spawn(_status_callbacks(state, callback, token, msg, final))
        return json_response(201, json.dumps(msg).encode())

    return await respond(request, "twilio", to, raw, render, meta=meta)


def _twilio_message(account_sid: str, form: dict[str, str]) -> dict[str, Any]:
    sid = "SM" + secrets.token_hex(16)
    service = form.get("MessagingServiceSid")
    return {
        "sid": sid,
        "account_sid": account_sid,
        "messaging_service_sid": service,
        "to": form["To"],
        "from": form.get("From"),
        "body": form.get("Body", ""),
        "status": "accepted" if service else "queued",
        "num_segments": "1",
        "direction": "outbound-api",
        "api_version": "2010-04-01",
        "date_created": formatdate(usegmt=True),
        "error_code": None,
        "error_message": None,
        "price": None,
        "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
    }


async def _status_callbacks(
    state: HttpState, url: str, token: str, msg: dict[str, Any], final: tuple[str, str]
) -> None:
    # Twilio sends no callback for the initial status, only for the ones after it.
    for status, error_code in (("sent", ""), final):
        await asyncio.sleep(CALLBACK_DELAY_S)
        params = {
            "MessageSid": msg["sid"],
            "SmsSid": msg["sid"],
            "AccountSid": msg["account_sid"],
            "To": msg["to"],
            "From": msg["from"] or "",
            "MessageStatus": status,
            "SmsStatus": status,
            "ApiVersion": "2010-04-01",
        }
        if error_code:
            params["ErrorCode"] = error_code
        headers = {"X-Twilio-Signature": twilio_signature(token, url, params)}
        try:
            async with state.client().post(url, data=params, headers=headers) as resp:
                await resp.read()
        except (TimeoutError, OSError, ValueError):
            return  # the real Twilio gives up on unreachable callbacks too


async def _gateway(request: web.Request) -> web.Response:
    raw = await request.read()
    try:
        data = json.loads(raw)
        to, text = data["to"], data["text"]
        if not isinstance(to, str) or not isinstance(text, str) or not to:
            raise TypeError
    except (ValueError, KeyError, TypeError):
        note(request, "sms", "", raw, "400", {"error": "bad request"})
        return _gateway_error(400, "BAD_REQUEST", "JSON body with 'to' and 'text' required")

    def render(fault: Fault) -> web.Response:
        if fault.kind == "ok":
            return json_response(200, json.dumps({"id": "msg_" + secrets.token_hex(8)}).encode())
        if fault.reason == "invalid":
            return _gateway_error(400, "INVALID_NUMBER", f"{to} is not a valid number")
        code = _GATEWAY_ERRORS.get(fault.status, "ERROR")
        return _gateway_error(fault.status, code, f"gateway error {fault.status}")

    return await respond(request, "sms", to, raw, render)


def _gateway_error(status: int, code: str, message: str) -> web.Response:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return json_response(status, body)
