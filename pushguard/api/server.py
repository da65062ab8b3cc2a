"""The HTTP API: a thin edge over :class:`pushguard.app.App`.

Every ``/v1`` route needs ``Authorization: Bearer <key>``. A 202 is sent only after the
message is committed. Bad input gets a 4xx naming the field and the problem; nothing invalid is
enqueued, and nothing valid in a batch is held back by an invalid neighbour.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pushguard import taxonomy
from pushguard.api import errors
from pushguard.api.alerts import alerts_router
from pushguard.api.audience import audience_router
from pushguard.api.auth import Auth
from pushguard.api.body import CheckedRoute, suspect_body
from pushguard.api.campaigns import campaigns_router
from pushguard.api.data import data_router
from pushguard.api.diagnosis import diagnosis_router
from pushguard.api.inbound import inbound_router
from pushguard.api.public import public_router
from pushguard.api.receipts import receipts_router
from pushguard.api.reports import reports_router
from pushguard.api.templates import templates_router
from pushguard.app import App
from pushguard.exceptions import (
    IdempotencyConflict,
    InputError,
    NotFound,
)
from pushguard.intake import MessageIn
from pushguard.models import Accepted, MessageView
from pushguard.ratelimit import KeyedLimiter
from pushguard.states import State
from pushguard.views import message_json, rfc3339

MAX_BATCH = 1000
_DUMMY_HASH = hashlib.sha256(b"no key given").hexdigest()


class BodyLimit:
    """Answer 413 before parsing when a body is larger than the limit, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(send)
            return
        seen = 0
        too_big = False

        async def limited() -> Message:
            # Past the limit the app is told the client went away, so it never acts on a
            # truncated body; its answer is replaced by a 413.
            nonlocal seen, too_big
            if too_big:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    too_big = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not too_big:
                await send(message)

        await self.app(scope, limited, guarded_send)
        if too_big:
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        resp = JSONResponse(
            errors.error_body(
                "payload_too_large", f"request body is larger than {self.limit} bytes",
                [{"field": "body", "problem": f"must be at most {self.limit} bytes"}],
            ),
            status_code=413,
        )
        await resp({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


class Accepted202(BaseModel):
    id: str
    state: str
    fanout: list[dict[str, Any]] | None = Field(
        default=None, description="the same message to the contact's other devices")


class BatchIn(BaseModel):
    messages: list[Any] = Field(
        description=f"up to {MAX_BATCH} messages, each shaped like POST /v1/messages"
    )


def encode_cursor(created_at: float, message_id: str) -> str:
    return f"{created_at!r}~{message_id}"


def decode_cursor(cursor: str) -> tuple[float, str]:
    stamp, sep, mid = cursor.partition("~")
    try:
        if not sep or not mid:
            raise ValueError
        return float(stamp), mid
    except ValueError:
        raise InputError("cursor", "is not a cursor returned by this API") from None




def create_api(app: App) -> FastAPI:
    api = FastAPI(
        title="pushguard",
        version="0.1.0",
        description="Multi-channel push delivery where pushes do not fail silently.",
    )
    api.router.route_class = CheckedRoute  # the routes below (messages, health) too
    api.state.pushguard = app
    api.state.limiter = KeyedLimiter(app.settings.api_rate, app.settings.api_burst)
    errors.install(api)
    api.add_middleware(BodyLimit, limit=app.settings.max_body_bytes)
    app.metrics.watch_queue(app.store)
    api.include_router(receipts_router(app))
    api.include_router(audience_router(app))
    api.include_router(public_router(app))
    api.include_router(inbound_router(app))
    api.include_router(data_router(app))
    api.include_router(templates_router(app))
    api.include_router(alerts_router(app))
    api.include_router(campaigns_router(app))
    api.include_router(diagnosis_router(app))
    api.include_router(reports_router(app))
    store = app.store
    v1 = APIRouter(route_class=CheckedRoute, responses=errors.AUTHED)

    def accepted_json(result: Accepted) -> dict[str, Any]:
        out: dict[str, Any] = {"id": result.id, "state": result.state.value}
        if result.fanout:
            out["fanout"] = [
                {"id": r.id, "state": r.state.value} if isinstance(r, Accepted)
                else errors.describe(r)[1] for r in result.fanout]
        return out

    @v1.post("/v1/messages", status_code=202, response_model=Accepted202,
              response_model_exclude_none=True,
              responses=errors.BODY)
    def send_message(
        item: MessageIn,
        key_id: Auth,
        response: Response,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> dict[str, Any]:
        """Accept one message. It is committed before the 202 is sent."""
        try:
            msg = app.intake.prepare(item, header_key=idempotency_key)
        except InputError:
            app.metrics.rejected.labels("validation").inc()
            raise
        (result,) = app.intake.submit([msg], scope=key_id)
        if isinstance(result, IdempotencyConflict):
            raise result
        if result.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        else:
            app.metrics.accepted.labels(msg.channel).inc()
        return accepted_json(result)

    @v1.post("/v1/messages/batch", status_code=202,
              responses=errors.BODY)
    def send_batch(
        batch: BatchIn,
        key_id: Auth,
        request: Request,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> Any:
        """Accept up to 1000 messages; each gets its own result, invalid ones their own error.

        202 when at least one message was accepted, 422 when none was."""
        n = len(batch.messages)
        if n == 0 or n > MAX_BATCH:
            raise InputError("messages", f"must hold 1 to {MAX_BATCH} messages, got {n}")
        results: list[dict[str, Any] | None] = [None] * n
        valid, where = [], []
        memo: dict[tuple[str, str], str] = {}
        check = suspect_body(request)
        for i, raw in enumerate(batch.messages):
            prefix = f"messages[{i}]."
            try:
                item = app.intake.parse(raw, prefix=prefix, check=check)
                header_key = None
                if idempotency_key and item.idempotency_key is None:
                    header_key = f"{idempotency_key}:{i}"
                valid.append(app.intake.prepare(item, header_key=header_key, prefix=prefix,
                                                memo=memo))
                where.append(i)
            except InputError as exc:
                app.metrics.rejected.labels("validation").inc()
                results[i] = {"index": i, **errors.describe(exc)[1]}
        if valid:
            for i, msg, res in zip(where, valid, app.intake.submit(valid, scope=key_id),
                                   strict=True):
                if isinstance(res, IdempotencyConflict):
                    results[i] = {"index": i, **errors.describe(res)[1]}
                else:
                    if not res.replayed:
                        app.metrics.accepted.labels(msg.channel).inc()
                    results[i] = {"index": i, **accepted_json(res), "replayed": res.replayed}
        out = [r for r in results if r is not None]
        ok = sum(1 for r in out if "id" in r)
        body = {"accepted": ok, "rejected": n - ok, "results": out}
        if ok == 0:  # nothing was accepted: say so with the status, not only in the body
            first = next(r["error"] for r in out if "error" in r)
            return JSONResponse({**errors.error_body(
                "validation_error", f"no message in the batch was accepted; first: "
                f"{first['message']}", first.get("fields")), **body}, status_code=422)
        return body

    def find(message_id: str) -> MessageView:
        view = store.get(message_id)
        if view is None:
            raise NotFound(f"no message {message_id!r}")
        return view

    @v1.get("/v1/messages/{message_id}")
    def get_message(message_id: str, _: Auth) -> dict[str, Any]:
        """Everything known about one message: state, attempts, history, failure and fix."""
        return message_json(find(message_id))

    @v1.get("/v1/messages")
    def list_messages(
        _: Auth,
        state: Annotated[State | None, Query()] = None,
        cause: Annotated[str | None, Query(max_length=32)] = None,
        since: Annotated[datetime | None, Query()] = None,
        cursor: Annotated[str | None, Query(max_length=80,
                                            description="next_cursor of the previous page")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> dict[str, Any]:
        """Messages, newest first, filtered by state, failure cause and creation time."""
        if cause is not None and cause not in taxonomy.CAUSES:
            raise InputError("cause", f"unknown cause; one of: {', '.join(taxonomy.CAUSES)}")
        if since is not None and since.tzinfo is None:
            raise InputError("since", "must be an RFC 3339 time with a timezone")
        after = decode_cursor(cursor) if cursor else None
        views = store.list_messages(
            state=state.value if state else None, cause=cause,
            since=since.timestamp() if since else None, cursor=after, limit=limit,
        )
        last = views[-1] if len(views) == limit else None
        return {
            "messages": [message_json(v, full=False) for v in views],
            "next_cursor": encode_cursor(last.created_at, last.id) if last else None,
        }

    @v1.get("/v1/suppressions")
    def list_suppressions(
        _: Auth, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> dict[str, Any]:
        """Addresses that will not be sent to, with reason and source."""
        return {"suppressions": [
            {"channel": s.channel, "address": s.address, "reason": s.reason,
             "source": s.source, "created_at": rfc3339(s.created_at)}
            for s in store.suppressions(limit)
        ]}

    @v1.get("/v1/causes")
    def list_causes(_: Auth) -> dict[str, Any]:
        """The failure taxonomy: every cause, whether it is transient, and its fix."""
        return {"causes": [
            {"cause": c.name, "transient": c.transient, "action": c.action.value,
             "explanation": c.explanation, "fix": c.fix}
            for c in taxonomy.CAUSES.values()
        ]}

    @api.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @api.get("/readyz")
    def readyz() -> JSONResponse:
        """The database answers and its schema is current."""
        try:
            store.ping()
            current = store.schema_is_current()
        except Exception as exc:  # readiness reports, it does not raise
            return JSONResponse({"status": "unavailable", "problem": str(exc)}, status_code=503)
        if not current:
            return JSONResponse(
                {"status": "unavailable", "problem": "schema is behind: run pushguard db upgrade"},
                status_code=503,
            )
        return JSONResponse({"status": "ready"})

    @api.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        """Prometheus metrics."""
        return PlainTextResponse(app.metrics.render(),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    api.include_router(v1)
    errors.document_errors(api)
    return api

