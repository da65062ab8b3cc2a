"""Inbound delivery receipts: providers tell us, after accepting a message, what became of it.

These routes carry no API key (a provider cannot send one); the provider's own signature is the
authentication, checked before anything in the request is acted on. A receipt never changes a
message's terminal state: it is added to the history, and an address the provider reports as
invalid or opted out goes on the suppression list.
"""

from __future__ import annotations

import urllib.request
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import structlog
from fastapi import APIRouter, Request, Response
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.concurrency import run_in_threadpool

from pushguard import documents, taxonomy
from pushguard.api.auth import Auth
from pushguard.api.body import CheckedRoute
from pushguard.api.errors import AUTHED
from pushguard.exceptions import AuthError, InputError, NotFound
from pushguard.providers.base import ProviderContext
from pushguard.providers.http import HttpProvider
from pushguard.providers.twilio import TwilioProvider
from pushguard.receipts.dsn import parse as parse_dsn
from pushguard.receipts.dsn import record_bounces
from pushguard.receipts.ses import CertCache, confirmation_url, parse_ses, verify_sns
from pushguard.receipts.twilio import parse_status, verify_signature
from pushguard.taxonomy import Action

if TYPE_CHECKING:
    from pushguard.app import App


log = structlog.get_logger("pushguard.receipts")

#: receipt statuses that confirm a message reached the person (closes its confirm window)
CONFIRMED = frozenset({"delivered", "read"})


