"""The alert book: findings in, alerts out, the same whichever process evaluates.

One open alert per rule and scope: its ``open_key`` is unique while it is open, so two worker
processes evaluating at once insert it once (insert-or-ignore) and every later change is a
conditional update that only one of them wins: the winner attaches the incident, takes the
automatic actions and writes the timeline. Notifications are driven by what the row says was
notified, not by who won, so a process that dies after a change leaves them to the next
evaluation, and their idempotency keys make a second enqueue a replay.

An alert escalates (warn to critical, notified again), may calm down (not notified), and
resolves once its condition stayed clear for ``resolve_after`` seconds.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Connection, and_, or_, select, update

from pushguard.config import AlertRule
from pushguard.diagnosis import actions, incidents
from pushguard.diagnosis.incidents import RANK, Incidents
from pushguard.diagnosis.notify import Notifier
from pushguard.diagnosis.rules import Finding, Rules
from pushguard.exceptions import NotFound, PushguardError
from pushguard.models import new_id
from pushguard.store.schema import alerts
from pushguard.store.sql import SQLStore
from pushguard.views import rfc3339

if TYPE_CHECKING:
    from pushguard.app import App
    from pushguard.duties import Tick

log = structlog.get_logger("pushguard.alerts")
ACTOR = "alerts"


def alert_json(row: Any) -> dict[str, Any]:
    return {"id": row.id, "rule": row.rule, "scope": row.scope, "state": row.state,
            "severity": row.severity, "peak": row.peak, "value": row.value,
            "threshold": row.threshold, "sample": row.sample, "baseline": row.baseline,
            "summary": row.summary, "detail": json.loads(row.detail),
            "opened_at": rfc3339(row.opened_at), "updated_at": rfc3339(row.updated_at),
            "escalated_at": rfc3339(row.escalated_at), "resolved_at": rfc3339(row.resolved_at),
            "notified": row.notified, "incident_id": row.incident_id}


def rule_json(rule: AlertRule) -> dict[str, Any]:
    return {"rule": rule.name, "enabled": rule.enabled, "warn": rule.warn,
            "critical": rule.critical, "window": rule.window, "min_sample": rule.min_sample,
            "baseline_factor": rule.baseline_factor, "actions": list(rule.actions),
            "hold_for": rule.hold_for, "every": rule.every}


class AlertBook:
    def __init__(self, app: App) -> None:
        if not isinstance(app.store, SQLStore):
            raise PushguardError("alerts need an SQL store")
        self.app = app
        self.store: SQLStore = app.store
        self.cfg = app.config.alerts
        self.rules = Rules(self.store, app.config)
        self.incidents = Incidents(app)
        self.notifier = Notifier(app)

    # -- reading -----------------------------------------------------------------------------

    def recent(self, state: str | None = "open", rule: str | None = None,
             limit: int = 100) -> list[dict[str, Any]]:
        q = select(alerts).order_by(alerts.c.opened_at.desc()).limit(limit)
        if state:
            q = q.where(alerts.c.state == state)
        if rule:
            q = q.where(alerts.c.rule == rule)
        with self.store._read() as conn:
            return [alert_json(r) for r in conn.execute(q)]

    def get(self, alert_id: str) -> dict[str, Any]:
        with self.store._read() as conn:
            row = conn.execute(select(alerts).where(alerts.c.id == alert_id)).first()
        if row is None:
            raise NotFound(f"no alert {alert_id!r}")
        return alert_json(row)

    # -- evaluating --------------------------------------------------------------------------

    def evaluate(self, now: float | None = None, *, force: bool = False) -> dict[str, Any]:
        """Run the rules that are due (all of them with ``force``) and apply their findings;
        safe to run in any number of processes at once."""
        now = time.time() if now is None else now
        evaluated, findings = self.rules.evaluate(now, force=force)
        report: dict[str, Any] = {"evaluated": sorted(evaluated), "fired": [],
                                  "escalated": [], "resolved": []}
        seen = {f"{f.rule}|{f.scope}": f for f in findings}
        for key, f in seen.items():
            change, row = self._apply(key, f, now)
            if change is not None:
                report[change].append(row.id)
                self._act(row, f, now)
        if evaluated:
            with self.store._read() as conn:
                stale = conn.execute(select(alerts).where(
                    alerts.c.state == "open", alerts.c.rule.in_(evaluated))).all()
            for row in stale:
                if row.open_key not in seen and self._clear(row.id, now):
                    report["resolved"].append(row.id)
        self._notify_pending(now)
        report["open"] = self.recent("open", limit=1000)
        return report

    def _apply(self, key: str, f: Finding, now: float) -> tuple[str | None, Any]:
        values = {"value": f.value, "sample": f.sample, "baseline": f.baseline,
                  "summary": f.summary, "detail": json.dumps(f.detail, default=str),
                  "updated_at": now, "clear_since": None}
        with self.store._write() as conn:
            row = conn.execute(select(alerts).where(alerts.c.open_key == key)).first()
            if row is None and f.grade == "hold":
                return None, None
            if row is None:
                aid = new_id("alr")
                conn.execute(self.store._insert_ignore(alerts).values(
                    id=aid, rule=f.rule, scope=f.scope, open_key=key, state="open",
                    severity=f.grade, peak=f.grade, threshold=f.threshold, opened_at=now,
                    **values))
                # rowcount is not reliable for an ignored insert on every driver: the open
                # row's id says whose insert it was
                row = conn.execute(select(alerts).where(alerts.c.open_key == key)).first()
                if row is not None and row.id == aid:
                    self._timeline(conn, row, "alert_fired", now)
                    return "fired", row
                if row is None:  # opened and resolved by another process meanwhile
                    return None, None
            # every change is to the alert while it is open: one another process resolved
            # meanwhile is not escalated (nor acted on) again
            if f.grade == "hold":
                conn.execute(update(alerts).where(alerts.c.id == row.id,
                                                  alerts.c.state == "open").values(**values))
                return None, row
            up = update(alerts).where(alerts.c.id == row.id, alerts.c.state == "open")
            if RANK[f.grade] > RANK[row.peak]:
                won = conn.execute(up.where(alerts.c.peak == row.peak).values(
                    severity=f.grade, peak=f.grade, threshold=f.threshold, escalated_at=now,
                    **values)).rowcount
                if won:
                    row = conn.execute(select(alerts).where(alerts.c.id == row.id)).one()
                    self._timeline(conn, row, "alert_escalated", now)
                    return "escalated", row
                return None, row
            conn.execute(up.values(severity=f.grade, **values))
            return None, row

    def _timeline(self, conn: Connection, row: Any, kind: str, now: float) -> None:
        """Attach the alert to its incident (when it is severe enough) and say what
        happened there."""
        iid = row.incident_id
        if iid is None and RANK[row.severity] >= RANK[self.cfg.incident_severity]:
            rule = self.cfg.rules.get(row.rule)
            iid = incidents.attach(self.store, conn, row, now, rule.window if rule else 300.0)
        if iid is not None:
            incidents.raise_severity(conn, iid, row.severity)
            incidents.event(conn, iid, kind, f"{row.severity}: {row.summary}", actor=ACTOR,
                            detail={"alert": row.id, "rule": row.rule,
                                    "severity": row.severity}, now=now)

    def _clear(self, alert_id: str, now: float) -> bool:
        """The condition no longer holds: resolve once it stayed clear long enough."""
        with self.store._write() as conn:
            row = conn.execute(select(alerts).where(alerts.c.id == alert_id,
                                                    alerts.c.state == "open")).first()
            if row is None:
                return False
            since = row.clear_since
            if since is None:
                conn.execute(update(alerts).where(alerts.c.id == alert_id,
                                                  alerts.c.clear_since.is_(None))
                             .values(clear_since=now))
                since = now
            if now - since < self.cfg.resolve_after:
                return False
            won = conn.execute(update(alerts).where(
                alerts.c.id == alert_id, alerts.c.state == "open").values(
                state="resolved", open_key=None, resolved_at=now, updated_at=now)).rowcount
            if won and row.incident_id:
                incidents.event(conn, row.incident_id, "alert_resolved",
                                f"resolved: {row.rule} on {row.scope} (clear since "
                                f"{rfc3339(since)})", actor=ACTOR,
                                detail={"alert": row.id}, now=now)
            return bool(won)

    def _act(self, row: Any, f: Finding, now: float) -> None:
        """The rule's automatic actions, when the alert reaches action_severity."""
        rule = self.cfg.rules.get(f.rule)
        if rule is None or RANK[f.grade] < RANK[self.cfg.action_severity]:
            return
        kind, _, name = f.scope.partition(":")
        actor = f"alert:{row.id}"
        for action in rule.actions:
            try:
                if action == "pause_campaign" and kind == "campaign":
                    result = actions.pause_campaign(self.app, name, reason=f.summary,
                                                    actor=actor)
                    text = f"paused campaign {name} automatically"
                elif action == "failover" and kind == "provider":
                    result = actions.failover(self.app, name, rule.hold_for, reason=f.summary,
                                              actor=actor)
                    text = f"held provider {name} until {result['until']} automatically"
                else:
                    continue
                kind_, detail = "action", {"action": action, "result": result}
            except PushguardError as exc:
                log.error("alert_action_failed", alert=row.id, action=action, error=str(exc))
                text, kind_, detail = f"{action} failed: {exc}", "action_failed", None
            self._incident_event(row.id, kind_, text, actor, detail, now)

    def _incident_event(self, alert_id: str, kind: str, text: str, actor: str,
                        detail: dict[str, Any] | None, now: float) -> None:
        with self.store._write() as conn:
            iid = conn.execute(select(alerts.c.incident_id)
                               .where(alerts.c.id == alert_id)).scalar()
            if iid is not None:
                incidents.event(conn, iid, kind, text, actor=actor, detail=detail, now=now)

    def _notify_pending(self, now: float) -> None:
        """Notify every level not notified yet: a new alert, an escalation, a resolution."""
        open_ = and_(alerts.c.state == "open",
                     or_(alerts.c.notified.is_(None), alerts.c.notified != alerts.c.peak))
        done = and_(alerts.c.state == "resolved", alerts.c.notified.is_not(None),
                    alerts.c.notified != "resolved", alerts.c.resolved_at >= now - 86400)
        with self.store._read() as conn:
            rows = conn.execute(select(alerts).where(or_(open_, done))).all()
        for row in rows:
            level = row.peak if row.state == "open" else "resolved"
            send = level != "resolved" or self.cfg.notify_resolved
            ids = self.notifier.send(alert_json(row), level) if send else []
            with self.store._write() as conn:
                same = alerts.c.notified.is_(None) if row.notified is None \
                    else alerts.c.notified == row.notified
                won = conn.execute(update(alerts).where(alerts.c.id == row.id, same)
                                   .values(notified=level)).rowcount
                if won and ids and row.incident_id:
                    incidents.event(conn, row.incident_id, "notified",
                                    f"notified {level} to {len(ids)} target(s)", actor=ACTOR,
                                    detail={"alert": row.id, "messages": ids}, now=now)


def alerts_tick(app: App) -> Tick | None:
    """The worker duty: write this process's breaker transitions, then evaluate the rules
    every ``[alerts] every`` seconds."""
    from pushguard.diagnosis.holds import flush_circuits

    if not isinstance(app.store, SQLStore):
        return None
    store = app.store
    book = AlertBook(app) if app.config.alerts.enabled else None
    last = [0.0]

    def tick() -> None:
        flush_circuits(app, store)
        now = time.time()
        if book is not None and now - last[0] >= app.config.alerts.every:
            last[0] = now
            book.evaluate(now)

    return tick
