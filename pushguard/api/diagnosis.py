"""Diagnosis over HTTP: why a message, a contact or a campaign failed; failure analytics and
comparisons; the lessons operators leave for each other.

A thin edge over :mod:`pushguard.diagnosis`. Every answer leads with a plain-language
``verdict``; bad input is a 422 naming the field, an unknown contact, campaign or lesson a 404.
Everything here reads, except the lessons, which record their author (the API key).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from pushguard.api.auth import Auth
from pushguard.api.body import CheckedRoute
from pushguard.api.errors import AUTHED
from pushguard.diagnosis.campaign_story import campaign_story
from pushguard.diagnosis.compare import compare_report, side
from pushguard.diagnosis.failures import failures_report, filters_for, parse_by
from pushguard.diagnosis.lessons import MAX_NOTE_BYTES, Lessons, key_author
from pushguard.diagnosis.recipient import recipient_story
from pushguard.diagnosis.timespan import HELP, window
from pushguard.exceptions import InputError, NotFound, PushguardError
from pushguard.explain import explain
from pushguard.store.sql import SQLStore

if TYPE_CHECKING:
    from pushguard.app import App

Name = Annotated[str | None, Query(max_length=128)]
When = Annotated[str | None, Query(max_length=64, description=HELP)]


class LessonIn(BaseModel):
    """A note on exactly one of a cause, a provider or a template."""

    cause: str | None = Field(default=None, max_length=64)
    provider: str | None = Field(default=None, max_length=128)
    template: str | None = Field(default=None, max_length=128)
    note: str = Field(max_length=4 * MAX_NOTE_BYTES,
                      description=f"free text, CR/LF allowed, at most {MAX_NOTE_BYTES} bytes")


def subject_of(body: LessonIn | dict[str, str | None]) -> tuple[str, str]:
    """``(kind, subject)`` of exactly one of ``cause``, ``provider``, ``template``."""
    values = body if isinstance(body, dict) else body.model_dump()
    given = [(k, values.get(k)) for k in ("cause", "provider", "template")
             if values.get(k) is not None]
    if len(given) != 1:
        raise InputError("cause", "give exactly one of cause, provider or template")
    kind, subject = given[0]
    return kind, str(subject)


def diagnosis_router(app: App) -> APIRouter:
    router = APIRouter(route_class=CheckedRoute, responses=AUTHED)
    if not isinstance(app.store, SQLStore):  # pragma: no cover - every deployment is SQL
        raise PushguardError("diagnosis needs the SQL store")
    store: SQLStore = app.store
    lessons = Lessons(store)

    @router.get("/v1/messages/{message_id}/explain", tags=["diagnosis"], responses={404: {}})
    def explain_message(message_id: str, _: Auth) -> dict[str, Any]:
        """The story of one message in plain words, with the verdict, what to do, and the
        lessons left on its causes, providers and template."""
        view = store.get(message_id)
        if view is None:
            raise NotFound(f"no message {message_id!r}")
        return explain(view, [le.as_dict() for le in lessons.for_message(view)])

    @router.get("/v1/contacts/{ref}/explain", tags=["diagnosis"], responses={404: {}})
    def explain_contact(
        ref: str, _: Auth,
        days: Annotated[int, Query(ge=1, le=365, description="how far back to look")] = 7,
    ) -> dict[str, Any]:
        """Why has this contact received nothing? Their messages by outcome, each failure
        with its cause and fix, and what would stop the next one before it is sent."""
        return recipient_story(store, ref, days=days, policy=app.config.audience)

    @router.get("/v1/campaigns/{ref}/explain", tags=["diagnosis"], responses={404: {}})
    def explain_campaign(ref: str, _: Auth) -> dict[str, Any]:
        """A campaign's messages by state and cause with examples and fixes, and the
        recipients it skipped, by reason. ``{ref}`` is its id or name."""
        return campaign_story(store, ref)

    @router.get("/v1/failures", tags=["diagnosis"], responses={422: {}})
    def failures(
        _: Auth, since: When = None, until: When = None,
        by: Annotated[list[str] | None, Query(max_length=8, description=(
            "cause, provider, channel, campaign, template, topic, hour, day; repeat it or "
            "separate with commas"))] = None,
        campaign: Name = None, channel: Name = None, provider: Name = None,
        topic: Name = None, template: Name = None,
        top: Annotated[int, Query(ge=1, le=50)] = 10,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> dict[str, Any]:
        """Failed, suppressed and delivered counts and rates (of finished messages) grouped
        by ``by``, the top causes with their fixes and lessons, and a time series."""
        dims = parse_by([b[:200] for b in by or []])
        filters = filters_for(store, window(since, until), campaign=campaign, channel=channel,
                              provider=provider, topic=topic, template=template)
        return failures_report(store, filters, dims, top=top, limit=limit)

    @router.get("/v1/failures/compare", tags=["diagnosis"], responses={422: {}})
    def compare(
        _: Auth,
        a: Annotated[str | None, Query(max_length=130, description="2026-11-01..2026-11-07")
                     ] = None,
        b: Annotated[str | None, Query(max_length=130)] = None,
        campaign_a: Name = None, campaign_b: Name = None, channel: Name = None,
        provider: Name = None, topic: Name = None, template: Name = None,
    ) -> dict[str, Any]:
        """Did the fix work? Failure rates of two windows or campaigns, overall and per
        cause, with a two-proportion z-test: significant at 95%, within noise, or too small a
        sample to tell."""
        common = {"channel": channel, "provider": provider, "topic": topic,
                  "template": template}
        side_a = side(store, a, campaign_a, fields=("a", "campaign_a"), common=common)
        side_b = side(store, b, campaign_b, fields=("b", "campaign_b"), common=common)
        return compare_report(store, side_a, side_b)

    @router.post("/v1/lessons", status_code=201, tags=["diagnosis"], responses={422: {}})
    def add_lesson(body: LessonIn, key_id: Auth) -> dict[str, Any]:
        """Attach a note to a cause, a provider or a template; it is shown beside every
        later failure of that kind. The author is the API key."""
        kind, subject = subject_of(body)
        return lessons.add(kind, subject, body.note,
                           author=key_author(store, key_id)).as_dict()

    @router.get("/v1/lessons", tags=["diagnosis"], responses={422: {}})
    def list_lessons(
        _: Auth, cause: Name = None, provider: Name = None, template: Name = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Lessons, newest first: all of them, or those of one cause, provider or template."""
        wanted = {"cause": cause, "provider": provider, "template": template}
        kind, subject = subject_of(wanted) if any(wanted.values()) else (None, None)
        found = lessons.find(kind=kind, subject=subject, limit=limit)
        return {"lessons": [le.as_dict() for le in found]}

    @router.delete("/v1/lessons/{lesson_id}", tags=["diagnosis"], responses={404: {}})
    def remove_lesson(lesson_id: str, key_id: Auth) -> dict[str, Any]:
        """Remove a lesson (the audit log keeps what it said and who removed it)."""
        return {"removed": lessons.remove(lesson_id,
                                          actor=key_author(store, key_id)).as_dict()}

    return router
