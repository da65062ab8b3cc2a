"""Post-mortem reports over HTTP: a thin edge over :mod:`pushguard.diagnosis.postmortem`.

``GET /v1/campaigns/{ref}/report`` and ``GET /v1/incidents/{id}/report`` answer the report as
JSON data (the default), Markdown (``text/markdown``) or one self-contained HTML page
(``text/html``, served with a Content-Security-Policy that allows no script and no external
asset). An unknown campaign or incident is a 404; a format other than those is a 422 naming
``format``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from pushguard.api.auth import Auth
from pushguard.api.body import CheckedRoute
from pushguard.api.errors import AUTHED
from pushguard.diagnosis.postmortem import campaign_postmortem, incident_postmortem
from pushguard.diagnosis.report_html import as_html
from pushguard.diagnosis.report_md import as_markdown

if TYPE_CHECKING:
    from pushguard.app import App

Format = Literal["json", "md", "html"]
FormatQuery = Annotated[Format, Query(alias="format", description="json, md or html")]
#: the HTML report needs nothing but its own inline styles
CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"


def rendered(report: dict[str, Any], fmt: Format) -> Response | dict[str, Any]:
    """The report in ``fmt``: the data itself for JSON, a response for the others."""
    if fmt == "md":
        return Response(as_markdown(report), media_type="text/markdown; charset=utf-8")
    if fmt == "html":
        return Response(as_html(report), media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": CSP,
                                 "X-Content-Type-Options": "nosniff"})
    return report


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {}, "text/markdown": {}, "text/html": {}}},
    404: {}, 422: {}}


def reports_router(app: App) -> APIRouter:
    router = APIRouter(route_class=CheckedRoute, responses=AUTHED)

    def report(make: Callable[[App, str], dict[str, Any]], ref: str,
               fmt: Format) -> Response | dict[str, Any]:
        return rendered(make(app, ref), fmt)

    @router.get("/v1/campaigns/{ref}/report", tags=["reports"], responses=_RESPONSES,
                response_model=None)
    def campaign_report(ref: str, _: Auth, fmt: FormatQuery = "json"
                        ) -> Response | dict[str, Any]:
        """A campaign's post-mortem: summary and verdict, impact (outcomes, unsubscribes and
        complaints since, cost), timeline, root causes with provider codes, examples, fixes,
        lessons and the pre-flight checks that would have caught them, what was done, and
        the failure rate before and after a fix. ``{ref}`` is its id or name."""
        return report(campaign_postmortem, ref, fmt)

    @router.get("/v1/incidents/{incident_id}/report", tags=["reports"], responses=_RESPONSES,
                response_model=None)
    def incident_report(incident_id: str, _: Auth, fmt: FormatQuery = "json"
                        ) -> Response | dict[str, Any]:
        """An incident's post-mortem: the same sections, over its blast radius and window;
        the comparison is during the incident against after its first action."""
        return report(incident_postmortem, incident_id, fmt)

    return router
