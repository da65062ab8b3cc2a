"""Templates over HTTP: a thin edge over :class:`pushguard.templates.service.Templates`.

Saving (``POST /v1/templates``, ``POST /v1/templates/{ref}/versions``) lints first: lint
errors answer 422 with every error in ``error.fields`` and the whole lint in ``findings``;
warnings come back with the saved version. ``{ref}`` is a template's id or name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from pushguard.api import errors
from pushguard.api.auth import Auth
from pushguard.api.body import CheckedRoute
from pushguard.api.errors import AUTHED
from pushguard.templates.errors import LintRefused, TemplateError
from pushguard.templates.models import LintIn, RenderIn, TemplateIn, VersionIn

if TYPE_CHECKING:
    from pushguard.app import App

Ref = Annotated[str, "a template's id or name"]


def refused(exc: LintRefused) -> JSONResponse:
    body = errors.error_body(
        "lint_failed", f"the template has lint errors and was not saved: {exc}",
        [{"field": f.input_field, "problem": f.summary} for f in exc.findings
         if f.severity == "error"])
    body["findings"] = [f.as_dict() for f in exc.findings]
    return JSONResponse(body, status_code=422)


def templates_router(app: App) -> APIRouter:
    router = APIRouter(route_class=CheckedRoute, responses=AUTHED)
    service = app.templates

    @router.post("/v1/templates", status_code=201, tags=["templates"],
                 responses={422: {"description": "invalid, or lint errors"}})
    def create_template(body: TemplateIn, key_id: Auth) -> Any:
        """Create a template and its first (default-locale) version, linted first."""
        try:
            return service.create(body, actor=f"key:{key_id}")
        except LintRefused as exc:
            return refused(exc)

    @router.post("/v1/templates/{ref}/versions", status_code=201, tags=["templates"],
                 responses={422: {"description": "invalid, or lint errors"}, 404: {}})
    def add_version(ref: Ref, body: VersionIn, key_id: Auth) -> Any:
        """Add a version for one locale; earlier versions never change."""
        try:
            return service.add_version(ref, body, actor=f"key:{key_id}")
        except LintRefused as exc:
            return refused(exc)

    @router.get("/v1/templates", tags=["templates"])
    def list_templates(_: Auth) -> dict[str, Any]:
        """Every template with its locales and their current versions."""
        return {"templates": service.list_all()}

    @router.get("/v1/templates/{ref}", tags=["templates"], responses={404: {}})
    def get_template(
        ref: Ref, _: Auth,
        version: Annotated[int | None, Query(ge=1, le=1_000_000,
                                             description="this version's content")] = None,
    ) -> dict[str, Any]:
        """A template, each locale's current version and the version history."""
        return service.get(ref, version=version)

    @router.post("/v1/templates/{ref}/lint", tags=["templates"], responses={404: {}})
    async def lint_template(
        ref: Ref, _: Auth, body: Annotated[LintIn | None, Body()] = None,
    ) -> dict[str, Any]:
        """Lint now, with real contacts, and check links and images over HTTP."""
        opts = body or LintIn()
        reports = await run_in_threadpool(
            service.lint, ref, locale=opts.locale, version=opts.version, data=opts.data,
            sample=opts.sample)
        if opts.check_links:
            await service.check_links(reports)
        return {"template": ref, "errors": sum(len(r.errors) for r in reports),
                "warnings": sum(len(r.warnings) for r in reports),
                "reports": [r.as_dict() for r in reports]}

    @router.post("/v1/templates/{ref}/render", tags=["templates"],
                 responses={404: {}, 422: {"description": "the template did not render"}})
    def render_template(
        ref: Ref, _: Auth, body: Annotated[RenderIn | None, Body()] = None,
    ) -> dict[str, Any]:
        """Preview: the content a contact (or a made-up one) would receive. A marketing
        email shows ``{{unsubscribe_url}}`` where each contact's own link will go."""
        opts = body or RenderIn()
        try:
            return service.render(ref, contact=opts.contact, data=opts.data,
                                  locale=opts.locale, version=opts.version)
        except TemplateError as exc:
            raise exc.as_input_error() from exc

    return router
