"""A fake of FCM HTTP v1 ``messages:send`` and of the OAuth2 token endpoint it relies on.

Errors use FCM's exact shape: a google.rpc status (``code``, ``message``, ``status``) whose
``details`` carry a ``google.firebase.fcm.v1.FcmError`` with the FCM ``errorCode``.

The token endpoint checks the claims of a JWT assertion it can decode (``iss``, the messaging
``scope``, ``aud``, at most an hour between ``iat`` and ``exp``) the way Google does, without
verifying the signature (it has no public key), and records each request as service
``"fcm-token"`` with the claims in ``meta``. ``POST /fcm/_sandbox/revoke`` revokes every access
token issued so far: sends that carry one get 401 ``UNAUTHENTICATED``, as when Google expires
or revokes a token early.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from pushguard.sandbox.faulting import STATE, json_response, note, respond
from pushguard.sandbox.profile import Fault

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"

INVALID_TOKEN_MESSAGE = "The registration token is not a valid FCM registration token"
MISSING_CREDENTIALS_MESSAGE = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, "
    "login cookie or other valid authentication credential."
)

# status -> (HTTP status, google.rpc status, FCM errorCode or None, message)
_ERRORS: dict[int, tuple[int, str, str | None, str]] = {
    400: (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: (
        401,
        "UNAUTHENTICATED",
        None,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential.",
    ),
    403: (403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", "SenderId mismatch"),
    404: (404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found."),
    413: (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "Message is too big"),
    429: (
        429,
        "RESOURCE_EXHAUSTED",
        "QUOTA_EXCEEDED",
        "Quota exceeded for quota metric 'Send requests'.",
    ),
    500: (500, "INTERNAL", "INTERNAL", "Internal error encountered."),
    502: (502, "UNAVAILABLE", "UNAVAILABLE", "Bad Gateway"),
    503: (503, "UNAVAILABLE", "UNAVAILABLE", "The service is currently unavailable."),
}

_INVALID: tuple[int, str, str | None, str] = (
    400,
    "INVALID_ARGUMENT",
    "INVALID_ARGUMENT",
    INVALID_TOKEN_MESSAGE,
)


def error_body(
    code: int, status: str, message: str, error_code: str | None = None, **extra: Any
) -> bytes:
    """An FCM error document; ``error_code`` adds the ``FcmError`` detail."""
    details: list[dict[str, Any]] = []
    if error_code is not None:
        details.append({"@type": FCM_ERROR_TYPE, "errorCode": error_code})
    if extra.get("field_violations"):
        details.append({"@type": BAD_REQUEST_TYPE, "fieldViolations": extra["field_violations"]})
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return json.dumps({"error": error}).encode()


@dataclass
class AccessTokens:
    """Access tokens this fake issued and revoked (per application, never global)."""

    issued: set[str] = field(default_factory=set)
    revoked: set[str] = field(default_factory=set)

    def revoke_all(self) -> int:
        """Revoke every token issued so far; returns how many were newly revoked."""
        count = len(self.issued)
        self.revoked |= self.issued
        self.issued.clear()
        return count


TOKENS = web.AppKey("pushguard_sandbox_fcm_tokens", AccessTokens)


def add_routes(app: web.Application) -> None:
    """Register the FCM routes on the sandbox application."""
    app[TOKENS] = AccessTokens()
    app.router.add_post("/fcm/v1/projects/{project}/messages:send", _send)
    app.router.add_post("/fcm/token", _token)
    app.router.add_post("/fcm/_sandbox/revoke", _revoke)


async def _revoke(request: web.Request) -> web.Response:
    return web.json_response({"revoked": request.app[TOKENS].revoke_all()})


async def _send(request: web.Request) -> web.Response:
    project = request.match_info["project"]
    raw = await request.read()
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer ") or not auth[7:].strip():
        note(request, "fcm", "", raw, "401", {"error": "missing credentials"})
        body = error_body(401, "UNAUTHENTICATED", MISSING_CREDENTIALS_MESSAGE)
        return json_response(401, body)
    if auth[7:].strip() in request.app[TOKENS].revoked:
        note(request, "fcm", "", raw, "401", {"error": "revoked token"})
        _, rpc_status, _, text = _ERRORS[401]
        return json_response(401, error_body(401, rpc_status, text))
    try:
        message = json.loads(raw)["message"]
        if not isinstance(message, dict):
            raise TypeError("message must be an object")
    except (ValueError, KeyError, TypeError):
        note(request, "fcm", "", raw, "400", {"error": "no message"})
        violation = {"field": "message", "description": "Invalid JSON payload received."}
        body = error_body(
            400,
            "INVALID_ARGUMENT",
            "Invalid JSON payload received.",
            field_violations=[violation],
        )
        return json_response(400, body)
    target = message.get("token") or message.get("topic") or message.get("condition")
    if not isinstance(target, str) or not target:
        note(request, "fcm", "", raw, "400", {"error": "no target"})
        body = error_body(
            400, "INVALID_ARGUMENT", "Recipient of the message is not set.", "INVALID_ARGUMENT"
        )
        return json_response(400, body)

    def render(fault: Fault) -> web.Response:
        if fault.kind == "ok":
            name = f"projects/{project}/messages/{secrets.token_hex(8)}"
            return json_response(200, json.dumps({"name": name}).encode())
        if fault.reason == "invalid":
            http, status, code, text = _INVALID
        elif fault.reason == "gone":
            http, status, code, text = _ERRORS[404]
        else:
            http, status, code, text = _ERRORS.get(
                fault.status, (fault.status, "UNKNOWN", "UNSPECIFIED_ERROR", "Unknown error.")
            )
        return json_response(http, error_body(http, status, text, code))

    return await respond(request, "fcm", target, raw, render)


async def _token(request: web.Request) -> web.Response:
    form = await request.post()
    if form.get("grant_type") != JWT_BEARER:
        body = {"error": "unsupported_grant_type", "error_description": "Invalid grant_type."}
        return web.json_response(body, status=400)
    assertion = form.get("assertion")
    if not isinstance(assertion, str) or assertion.count(".") != 2:
        body = {"error": "invalid_grant", "error_description": "Invalid JWT assertion."}
        return web.json_response(body, status=400)
    claims = _claims(assertion)
    problem = _claims_problem(claims) if claims is not None else None
    recorder = request.app[STATE].recorder
    meta = {"claims": claims or {}}
    if problem is not None:
        recorder.record("fcm-token", str((claims or {}).get("iss", "")), "400", meta=meta)
        return web.json_response({"error": problem[0], "error_description": problem[1]},
                                 status=400)
    recorder.record("fcm-token", str((claims or {}).get("iss", "")), "200", meta=meta)
    # No fault profile here: failing token fetches would blur every FCM scenario; a 401 on
    # send (the ``"401"`` rate, or a revoked token) is how the sandbox exercises refresh.
    token = f"ya29.sandbox.{secrets.token_urlsafe(24)}"
    request.app[TOKENS].issued.add(token)
    return web.json_response({"access_token": token, "expires_in": 3600, "token_type": "Bearer"})


def _claims(assertion: str) -> dict[str, Any] | None:
    """The payload of a JWT, unverified; None when it does not decode."""
    part = assertion.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, TypeError):
        return None
    return claims if isinstance(claims, dict) else None


def _claims_problem(claims: dict[str, Any]) -> tuple[str, str] | None:
    """Google's verdict on an assertion's claims, as (error, error_description)."""
    if not claims.get("iss") or not claims.get("aud"):
        return "invalid_grant", "Invalid JWT: iss and aud are required."
    if SCOPE not in str(claims.get("scope", "")).split():
        return "invalid_scope", "Invalid OAuth scope or ID token audience provided."
    iat, exp = claims.get("iat"), claims.get("exp")
    now = time.time()
    if not isinstance(iat, int | float) or not isinstance(exp, int | float) or (
        exp - iat > 3600 or exp < now or iat > now + 300
    ):
        return (
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
            "timeframe. Check your iat and exp values in the JWT claim.",
        )
    return None
