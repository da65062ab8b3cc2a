"""Segments and campaigns over HTTP: a thin edge over :mod:`pushguard.campaigns`.

``{ref}`` is an id or a name. Starting a campaign runs its pre-flight check: blocking findings
answer 409 (``blocked_by_preflight``) with the findings, unless the body gives an
``override`` reason, which is recorded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, ConfigDict, Field

from pushguard.api.auth import Auth
from pushguard.api.body import CheckedRoute
from pushguard.api.errors import AUTHED
from pushguard.campaigns import rehearsal
from pushguard.campaigns.models import CampaignIn
from pushguard.campaigns.preflight import Preflight
from pushguard.campaigns.segments import SegmentIn

if TYPE_CHECKING:
    from pushguard.app import App


class FilterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filter: dict[str, Any] = Field(default_factory=dict)
    sample: int = Field(default=10, ge=0, le=100)


class StartIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    override: str | None = Field(default=None, min_length=3, max_length=2000,
                                 description="send despite blocking findings, and why")


class PauseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="paused by hand", min_length=1, max_length=2000)


class RetryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    causes: list[str] | None = Field(default=None, max_length=20,
                                     description="only messages that failed with these causes")
    via: str | None = Field(default=None, max_length=64,
                            description="try this provider first")


class TestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: list[str] = Field(default_factory=list, max_length=50,
                          description="addresses (channel:address, or one on the first "
                          "channel); default: the campaign's seeds")
    as_contact: str | None = Field(default=None, alias="as", max_length=255,
                                   description="render as this contact (default: the "
                                   "segment's first)")


def campaigns_router(app: App) -> APIRouter:
    router = APIRouter(route_class=CheckedRoute, responses=AUTHED)

    def actor(key_id: str) -> str:
        return f"key:{key_id}"

    @router.post("/v1/segments", status_code=201, tags=["campaigns"])
    def put_segment(body: SegmentIn, _: Auth) -> dict[str, Any]:
        """Create a segment, or replace the filter of the one with that name."""
        return app.campaigns.segments.put(body)

    @router.get("/v1/segments", tags=["campaigns"])
    def list_segments(_: Auth) -> dict[str, Any]:
        return {"segments": app.campaigns.segments.list_all()}

    @router.get("/v1/segments/{ref}", tags=["campaigns"], responses={404: {}})
    def get_segment(ref: str, _: Auth,
                    sample: Annotated[int, Query(ge=0, le=100)] = 10) -> dict[str, Any]:
        """A segment with its live count and a sample of its members."""
        seg = app.campaigns.segments
        got = seg.get(ref)
        return {**got, **seg.preview(got["filter"], sample=sample)}

    @router.post("/v1/segments/preview", tags=["campaigns"])
    def preview_filter(body: FilterIn, _: Auth) -> dict[str, Any]:
        """The live count and a sample of a filter, before saving it."""
        return app.campaigns.segments.preview(body.filter, sample=body.sample)

    @router.post("/v1/campaigns", status_code=201, tags=["campaigns"])
    def create_campaign(body: CampaignIn, key_id: Auth) -> dict[str, Any]:
        """Create a draft campaign (checked: topic, channels, templates, segment)."""
        return app.campaigns.create(body, actor=actor(key_id))

    @router.put("/v1/campaigns/{ref}", tags=["campaigns"], responses={404: {}, 409: {}})
    def update_campaign(ref: str, body: CampaignIn, key_id: Auth) -> dict[str, Any]:
        """Replace a draft's definition."""
        return app.campaigns.update(ref, body, actor=actor(key_id))

    @router.get("/v1/campaigns", tags=["campaigns"])
    def list_campaigns(_: Auth, state: Annotated[str | None, Query(max_length=16)] = None,
                       limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, Any]:
        return {"campaigns": app.campaigns.list_all(state=state, limit=limit)}

    @router.get("/v1/campaigns/{ref}", tags=["campaigns"], responses={404: {}})
    def get_campaign(ref: str, _: Auth) -> dict[str, Any]:
        """The campaign, its last pre-flight, and its progress."""
        return app.campaigns.get(ref)

    @router.get("/v1/campaigns/{ref}/progress", tags=["campaigns"], responses={404: {}})
    def progress(ref: str, _: Auth) -> dict[str, Any]:
        row = app.campaigns.find(ref)
        return {"id": row.id, "state": row.state, "recipients_total": max(row.recipients, 0),
                **app.campaigns.progress(row.id)}

    @router.post("/v1/campaigns/{ref}/preflight", tags=["campaigns"], responses={404: {}})
    def preflight(ref: str, _: Auth, links: Annotated[bool, Query(
            description="check links and images over HTTP")] = True,
            exact: Annotated[bool, Query(description="survey every recipient, not a random "
                                         "sample of a large audience")] = False
            ) -> dict[str, Any]:
        """Predict what would fail, and why, before anything is sent."""
        return Preflight(app.campaigns).run(ref, links=links, exact=exact)

    @router.post("/v1/campaigns/{ref}/dry-run", tags=["campaigns"], responses={404: {}})
    def dry_run(ref: str, _: Auth,
                limit: Annotated[int, Query(ge=0, le=1000)] = 100) -> dict[str, Any]:
        """Render and route every message without sending: the plan and its cost."""
        return rehearsal.dry_run(app.campaigns, ref, limit=limit)

    @router.post("/v1/campaigns/{ref}/test", tags=["campaigns"], responses={404: {}})
    def test_send(ref: str, key_id: Auth,
                  body: Annotated[TestIn | None, Body()] = None) -> dict[str, Any]:
        """Send the campaign's message to internal addresses now."""
        opts = body or TestIn()
        return rehearsal.test_send(app.campaigns, ref, to=opts.to, as_contact=opts.as_contact,
                                   actor=actor(key_id))

    @router.post("/v1/campaigns/{ref}/start", tags=["campaigns"],
                 responses={404: {}, 409: {"description": "blocked by the pre-flight"}})
    def start(ref: str, key_id: Auth,
              body: Annotated[StartIn | None, Body()] = None) -> dict[str, Any]:
        """Check, then send (or schedule); workers fan it out."""
        return app.campaigns.start(ref, actor=actor(key_id),
                                   override=(body or StartIn()).override)

    @router.post("/v1/campaigns/{ref}/pause", tags=["campaigns"], responses={404: {}, 409: {}})
    def pause(ref: str, key_id: Auth,
              body: Annotated[PauseIn | None, Body()] = None) -> dict[str, Any]:
        return app.campaigns.pause(ref, reason=(body or PauseIn()).reason, actor=actor(key_id))

    @router.post("/v1/campaigns/{ref}/resume", tags=["campaigns"], responses={404: {}, 409: {}})
    def resume(ref: str, key_id: Auth) -> dict[str, Any]:
        return app.campaigns.resume(ref, actor=actor(key_id))

    @router.post("/v1/campaigns/{ref}/cancel", tags=["campaigns"], responses={404: {}, 409: {}})
    def cancel(ref: str, key_id: Auth) -> dict[str, Any]:
        return app.campaigns.cancel(ref, actor=actor(key_id))

    @router.post("/v1/campaigns/{ref}/retry", tags=["campaigns"], responses={404: {}, 409: {}})
    def retry(ref: str, key_id: Auth,
              body: Annotated[RetryIn | None, Body()] = None) -> dict[str, Any]:
        """Send again to the recipients whose message failed."""
        opts = body or RetryIn()
        return app.campaigns.retry_failed(ref, actor=actor(key_id), causes=opts.causes,
                                          via=opts.via)

    return router
