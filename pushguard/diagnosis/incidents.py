"""Incidents: alerts of one scope grouped, with a timeline, a blast radius and actions.

An alert at ``incident_severity`` or above opens an incident for its scope, or joins the open
one (a unique key on the open scope keeps it to one across processes). The blast radius is read
from the messages that failed in the incident's scope since its window began; its actions are
pausing a campaign, holding a provider (failover), and replaying the affected messages through
another provider or channel, once per message (an idempotency key per incident and message).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, func, insert, or_, select, update

from pushguard import taxonomy
from pushguard.diagnosis.measures import window_filter
from pushguard.exceptions import InputError, NotFound
from pushguard.models import new_id
from pushguard.store.schema import alerts, incident_events, incidents, messages
from pushguard.store.sql import SQLStore
from pushguard.views import rfc3339

if TYPE_CHECKING:
    from pushguard.app import App

RANK = {"warn": 1, "critical": 2}
TOP = 10


def event(conn: Connection, incident_id: str, kind: str, message: str, *, actor: str,
          detail: dict[str, Any] | None = None, now: float | None = None) -> None:
    """Append one entry to an incident's timeline, inside the caller's transaction."""
    now = time.time() if now is None else now
    conn.execute(insert(incident_events).values(
        incident_id=incident_id, at=now, kind=kind, actor=actor[:64], message=message,
        detail=json.dumps(detail, default=str) if detail else None))
    conn.execute(update(incidents).where(incidents.c.id == incident_id).values(updated_at=now))


def attach(store: SQLStore, conn: Connection, alert: Any, now: float, window: float) -> str:
    """The open incident of the alert's scope (opened now if there is none), with the alert
    attached to it."""
    found = conn.execute(select(incidents.c.id, incidents.c.severity)
                         .where(incidents.c.open_key == alert.scope)).first()
    if found is None:
        iid = new_id("inc")
        conn.execute(store._insert_ignore(incidents).values(
            id=iid, scope=alert.scope, open_key=alert.scope, state="open",
            severity=alert.severity, title=f"{alert.rule} on {alert.scope}", opened_at=now,
            updated_at=now, window_start=now - window))
        found = conn.execute(select(incidents.c.id, incidents.c.severity)
                             .where(incidents.c.open_key == alert.scope)).one()
    conn.execute(update(alerts).where(alerts.c.id == alert.id).values(incident_id=found.id))
    raise_severity(conn, str(found.id), alert.severity)
    return str(found.id)


def raise_severity(conn: Connection, incident_id: str, severity: str) -> None:
    """An incident is as severe as the worst alert it has seen."""
    lower = [s for s, r in RANK.items() if r < RANK[severity]]
    conn.execute(update(incidents).where(incidents.c.id == incident_id,
                                         incidents.c.severity.in_(lower))
                 .values(severity=severity))


def scope_filter(scope: str, channels_of: dict[str, list[str]]) -> Any:
    """The messages an incident's scope covers."""
    kind, _, name = scope.partition(":")
    if kind == "provider":
        # those it took last, and those of its channels that never reached any provider
        return or_(messages.c.last_provider == name,
                   and_(messages.c.last_provider.is_(None),
                        messages.c.channel.in_(channels_of.get(name, []))))
    if kind == "destinations":  # some of a provider's destinations: its messages
        return messages.c.last_provider == name
    if kind == "channel":
        return messages.c.channel == name
    if kind == "campaign":
        return messages.c.campaign_id == name
    return messages.c.id.is_not(None)


