"""One table from errors to HTTP answers, and the JSON shape every error has::

    {"error": {"type": "validation_error", "message": "to: ...",
               "fields": [{"field": "to", "problem": "..."}]}}
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pushguard.api.body import STATE_KEY
from pushguard.exceptions import (
    AuthError,
    Blocked,
    Conflict,
    IdempotencyConflict,
    InputError,
    NotFound,
    PushguardError,
    RateLimited,
    StoreError,
)
from pushguard.intake import field_path, problem_text

STATUS: list[tuple[type[PushguardError], int, str]] = [
    (IdempotencyConflict, 422, "idempotency_conflict"),
    (InputError, 422, "validation_error"),
    (AuthError, 401, "unauthorized"),
    (RateLimited, 429, "rate_limited"),
    (NotFound, 404, "not_found"),
    (Blocked, 409, "blocked_by_preflight"),
    (Conflict, 409, "conflict"),
    (StoreError, 503, "store_unavailable"),
    (PushguardError, 500, "internal_error"),
]


class ErrorField(BaseModel):
    field: str = Field(description="the field's path, e.g. `messages[1].to`")
    problem: str


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")  # e.g. a blocked campaign's `findings`

    type: str = Field(description="`validation_error`, `unauthorized`, `not_found`, ...")
    message: str
    fields: list[ErrorField] | None = None


class ErrorBody(BaseModel):
    """The body of every error the API answers (for the OpenAPI document)."""

    error: ErrorDetail


def answer(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


#: The errors any route behind an API key may answer, declared on its router.
AUTHED: dict[int | str, dict[str, Any]] = {
    401: answer("missing or invalid API key"),
    422: answer("a field is invalid; `fields` names each one and its problem"),
    429: answer("this key's rate limit; wait `Retry-After` seconds"),
    503: answer("the database is unavailable and nothing was accepted; retry"),
}
#: ... and those a route taking a JSON body may answer too
BODY: dict[int | str, dict[str, Any]] = {
    400: answer("the body is not valid JSON"),
    413: answer("the body is over the size limit"),
    415: answer("the body was not sent as application/json"),
}


def document_errors(api: FastAPI) -> None:
    """Make the OpenAPI document say what the API answers: FastAPI declares its own
    validation error body on every route with parameters, which our handler never sends."""
    generate = api.openapi  # FastAPI's own, with the app's servers, tags and webhooks

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = generate()
            known = schema.setdefault("components", {}).setdefault("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                known.pop(name, None)
            assert "ErrorBody" in known  # declared by AUTHED, on every /v1 router
            ref = {"$ref": "#/components/schemas/ErrorBody"}
            for item in schema.get("paths", {}).values():
                for op in item.values():
                    answer = op.get("responses", {}).get("422")
                    if answer is not None:
                        answer["content"] = {"application/json": {"schema": ref}}
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


def error_body(
    kind: str, message: str, fields: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": kind, "message": message}
    if fields:
        body["fields"] = fields
    return {"error": body}


def describe(exc: PushguardError) -> tuple[int, dict[str, Any]]:
    for cls, status, kind in STATUS:
        if isinstance(exc, cls):
            fields = [exc.as_dict()] if isinstance(exc, InputError) else None
            body = error_body(kind, str(exc), fields)
            if isinstance(exc, Blocked):
                body["error"]["findings"] = exc.findings
            return status, body
    raise AssertionError("unreachable")


def install(app: FastAPI) -> None:
    @app.exception_handler(PushguardError)
    async def _pushguard(_: Request, exc: PushguardError) -> JSONResponse:
        status, body = describe(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if status == 503:
            headers = {"Retry-After": "1"}  # the database is busy or full: nothing was accepted
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(DataError)
    async def _refused_by_database(_: Request, exc: DataError) -> JSONResponse:
        # PostgreSQL refuses NUL in text (SQLite stores it): a value we let through reached
        # the database; the request is at fault, not the server
        return JSONResponse(error_body(
            "validation_error", "a value holds a character the database refuses (NUL)",
            [{"field": "body", "problem": "contains a NUL character (\\u0000)"}]),
            status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        ctype = request.headers.get("content-type", "")
        about_body = any((e.get("loc") or ("",))[0] == "body" for e in errors)
        if request.method == "POST" and about_body and "json" not in ctype.lower():
            return JSONResponse(
                error_body("unsupported_media_type", "send the body as JSON with "
                           "Content-Type: application/json",
                           [{"field": "Content-Type", "problem": "must be application/json"}]),
                status_code=415,
            )
        problem = getattr(request.state, STATE_KEY, None)
        if problem is not None:  # parsed, but not storable (pushguard.api.body)
            field, what = problem
            return JSONResponse(error_body("validation_error", f"{field}: {what}",
                                           [{"field": field, "problem": what}]),
                                status_code=422)
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse(
                error_body("malformed_json", "the request body is not valid JSON",
                           [{"field": "body", "problem": "is not valid JSON"}]),
                status_code=400,
            )
        problems = []
        for e in errors:
            field = field_path(e.get("loc", ())) or "body"
            problems.append({"field": field, "problem": problem_text(e)})
        message = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        return JSONResponse(error_body("validation_error", message, problems), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        return JSONResponse(error_body(kind, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