def receipts_router(app: App) -> APIRouter:
    router = APIRouter(route_class=CheckedRoute)
    twilio: dict[str, list[TwilioProvider]] = {}

    def twilio_for(account_sid: str) -> list[TwilioProvider]:
        if not twilio:  # built on first use, and only the Twilio ones: other providers'
            # secrets need not be present in the API process.
            ctx = ProviderContext(app.settings, app.guard)
            for pc in app.config.providers.values():
                if pc.type == "twilio":
                    p = TwilioProvider(pc, ctx)
                    if p.status_callback_url:
                        twilio.setdefault(p.account_sid, []).append(p)
        found = twilio.get(account_sid)
        if not found:
            raise AuthError("no twilio provider with status callbacks for this account")
        return found

    @router.post("/v1/receipts/twilio", status_code=204,
                 responses={401: {}, 404: {}, 422: {}})
    async def twilio_status(request: Request) -> Response:
        """Twilio status callbacks, verified with X-Twilio-Signature."""
        form = await request.form()
        pairs = [(k, str(v)) for k, v in form.multi_items()]
        signature = request.headers.get("X-Twilio-Signature", "")
        provider = None
        # Several providers may share one account (other senders, other callback URLs):
        # the one whose URL and token produce this signature sent the message.
        for candidate in twilio_for(str(form.get("AccountSid", ""))):
            # Twilio signs the URL it called: rebuild it from our configured callback URL,
            # not from the Host header, which a proxy may have rewritten.
            base = urlsplit(str(candidate.status_callback_url))
            url = urlunsplit((base.scheme, base.netloc, base.path, request.url.query, ""))
            if verify_signature(candidate.callback_tokens, url, pairs, signature):
                provider = candidate
                break
        if provider is None:
            raise AuthError("X-Twilio-Signature does not match")
        receipt = parse_status(dict(pairs))
        message_id = request.query_params.get("message_id")
        if not message_id:
            raise InputError("message_id", "is missing from the callback URL")
        note = f"receipt from {provider.name}: {receipt.status}"
        if receipt.error_code:
            note += f" (error {receipt.error_code}"
            note += f", {receipt.cause.name})" if receipt.cause else ")"
        cause = receipt.cause.name if receipt.cause else None
        found = await run_in_threadpool(
            partial(app.store.add_receipt, confirmed=receipt.status in CONFIRMED),
            message_id, receipt.provider_message_id, note,
            cause=cause,
            suppress=("sms", cause) if receipt.suppress and cause else None,
        )
        if not found:
            raise NotFound(f"no message {message_id!r} sent as {receipt.provider_message_id!r}")
        return Response(status_code=204)

    @router.post("/v1/receipts/dsn", responses=AUTHED)
    async def dsn(request: Request, _: Auth) -> dict[str, Any]:
        """An email bounce report (RFC 3464 DSN), as raw bytes, from your bounce mailbox.

        Needs an API key: unlike a provider callback, this comes from your own mail pipeline.
        Hard bounces for bad addresses put the address on the email suppression list."""
        bounces = parse_dsn(await request.body())
        return {"bounces": await run_in_threadpool(record_bounces, app.store, bounces)}

    gateways: dict[str, HttpProvider] = {}

    @router.post("/v1/receipts/http/{provider}", status_code=204,
                 responses={401: {}, 404: {}, 422: {}})
    async def http_receipt(provider: str, request: Request) -> Response:
        """Delivery receipts from a gateway behind an ``http`` provider, signed per Standard
        Webhooks with the provider's ``receipt_secret``. Body: ``{"message_id", "status":
        "delivered"|"failed"|..., "cause"?: a pushguard cause, "error_code"?, "detail"?}``."""
        gw = gateways.get(provider)
        if gw is None:
            pc = app.config.providers.get(provider)
            if pc is None or pc.type != "http":
                raise NotFound(f"no http provider {provider!r}")
            gw = gateways[provider] = HttpProvider(pc, ProviderContext(app.settings, app.guard))
        if not gw.receipt_secret:
            raise NotFound(f"provider {provider!r} has no receipt_secret")
        raw = await request.body()
        try:
            data = Webhook(gw.receipt_secret).verify(raw, dict(request.headers))
        except WebhookVerificationError as exc:
            raise AuthError(f"receipt signature rejected: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("message_id"), str):
            raise InputError("message_id", "is required (the pushguard message id)")
        status = str(data.get("status", "")).lower()
        if not status:
            raise InputError("status", "is required, e.g. delivered or failed")
        cause = taxonomy.get(str(data["cause"])) if data.get("cause") else None
        note = f"receipt from {provider}: {status}"
        for key in ("error_code", "detail"):
            if data.get(key):
                note += f" ({str(data[key])[:200]})"
        failed = status in ("failed", "undelivered", "bounced", "rejected")
        suppress = failed and cause is not None and (
            cause.action is Action.SUPPRESS or cause is taxonomy.NO_CONSENT)
        found = await run_in_threadpool(
            partial(app.store.add_receipt, confirmed=status in CONFIRMED),
            data["message_id"], provider, note,
            cause=cause.name if cause else None,
            suppress=("", cause.name) if suppress and cause else None, by_provider=True,
        )
        if not found:
            raise NotFound(f"no delivered message {data['message_id']!r} sent via {provider}")
        return Response(status_code=204)

    certs = CertCache(lambda url: _guarded_get(app, url))
    cert_hosts = _csv(app.settings.sns_cert_hosts)
    topics = _csv(app.settings.ses_topic_arns) or None

    @router.post("/v1/receipts/ses", responses={400: {}, 401: {}, 422: {}})
    async def ses(request: Request) -> dict[str, Any]:
        """Amazon SES bounce, complaint and delivery notifications, delivered by SNS.

        No API key: the SNS signature (certificate from an AWS host) is the authentication,
        and ``PUSHGUARD_SES_TOPIC_ARNS`` limits which topics are believed."""
        body = documents.parse(await request.body(), "body")  # SNS sends text/plain
        if not isinstance(body, dict):
            raise InputError("body", "must be a JSON object (an SNS message)")
        if topics is None:
            # A valid SNS signature only proves *some* AWS account sent it: without a topic
            # allow-list anyone could report bounces and complaints for our addresses.
            raise AuthError("PUSHGUARD_SES_TOPIC_ARNS is not set; SES notifications are refused")
        await run_in_threadpool(verify_sns, body, fetch_cert=certs, cert_hosts=cert_hosts,
                                topic_arns=topics)
        kind = body.get("Type")
        if kind == "SubscriptionConfirmation":
            url = confirmation_url(body, cert_hosts=cert_hosts)
            if url:
                await run_in_threadpool(_guarded_get, app, url)
            return {"confirmed": bool(url)}
        if kind == "UnsubscribeConfirmation":
            log.warning("ses_unsubscribed", topic=body.get("TopicArn"))
            return {"unsubscribed": True}
        found = await run_in_threadpool(record_bounces, app.store, parse_ses(body))
        for b in found:
            if not b["recorded"]:
                log.warning("ses_receipt_unmatched", message_id=b["message_id"],
                            recipient=b["recipient"])
        return {"bounces": found}

    return router


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _guarded_get(app: App, url: str) -> bytes:
    """A small GET through the SSRF guard: no redirects, 5 s, at most 64 KiB."""
    app.guard.check_url(url, field="url")
    opener = urllib.request.build_opener(_NoRedirect)
    with opener.open(url, timeout=5) as resp:  # noqa: S310 - scheme checked by the guard
        return bytes(resp.read(64 * 1024))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None