class Incidents:
    def __init__(self, app: App) -> None:
        self.app = app
        assert isinstance(app.store, SQLStore)
        self.store: SQLStore = app.store
        self.channels_of: dict[str, list[str]] = {}
        for channel, names in app.config.channels.items():
            for name in names:
                self.channels_of.setdefault(name, []).append(channel)

    def row(self, conn: Connection, incident_id: str) -> Any:
        row = conn.execute(select(incidents).where(incidents.c.id == incident_id)).first()
        if row is None:
            raise NotFound(f"no incident {incident_id!r}")
        return row

    def failed(self, row: Any) -> Any:
        """The condition on messages that make up this incident's blast radius."""
        until = row.closed_at if row.closed_at is not None else time.time() + 1
        return and_(window_filter(row.window_start, until),
                    scope_filter(row.scope, self.channels_of))

    def recent(self, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        q = select(incidents).order_by(incidents.c.opened_at.desc()).limit(limit)
        if state:
            q = q.where(incidents.c.state == state)
        with self.store._read() as conn:
            return [_json(r) for r in conn.execute(q)]

    def show(self, incident_id: str) -> dict[str, Any]:
        from pushguard.diagnosis.alerts import alert_json

        with self.store._read() as conn:
            row = self.row(conn, incident_id)
            cond = self.failed(row)
            n, people = conn.execute(select(
                func.count(), func.count(func.distinct(func.coalesce(
                    messages.c.contact_id, messages.c.to_addr)))).where(cond)).one()

            def top(col: Any) -> list[tuple[Any, int]]:
                q = (select(col, func.count()).where(cond).group_by(col)
                     .order_by(func.count().desc()).limit(TOP))
                return [(k, int(c)) for k, c in conn.execute(q)]

            radius = {"messages": int(n), "recipients": int(people),
                      "campaigns": [{"campaign": k, "messages": c}
                                    for k, c in top(messages.c.campaign_id) if k],
                      "channels": [{"channel": k, "messages": c}
                                   for k, c in top(messages.c.channel)],
                      "providers": [{"provider": k, "messages": c}
                                    for k, c in top(messages.c.last_provider) if k]}
            causes = [{"cause": k, "count": c, "fix": taxonomy.get(k).fix}
                      for k, c in top(messages.c.last_cause) if k]
            timeline = [{"at": rfc3339(e.at), "kind": e.kind, "actor": e.actor,
                         "message": e.message,
                         "detail": json.loads(e.detail) if e.detail else None}
                        for e in conn.execute(select(incident_events).where(
                            incident_events.c.incident_id == incident_id)
                            .order_by(incident_events.c.id))]
            found = [alert_json(a) for a in conn.execute(
                select(alerts).where(alerts.c.incident_id == incident_id)
                .order_by(alerts.c.opened_at))]
        return {**_json(row), "blast_radius": radius, "top_causes": causes,
                "alerts": found, "timeline": timeline}

    def note(self, incident_id: str, text: str, *, actor: str) -> dict[str, Any]:
        text = text.strip()
        if not text or len(text) > 4000:
            raise InputError("note", "must be 1 to 4000 characters")
        with self.store._write() as conn:
            self.row(conn, incident_id)
            event(conn, incident_id, "note", text, actor=actor)
        return self.show(incident_id)

    def close(self, incident_id: str, note: str, *, actor: str) -> dict[str, Any]:
        note = note.strip()
        if not note or len(note) > 4000:
            raise InputError("note", "is required when closing: what happened, what was done")
        now = time.time()
        with self.store._write() as conn:
            if self.row(conn, incident_id).state != "open":
                raise InputError("incident", "is already closed")
            conn.execute(update(incidents).where(incidents.c.id == incident_id).values(
                state="closed", open_key=None, closed_at=now, closed_by=actor[:64], note=note,
                updated_at=now))
            event(conn, incident_id, "closed", note, actor=actor, now=now)
        return self.show(incident_id)

    def affected(self, incident_id: str, limit: int) -> list[Any]:
        """The failed messages to replay, oldest first: not replays themselves, and not those
        whose recipient was reached since (or is being reached) by another message of the
        same campaign or topic, so no one gets the same message twice."""
        from pushguard.diagnosis.replay import REPLAY_SCOPE

        later = messages.alias("later")
        # reached since, or being reached: a fallback leg, a retry round, another incident's
        # replay (replays keep the contact), or a later message of the same topic
        reached = select(later.c.id).where(
            later.c.id != messages.c.id, later.c.created_at >= messages.c.created_at,
            later.c.state.in_(("delivered", "queued", "retry_scheduled", "deferred",
                               "sending")),
            or_(and_(messages.c.contact_id.is_not(None),
                     later.c.contact_id == messages.c.contact_id),
                and_(messages.c.contact_id.is_(None), later.c.channel == messages.c.channel,
                     later.c.to_addr == messages.c.to_addr)),
            or_(later.c.parent_id == messages.c.id,
                later.c.campaign_id == messages.c.campaign_id,
                later.c.topic == messages.c.topic)).exists()
        with self.store._read() as conn:
            row = self.row(conn, incident_id)
            q = (select(messages).where(
                self.failed(row), ~reached,
                or_(messages.c.idem_scope.is_(None), messages.c.idem_scope != REPLAY_SCOPE))
                .order_by(messages.c.created_at).limit(limit))
            return list(conn.execute(q))


def _json(row: Any) -> dict[str, Any]:
    return {"id": row.id, "scope": row.scope, "state": row.state, "severity": row.severity,
            "title": row.title, "opened_at": rfc3339(row.opened_at),
            "updated_at": rfc3339(row.updated_at),
            "window_start": rfc3339(row.window_start),
            "closed_at": rfc3339(row.closed_at), "closed_by": row.closed_by, "note": row.note}
