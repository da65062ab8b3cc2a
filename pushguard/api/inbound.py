"""Inbound messages from providers: SMS STOP/START keywords.

``POST /v1/inbound/twilio`` is the "A message comes in" webhook of a Twilio number. Twilio
signs it with the account's Auth Token over the URL it called, so configure the number with
``{PUSHGUARD_PUBLIC_URL}/v1/inbound/twilio``: the URL is rebuilt from that setting, never from
the Host header a proxy may rewrite. Nothing is read from the message until the signature
matches one of the configured ``twilio`` providers of that account.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from pushguard.addresses import normalize_address
from pushguard.api.body import CheckedRoute
from pushguard.api.public import read_form
from pushguard.audience.keywords import handle_sms
from pushguard.exceptions import AuthError, InputError
from pushguard.providers.base import ProviderContext
from pushguard.providers.twilio import TwilioProvider
from pushguard.receipts.twilio import SIGNATURE_HEADER, verify_signature

if TYPE_CHECKING:
    from pushguard.app import App

#: an empty answer: Twilio sends no reply of ours (its own opt-out handling may send one)
TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
PATH = "/v1/inbound/twilio"

log = structlog.get_logger("pushguard.inbound")


def inbound_router(app: App) -> APIRouter:
    router = APIRouter(route_class=CheckedRoute)
    tokens: dict[str, list[str]] = {}

    def tokens_for(account_sid: str) -> list[str]:
        if not tokens:  # built on first use; only Twilio's secrets need be present here
            ctx = ProviderContext(app.settings, app.guard)
            for pc in app.config.providers.values():
                if pc.type == "twilio":
                    p = TwilioProvider(pc, ctx)
                    tokens.setdefault(p.account_sid, []).extend(p.callback_tokens)
        found = tokens.get(account_sid)
        if not found:
            raise AuthError(f"{SIGNATURE_HEADER} does not match")  # no account oracle
        return found

    @router.post(PATH, tags=["inbound"], responses={
        200: {"description": "empty TwiML", "content": {"application/xml": {}}},
        401: {}, 422: {}})
    async def twilio_inbound(request: Request) -> Response:
        """An SMS to one of your Twilio numbers, verified with X-Twilio-Signature. STOP (and
        STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, OPTOUT, OPT-OUT, REMOVE, ARRET, TD) opts the
        number out of marketing; START (UNSTOP, YES) opts it back in; anything else is
        ignored. The same message delivered twice acts once."""
        form = await read_form(request)
        if form is None:
            raise InputError("body", "is not a form (application/x-www-form-urlencoded)")
        pairs = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
        fields = dict(pairs)
        url = app.settings.public_url.rstrip("/") + PATH
        if request.url.query:
            url += "?" + request.url.query
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not verify_signature(tokens_for(fields.get("AccountSid", "")), url, pairs,
                                signature):
            raise AuthError(f"{SIGNATURE_HEADER} does not match")
        sid = fields.get("MessageSid") or fields.get("SmsSid") or ""
        if not sid:
            raise InputError("MessageSid", "is required in an inbound message")
        phone = normalize_address("sms", fields.get("From", ""), guard=app.guard,
                                  field="From", resolve=False)
        got = await run_in_threadpool(handle_sms, app, phone, fields.get("Body", ""), sid)
        if got.action != "none":
            log.info("sms_keyword", action=got.action, keyword=got.keyword, message_sid=sid,
                     consents=got.consents, suppression_changed=got.suppression_changed)
        return Response(TWIML, media_type="application/xml")

    return router
