"""A fake Web Push service (RFC 8030) with Mozilla autopush's JSON error shape.

It checks what a push service must check before the subscription matters: a VAPID
``Authorization`` header, the mandatory ``TTL`` header, and the 4096-byte body floor below
which RFC 8030 forbids a 413.
"""

from __future__ import annotations

import json
import secrets

from aiohttp import web

from pushguard.sandbox.faulting import json_response, note, respond
from pushguard.sandbox.profile import Fault

MAX_BODY = 4096
MORE_INFO = "https://mozilla-services.github.io/autopush-rs/errors.html"

# status -> (autopush errno, error phrase)
_ERRORS: dict[int, tuple[int, str]] = {
    400: (101, "Bad Request"),
    401: (109, "Unauthorized"),
    403: (109, "Forbidden"),
    404: (102, "Not Found"),
    410: (106, "Gone"),
    413: (104, "Payload Too Large"),
    429: (999, "Too Many Requests"),
    500: (999, "Internal Server Error"),
    502: (999, "Bad Gateway"),
    503: (201, "Service Unavailable"),
}


def error_response(status: int, message: str) -> web.Response:
    """An autopush-style error document."""
    errno, phrase = _ERRORS.get(status, (999, "Error"))
    body = {
        "code": status,
        "errno": errno,
        "error": phrase,
        "message": message,
        "more_info": MORE_INFO,
    }
    return json_response(status, json.dumps(body).encode())


def add_routes(app: web.Application) -> None:
    """Register the push-service route."""
    app.router.add_post("/webpush/{subscription}", _push)


async def _push(request: web.Request) -> web.Response:
    subscription = request.match_info["subscription"]
    raw = await request.read()
    auth = request.headers.get("Authorization", "")
    if not auth.lower().startswith(("vapid ", "webpush ")):
        note(request, "webpush", subscription, raw, "401", {"error": "missing vapid"})
        return error_response(401, "Missing or malformed VAPID Authorization header")
    ttl = request.headers.get("TTL", "")
    if not ttl.isdigit():
        note(request, "webpush", subscription, raw, "400", {"error": "missing TTL"})
        return error_response(400, "Missing TTL header")
    if len(raw) > MAX_BODY:
        note(request, "webpush", subscription, raw, "413", {"error": "too large"})
        return error_response(413, f"Body of {len(raw)} bytes exceeds {MAX_BODY}")

    def render(fault: Fault) -> web.Response:
        if fault.kind == "ok":
            resp = web.Response(status=201)
            resp.headers["Location"] = f"/webpush/messages/{secrets.token_hex(12)}"
            resp.headers["TTL"] = ttl
            return resp
        if fault.reason == "invalid":
            return error_response(404, "Request did not validate: invalid token")
        if fault.reason == "gone":
            return error_response(410, "Subscription has expired or was unsubscribed")
        return error_response(fault.status, f"push service error {fault.status}")

    return await respond(request, "webpush", subscription, raw, render)
