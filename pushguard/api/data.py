"""Bulk contact import and the data doctor over HTTP: the same core as
``pushguard contacts import`` and ``pushguard doctor data``.

``POST /v1/contacts/import`` takes the CSV as the request body (``Content-Type: text/csv``),
so a file is streamed through the importer as it is, with no multipart wrapping. The body
must declare its length: the size limit ends an over-long chunked body early, and an import
must never run on a truncated file.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from pushguard.api import errors
from pushguard.api.auth import Auth
from pushguard.api.body import CheckedRoute
from pushguard.api.errors import AUTHED
from pushguard.audience.doctor import Doctor
from pushguard.audience.importer import ContactImport, ImportOptions
from pushguard.audience.repair import apply_fixes

if TYPE_CHECKING:
    from pushguard.app import App


class FixesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str] = Field(min_length=1, max_length=1000,
                           description="ids of findings from GET /v1/doctor/data")


def _media(content_type: str) -> tuple[str, dict[str, str]]:
    media, *params = (p.strip() for p in content_type.split(";"))
    parsed = {}
    for p in params:
        name, _, value = p.partition("=")
        parsed[name.strip().lower()] = value.strip().strip('"')
    return media.lower(), parsed


def data_router(app: App) -> APIRouter:
    router = APIRouter(route_class=CheckedRoute, responses=AUTHED)

    @router.post("/v1/contacts/import", tags=["audience"],
                 responses={415: {"description": "not text/csv"}, 411: {}, 422: {}})
    async def import_contacts(
        request: Request, key_id: Auth,
        region: Annotated[str | None, Query(max_length=8, description="country of phone "
                                            "numbers without +<country code>, e.g. US")] = None,
        encoding: Annotated[str | None, Query(max_length=40, description="the file's "
                                              "encoding when it has no byte-order mark; "
                                              "default: the charset parameter, else UTF-8")
                            ] = None,
        filename: Annotated[str, Query(min_length=1, max_length=200,
                                       pattern=r"^[^\x00-\x1f\x7f]+$",
                                       description="named in the consent proofs: import "
                                       "<filename> line <n>")] = "upload.csv",
    ) -> Any:
        """Import contacts from a CSV body. Answers 200 with the counts (rows = created +
        updated + rejected) and the first 1000 row errors and warnings, each with its line
        number; 422 only when the file cannot be imported at all (no external_id column, an
        unknown column or consent topic, an unreadable encoding)."""
        media, params = _media(request.headers.get("content-type", ""))
        if media != "text/csv":
            return JSONResponse(errors.error_body(
                "unsupported_media_type", "send the CSV file as the body with "
                "Content-Type: text/csv",
                [{"field": "Content-Type", "problem": "must be text/csv"}]), status_code=415)
        declared = request.headers.get("content-length")
        if declared is None or not declared.isdigit():
            return JSONResponse(errors.error_body(
                "length_required", "send the body with a Content-Length header",
                [{"field": "Content-Length", "problem": "is required"}]), status_code=411)
        body = await request.body()
        if len(body) != int(declared):  # cut short by the size limit: import nothing
            return JSONResponse(errors.error_body(
                "payload_too_large", "the body was cut short",
                [{"field": "body", "problem": "is incomplete"}]), status_code=413)
        options = ImportOptions(region=region, encoding=encoding or params.get("charset"),
                                actor=f"key:{key_id}",
                                policy_version=app.config.audience.policy_version)

        def run() -> dict[str, Any]:
            summary = ContactImport(app.audience, options).run(io.BytesIO(body), filename)
            return summary.as_dict()

        return await run_in_threadpool(run)

    @router.get("/v1/doctor/data", tags=["doctor"])
    def doctor_findings(_: Auth) -> dict[str, Any]:
        """Problems in the contact data, each with its evidence and proposed fix: duplicate
        contacts, conflicting addresses, stale tokens, soft-bouncing addresses, consent
        without proof. Nothing is changed."""
        found = Doctor(app.audience).findings()
        counts: dict[str, int] = {}
        for f in found:
            counts[f.kind] = counts.get(f.kind, 0) + 1
        return {"findings": [f.as_dict() for f in found], "counts": counts}

    @router.post("/v1/doctor/data/fixes", tags=["doctor"])
    def doctor_fix(body: FixesIn, key_id: Auth) -> dict[str, Any]:
        """Apply the fixes of these findings, in order, each in its own transaction and
        audited. An unknown id is refused (422 naming ``ids[i]``) before anything changes;
        a fix whose data moved since is skipped with the reason."""
        done = apply_fixes(Doctor(app.audience), body.ids, actor=f"key:{key_id}")
        return {"applied": [d.as_dict() for d in done]}

    return router
