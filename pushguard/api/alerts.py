"""Alerts, incidents and provider holds over HTTP: a thin edge over :mod:`pushguard.diagnosis`.

Reading is ``GET /v1/alerts``, ``/v1/incidents`` and their ids; an incident's actions are
``POST /v1/incidents/{id}/replay | close | notes | actions``; ``POST /v1/providers/{name}/hold``
takes a provider out of routing in every worker for a while, ``DELETE`` gives it back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from pushguard.api.auth import Auth
from pushguard.api.body import CheckedRoute
from pushguard.api.errors import AUTHED
from pushguard.diagnosis import actions
from pushguard.diagnosis.alerts import AlertBook, rule_json
from pushguard.diagnosis.holds import Holds, parse_duration
from pushguard.diagnosis.incidents import Incidents
from pushguard.diagnosis.replay import replay
from pushguard.exceptions import NotFound
from pushguard.store.schema import alerts, incidents
from pushguard.store.sql import SQLStore

if TYPE_CHECKING:
    from pushguard.app import App

Duration = Annotated[str | float, Field(description="seconds, or 90s, 10m, 2h, 1d")]


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    via: str | None = Field(default=None, max_length=64,
                            description="a provider of the messages' channel, tried first")
    channel: str | None = Field(default=None, max_length=32,
                                description="another channel: the contact's active address")


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(min_length=1, max_length=4000)


class ActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    action: Literal["pause", "failover"]
    campaign: str | None = Field(default=None, max_length=128)
    provider: str | None = Field(default=None, max_length=64)
    duration: Duration | None = Field(default=None, alias="for")
    reason: str | None = Field(default=None, max_length=500)


class HoldIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    duration: Duration = Field(alias="for")
    reason: str = Field(min_length=1, max_length=500)


def open_counts(store: SQLStore) -> tuple[dict[tuple[str, str], int], int]:
    """Open alerts by (rule, severity) and open incidents, for the metrics."""
    with store._read() as conn:
        by = {(r, s): int(n) for r, s, n in conn.execute(
            select(alerts.c.rule, alerts.c.severity, func.count())
            .where(alerts.c.state == "open").group_by(alerts.c.rule, alerts.c.severity))}
        n = conn.execute(select(func.count()).select_from(incidents)
                         .where(incidents.c.state == "open")).scalar()
    return by, int(n or 0)


def alerts_router(app: App) -> APIRouter:
    router = APIRouter(route_class=CheckedRoute, responses=AUTHED)
    assert isinstance(app.store, SQLStore)
    store: SQLStore = app.store
    app.metrics.watch_alerts(lambda: open_counts(store))
    book = AlertBook(app)
    book_of_incidents = Incidents(app)
    holds = Holds(store, app.config.providers)

    def state_of(state: str) -> str | None:
        return None if state == "all" else state

    @router.get("/v1/alerts", tags=["alerts"])
    def list_alerts(
        _: Auth, state: Literal["open", "resolved", "all"] = "open",
        rule: Annotated[str | None, Query(max_length=32)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Alerts, newest first (open ones by default)."""
        return {"alerts": book.recent(state_of(state), rule, limit)}

    @router.get("/v1/alerts/rules", tags=["alerts"])
    def list_rules(_: Auth) -> dict[str, Any]:
        """The alert rules in force and their thresholds."""
        return {"rules": [rule_json(r) for r in app.config.alerts.rules.values()]}

    @router.post("/v1/alerts/check", tags=["alerts"])
    def check(_: Auth) -> dict[str, Any]:
        """Evaluate every rule now (workers do it on their own every few seconds)."""
        return book.evaluate(force=True)

    @router.get("/v1/alerts/{alert_id}", tags=["alerts"], responses={404: {}})
    def get_alert(alert_id: str, _: Auth) -> dict[str, Any]:
        """One alert: its figures, its evidence and its incident."""
        return book.get(alert_id)

    @router.get("/v1/incidents", tags=["incidents"])
    def list_incidents(
        _: Auth, state: Literal["open", "closed", "all"] = "all",
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> dict[str, Any]:
        """Incidents, newest first."""
        return {"incidents": book_of_incidents.recent(state_of(state), limit)}

    @router.get("/v1/incidents/{incident_id}", tags=["incidents"], responses={404: {}})
    def get_incident(incident_id: str, _: Auth) -> dict[str, Any]:
        """One incident: timeline, blast radius, top causes with fixes, its alerts."""
        return book_of_incidents.show(incident_id)

    @router.post("/v1/incidents/{incident_id}/replay", tags=["incidents"],
                 responses={404: {}, 422: {}})
    def replay_incident(incident_id: str, body: ReplayIn, key_id: Auth) -> dict[str, Any]:
        """Send the affected messages again through a provider or on another channel (once
        per message, however often this is called)."""
        return replay(app, book_of_incidents, incident_id, via=body.via, channel=body.channel,
                      actor=f"key:{key_id}")

    @router.post("/v1/incidents/{incident_id}/close", tags=["incidents"],
                 responses={404: {}, 422: {}})
    def close_incident(incident_id: str, body: NoteIn, key_id: Auth) -> dict[str, Any]:
        """Close the incident with a note saying what happened and what was done."""
        return book_of_incidents.close(incident_id, body.note, actor=f"key:{key_id}")

    @router.post("/v1/incidents/{incident_id}/notes", tags=["incidents"], status_code=201,
                 responses={404: {}, 422: {}})
    def add_note(incident_id: str, body: NoteIn, key_id: Auth) -> dict[str, Any]:
        """Add a note to the incident's timeline."""
        return book_of_incidents.note(incident_id, body.note, actor=f"key:{key_id}")

    @router.post("/v1/incidents/{incident_id}/actions", tags=["incidents"],
                 responses={404: {}, 422: {}})
    def act(incident_id: str, body: ActionIn, key_id: Auth) -> dict[str, Any]:
        """Pause a campaign, or fail over (hold a provider for a while, default 10 min)."""
        return actions.act(app, incident_id, body.action, actor=f"key:{key_id}",
                           campaign=body.campaign, provider=body.provider,
                           duration=body.duration, reason=body.reason)

    @router.get("/v1/providers/holds", tags=["providers"])
    def list_holds(_: Auth) -> dict[str, Any]:
        """Providers held out of routing now."""
        return {"holds": holds.active()}

    @router.post("/v1/providers/{name}/hold", tags=["providers"], responses={404: {}, 422: {}})
    def hold(name: str, body: HoldIn, key_id: Auth) -> dict[str, Any]:
        """Route nothing through this provider for a while, in every worker."""
        return holds.hold(name, parse_duration(body.duration, "for"), reason=body.reason,
                          actor=f"key:{key_id}")

    @router.delete("/v1/providers/{name}/hold", tags=["providers"], status_code=204,
                   responses={404: {}})
    def release(name: str, key_id: Auth) -> None:
        """Give the provider back to routing."""
        if not holds.release(name, actor=f"key:{key_id}"):
            raise NotFound(f"provider {name!r} is not held")

    return router
