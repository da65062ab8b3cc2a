"""The HTTP side of the sandbox: one aiohttp application serving every HTTP fake.

Routes (all on one port):

- ``POST /hooks/{name}``: webhook receiver, Standard Webhooks signatures checked when a
  secret is configured (``"webhook"``)
- ``POST /fcm/v1/projects/{project}/messages:send`` and ``POST /fcm/token`` (``"fcm"``)
- ``POST /twilio/2010-04-01/Accounts/{sid}/Messages.json`` (``"twilio"``)
- ``POST /sms/{gateway}/send``: a generic JSON SMS gateway (``"sms"``)
- ``POST /webpush/{subscription}``: an RFC 8030 push service (``"webpush"``)
- ``POST /chat/slack/{hook}``, ``/chat/discord/{hook}``, ``/chat/telegram/bot{token}/sendMessage``,
  ``/chat/teams/{hook}``: chat services (``"chat"``, see :mod:`pushguard.sandbox.chat`)
- ``GET /_sandbox/stats``, ``GET /_sandbox/records?service=&limit=``,
  ``GET|POST /_sandbox/profile?service=``, ``POST /_sandbox/reset``: control and inspection
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from pushguard.sandbox import chat, fcm, sms, webpush
from pushguard.sandbox.faulting import STATE, HttpState, json_response, note, respond
from pushguard.sandbox.profile import Fault
from pushguard.sandbox.profiles import Profiles
from pushguard.sandbox.recorder import Recorder

_SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
_VERIFIER = web.AppKey("pushguard_sandbox_verifier", Webhook)

_OK = b'{"ok":true}'
_WEBHOOK_ERRORS = {
    410: b'{"error":"gone"}',
    404: b'{"error":"no such endpoint"}',
}


def create_app(
    profiles: Profiles | None = None,
    recorder: Recorder | None = None,
    *,
    secret: str | None = None,
    verify: bool = True,
    twilio_auth_token: str | None = None,
    keep_bodies: bool = True,
) -> web.Application:
    """Build the application; the caller runs it (see :class:`pushguard.sandbox.Sandbox`).

    ``secret`` is a Standard Webhooks ``whsec_...`` secret; without it, or with
    ``verify=False``, webhooks are accepted unsigned.
    """
    app = web.Application(client_max_size=4 * 1024 * 1024)
    state = HttpState(
        profiles=profiles or Profiles(),
        recorder=recorder or Recorder(),
        secret=secret,
        verify=verify,
        twilio_auth_token=twilio_auth_token,
        keep_bodies=keep_bodies,
    )
    app[STATE] = state
    if secret and verify:
        app[_VERIFIER] = Webhook(secret)
    app.router.add_post("/hooks/{name}", _webhook)
    fcm.add_routes(app)
    sms.add_routes(app)
    webpush.add_routes(app)
    chat.add_routes(app)
    app.router.add_get("/_sandbox/stats", _stats)
    app.router.add_get("/_sandbox/records", _records)
    app.router.add_get("/_sandbox/profile", _get_profile)
    app.router.add_post("/_sandbox/profile", _set_profile)
    app.router.add_post("/_sandbox/reset", _reset)
    app.on_shutdown.append(_on_shutdown)
    return app


async def _on_shutdown(app: web.Application) -> None:
    await app[STATE].close()


async def _webhook(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    raw = await request.read()
    verifier = request.app.get(_VERIFIER)
    if verifier is not None:
        headers = {h: request.headers[h] for h in _SIGNATURE_HEADERS if h in request.headers}
        try:
            verifier.verify(raw, headers, json_parse=False)
        except (WebhookVerificationError, ValueError) as exc:
            note(request, "webhook", name, raw, "401", {"error": str(exc)})
            return json_response(401, b'{"error":"bad signature"}')
    return await respond(request, "webhook", name, raw, _render_webhook)


def _render_webhook(fault: Fault) -> web.Response:
    if fault.kind == "ok":
        return json_response(200, _OK)
    status = 404 if fault.reason == "invalid" else fault.status
    body = _WEBHOOK_ERRORS.get(status)
    if body is None:
        body = json.dumps({"error": f"HTTP {status}", "fault": fault.reason}).encode()
    return json_response(status, body)


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].recorder.stats())


async def _records(request: web.Request) -> web.Response:
    service = request.query.get("service") or None
    try:
        limit = int(request.query.get("limit", "0")) or None
    except ValueError:
        return web.json_response({"error": "limit must be an integer"}, status=400)
    found = request.app[STATE].recorder.records(service, limit)
    return web.json_response([r.to_dict() for r in found], dumps=_dumps)


async def _get_profile(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].profiles.to_dict())


async def _set_profile(request: web.Request) -> web.Response:
    service = request.query.get("service") or None
    try:
        data: Any = await request.json()
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        profiles = request.app[STATE].profiles
        if service is None:
            profiles.replace(data)
        else:
            profiles.set(data, service)
    except (ValueError, TypeError, KeyError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(request.app[STATE].profiles.to_dict())


async def _reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.recorder.clear()
    if request.query.get("profiles") in ("1", "true", "yes"):
        state.profiles.restart()
    return web.json_response({"ok": True})


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)
