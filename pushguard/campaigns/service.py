"""Campaigns as the HTTP API and the CLI use them: create, check, start, pause, resume, cancel,
retry the failed, and progress.

The life of a campaign::

    draft ──start──► scheduled ──(its time)──► sending ──(all sent)──► completed
                         │                      │  ▲                      │
                         │                      ▼  │                      │ retry the failed
                         └──────────────────► paused ◄── auto-pause       ▼
                     cancel from any state but completed: cancelled     sending

Starting runs the pre-flight check: blocking findings refuse the start unless it is
overridden with a reason, and the override is recorded with the findings it overrode.
Pausing holds the campaign's queued messages (their ``next_at`` moves past any real time) so
nothing more goes out; resuming releases them, with their deadlines moved by the pause.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError
from sqlalchemy import Connection, and_, exists, func, insert, or_, select, text, update

from pushguard.campaigns.composer import Composer
from pushguard.campaigns.models import CampaignIn
from pushguard.campaigns.segments import Segments
from pushguard.exceptions import Blocked, Conflict, InputError, NotFound
from pushguard.intake import MAX_SEND_AHEAD as MAX_AHEAD
from pushguard.intake import pydantic_problems
from pushguard.models import new_id
from pushguard.store.schema import attempts, campaign_recipients, campaigns, messages
from pushguard.store.sql import HELD_AT, SQLStore, audit
from pushguard.views import rfc3339

if TYPE_CHECKING:
    from pushguard.app import App

READY = ("queued", "retry_scheduled", "deferred")
LIVE = (*READY, "sending")
FAILED = ("failed", "dead", "expired")
#: a pre-flight report younger than this, of an unchanged campaign, is reused by start
FRESH_PREFLIGHT = 600.0

#: 2000-01-01T00:00:00Z: no schedule is earlier
_EARLIEST = 946_684_800.0


def spec_of(row: Any) -> CampaignIn:
    return CampaignIn.model_validate(json.loads(row.spec)["campaign"])


def campaign_json(row: Any) -> dict[str, Any]:
    spec = json.loads(row.spec)
    return {
        "id": row.id, "name": row.name, "state": row.state, **spec["campaign"],
        "retries": spec.get("retries", []), "created_at": rfc3339(row.created_at),
        "created_by": row.created_by, "updated_at": rfc3339(row.updated_at),
        "started_at": rfc3339(row.started_at) if row.started_at else None,
        "finished_at": rfc3339(row.finished_at) if row.finished_at else None,
        "paused_reason": row.paused_reason, "recipients": max(row.recipients, 0),
        "round": row.round, "override": json.loads(row.override) if row.override else None,
        "preflight": json.loads(row.preflight) if row.preflight else None,
    }


def parse(raw: Any) -> CampaignIn:
    if not isinstance(raw, dict):
        raise InputError("body", "must be a JSON object")
    try:
        return CampaignIn.model_validate(raw)
    except ValidationError as exc:
        raise pydantic_problems(exc)[0] from exc


class Campaigns:
    def __init__(self, app: App) -> None:
        if not isinstance(app.store, SQLStore):
            raise NotFound("campaigns need the SQL store")
        self.app = app
        self.store: SQLStore = app.store
        self.segments = Segments(app.store)

    def composer(self, spec: CampaignIn) -> Composer:
        return Composer(self.app.templates, spec)

    # -- definition -------------------------------------------------------------------------

    def check(self, body: CampaignIn) -> None:
        """Everything a campaign names exists and fits; InputError naming the field."""
        self.app.intake.topic_kind(body.topic)
        for i, step in enumerate(body.channels):
            if step.channel not in self.app.config.channels:
                raise InputError(f"channels[{i}].channel", f"no provider is configured for "
                                 f"channel {step.channel!r} (configured: "
                                 f"{', '.join(sorted(self.app.config.channels))})")
        if len({s.channel for s in body.channels}) != len(body.channels):
            raise InputError("channels", "names a channel twice")
        self.segments.compile(self.segments.filter_of(body.segment, body.filter))
        s = body.schedule
        if s is not None:
            if s.at is not None and s.local_time is not None:
                raise InputError("schedule", "give at or local_time, not both")
            if s.date is not None and s.local_time is None:
                raise InputError("schedule.date", "goes with local_time")
            # a year ahead at most, as for a message's send_at; a past time means now, but
            # not one before this century (such dates overflow when a day is added or taken)
            now = time.time()
            if s.at is not None and not _EARLIEST <= s.at.timestamp() <= now + MAX_AHEAD:
                raise InputError("schedule.at", "must be within a year from now (a past "
                                 "time, from 2000 on, means now)")
            if s.date is not None and not (
                    dt.date(2000, 1, 1) <= s.date
                    <= dt.date.fromtimestamp(now + MAX_AHEAD)):
                raise InputError("schedule.date", "must be within a year from now (a past "
                                 "date, from 2000 on, means now)")
            if s.default_timezone is not None:
                try:
                    ZoneInfo(s.default_timezone)
                except (ZoneInfoNotFoundError, ValueError) as exc:
                    raise InputError("schedule.default_timezone",
                                     f"unknown timezone {s.default_timezone!r}") from exc
        if body.experiment is not None:
            names = [v.name for v in body.experiment.variants]
            if len(set(names)) != len(names):
                raise InputError("experiment.variants", "two variants have the same name")
        self.composer(body).check()

    def create(self, body: CampaignIn, *, actor: str) -> dict[str, Any]:
        self.check(body)
        now = time.time()
        with self.store._write() as conn:
            if conn.execute(select(campaigns.c.id).where(campaigns.c.name == body.name)).first():
                raise InputError("name", f"a campaign named {body.name!r} already exists")
            cid = new_id("cmp")
            conn.execute(insert(campaigns).values(
                id=cid, name=body.name, state="draft", created_at=now, updated_at=now,
                created_by=actor, recipients=0, round=0,
                spec=json.dumps({"campaign": body.model_dump(mode="json")})))
            audit(conn, actor, "campaign.create", f"campaign:{cid}", {"name": body.name}, now=now)
        return self.get(cid)

    def update(self, ref: str, body: CampaignIn, *, actor: str) -> dict[str, Any]:
        """Replace a draft's definition (a campaign that started is not edited)."""
        self.check(body)
        with self.store._write() as conn:
            row = self.find(ref, conn, lock=True)
            if row.state != "draft":
                raise Conflict(f"campaign {row.name} is {row.state}; only a draft is edited")
            if conn.execute(select(campaigns.c.id).where(
                    campaigns.c.name == body.name, campaigns.c.id != row.id)).first():
                raise InputError("name", f"a campaign named {body.name!r} already exists")
            conn.execute(update(campaigns).where(campaigns.c.id == row.id).values(
                name=body.name, updated_at=time.time(), preflight=None,
                spec=json.dumps({"campaign": body.model_dump(mode="json")})))
            audit(conn, actor, "campaign.update", f"campaign:{row.id}", {"name": body.name})
        return self.get(row.id)

    def find(self, ref: str, conn: Connection | None = None, *, lock: bool = False) -> Any:
        """The campaign row; ``lock`` (inside a write): lock it first on PostgreSQL, so a
        fan-out batch that checked the state commits before this transaction reads the
        campaign's messages, or sees the new state and does not commit."""
        def look(c: Connection) -> Any:
            q = select(campaigns).where((campaigns.c.id == ref) | (campaigns.c.name == ref))
            if lock and self.store.dialect == "postgresql":
                q = q.with_for_update()
            return c.execute(q).first()

        if conn is not None:
            row = look(conn)
        else:
            with self.store._read() as c:
                row = look(c)
        if row is None:
            raise NotFound(f"no campaign {ref!r}")
        return row

    def get(self, ref: str) -> dict[str, Any]:
        row = self.find(ref)
        return {**campaign_json(row), "progress": self.progress(row.id)}

    def list_all(self, *, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        q = select(campaigns).order_by(campaigns.c.created_at.desc()).limit(limit)
        if state is not None:
            q = q.where(campaigns.c.state == state)
        with self.store._read() as conn:
            return [campaign_json(r) for r in conn.execute(q)]

    # -- life -------------------------------------------------------------------------------

    def start(self, ref: str, *, actor: str, override: str | None = None) -> dict[str, Any]:
        """Check, then start sending (or schedule). Refuses (Blocked) on blocking findings
        unless ``override`` gives the reason to send anyway."""
        from pushguard.campaigns.preflight import Preflight

        row = self.find(ref)
        if row.state != "draft":
            raise Conflict(f"campaign {row.name} is {row.state}; only a draft is started")
        report = self._fresh_preflight(row) or Preflight(self).run(row.id)
        blocking = [f for f in report["findings"] if f["severity"] == "block"]
        if blocking and not override:
            raise Blocked(f"pre-flight found {len(blocking)} blocking problem(s): "
                          + "; ".join(f["problem"] for f in blocking[:3]), blocking)
        spec = spec_of(row)
        now = time.time()
        at = spec.schedule.at.timestamp() if spec.schedule and spec.schedule.at else now
        with self.store._write() as conn:
            values: dict[str, Any] = {"state": "scheduled" if at > now else "sending",
                                      "started_at": at, "updated_at": now, "recipients": -1}
            if blocking:
                values["override"] = json.dumps({
                    "by": actor, "at": rfc3339(now), "reason": override,
                    "findings": [{k: f[k] for k in ("code", "problem", "count")}
                                 for f in blocking]})
                audit(conn, actor, "campaign.override", f"campaign:{row.id}",
                      {"reason": override, "codes": [f["code"] for f in blocking]}, now=now)
            got = conn.execute(update(campaigns).where(
                campaigns.c.id == row.id, campaigns.c.state == "draft").values(**values))
            if got.rowcount != 1:
                raise Conflict(f"campaign {row.name} was started meanwhile")
            audit(conn, actor, "campaign.start", f"campaign:{row.id}",
                  {"at": rfc3339(at)}, now=now)
        return self.get(row.id)

    def _fresh_preflight(self, row: Any) -> dict[str, Any] | None:
        if not row.preflight:
            return None
        report: dict[str, Any] = json.loads(row.preflight)
        if time.time() - float(report.get("checked_at_ts", 0)) > FRESH_PREFLIGHT \
                or report.get("updated_at_ts") != row.updated_at \
                or report.get("templates_mark") != templates_mark(self.store):
            return None
        return report

    def pause(self, ref: str, *, reason: str, actor: str) -> dict[str, Any]:
        """Stop fanning out and hold the campaign's waiting messages (idempotent)."""
        now = time.time()
        with self.store._write() as conn:
            row = self.find(ref, conn, lock=True)
            if row.state == "paused":
                return campaign_json(row)
            if row.state not in ("scheduled", "sending"):
                raise Conflict(f"campaign {row.name} is {row.state}; only a scheduled or "
                               "sending campaign is paused")
            held = hold(conn, row.id, now, f"held: campaign paused by {actor} ({reason})")
            conn.execute(update(campaigns).where(campaigns.c.id == row.id).values(
                state="paused", paused_at=now, paused_reason=f"{reason} (by {actor})",
                updated_at=now, lease_owner=None, lease_until=None))
            audit(conn, actor, "campaign.pause", f"campaign:{row.id}",
                  {"reason": reason, "held": held}, now=now)
        return {**self.get(row.id), "held": held}

    def resume(self, ref: str, *, actor: str) -> dict[str, Any]:
        now = time.time()
        with self.store._write() as conn:
            row = self.find(ref, conn, lock=True)
            if row.state != "paused":
                raise Conflict(f"campaign {row.name} is {row.state}; only a paused one resumes")
            shift = now - (row.paused_at or now)
            ids = _ids(conn, row.id, "m.next_at >= :held", {"held": HELD_AT})
            _event(conn, row.id, now, f"released: campaign resumed by {actor}",
                   "m.next_at >= :held", {"held": HELD_AT})
            # updated_at stays: a release is not a try, and auto-pause judges the messages
            # that moved since the resume (their old failures would pause it again at once)
            conn.execute(update(messages).where(
                messages.c.campaign_id == row.id, messages.c.state.in_(READY),
                messages.c.next_at >= HELD_AT).values(
                next_at=now, expires_at=messages.c.expires_at + shift))
            state = "sending" if (row.started_at or 0) <= now else "scheduled"
            conn.execute(update(campaigns).where(campaigns.c.id == row.id).values(
                state=state, paused_at=None, paused_reason=None, updated_at=now))
            _set_window(conn, row.id, now)
            audit(conn, actor, "campaign.resume", f"campaign:{row.id}",
                  {"released": len(ids)}, now=now)
        return {**self.get(row.id), "released": len(ids)}

    def cancel(self, ref: str, *, actor: str) -> dict[str, Any]:
        """Stop for good: recipients not yet sent are skipped; waiting messages are not sent
        (``suppressed``, the reason recorded). Messages already with a provider finish."""
        now = time.time()
        with self.store._write() as conn:
            row = self.find(ref, conn, lock=True)
            if row.state in ("completed", "cancelled"):
                raise Conflict(f"campaign {row.name} is already {row.state}")
            why = f"campaign cancelled by {actor}"
            failure = json.dumps({"cause": "POLICY_SUPPRESSED", "transient": False,
                                  "provider_code": None, "explanation": why,
                                  "fix": "Nothing to do: the campaign was cancelled.",
                                  "provider": None, "rule": "campaign"})
            cond = "m.state IN ('queued', 'retry_scheduled', 'deferred')"
            _event(conn, row.id, now, why, cond, {}, dst="suppressed",
                   cause="POLICY_SUPPRESSED")
            stopped = conn.execute(update(messages).where(
                messages.c.campaign_id == row.id, messages.c.state.in_(READY)).values(
                state="suppressed", updated_at=now, last_cause="POLICY_SUPPRESSED",
                failure=failure)).rowcount
            skipped = conn.execute(update(campaign_recipients).where(
                campaign_recipients.c.campaign_id == row.id,
                campaign_recipients.c.state == "pending").values(
                state="skipped", detail=why)).rowcount
            conn.execute(update(campaigns).where(campaigns.c.id == row.id).values(
                state="cancelled", finished_at=now, updated_at=now, lease_owner=None,
                lease_until=None))
            audit(conn, actor, "campaign.cancel", f"campaign:{row.id}",
                  {"stopped": stopped, "skipped": skipped}, now=now)
        return {**self.get(row.id), "stopped": stopped, "skipped": skipped}

    def retry_failed(self, ref: str, *, actor: str, causes: list[str] | None = None,
                     via: str | None = None) -> dict[str, Any]:
        """Send again to the recipients whose message failed (and whom no fallback reached),
        optionally only for some causes, optionally through another provider first."""
        now = time.time()
        with self.store._write() as conn:
            row = self.find(ref, conn, lock=True)
            if row.state not in ("completed", "paused", "sending"):
                raise Conflict(f"campaign {row.name} is {row.state}; the failed of a sending, "
                               "paused or completed campaign are retried")
            spec = spec_of(row)
            if via is not None:
                names = {n for s in spec.channels
                         for n in self.app.config.channels.get(s.channel, ())}
                if via not in names:
                    raise InputError("via", f"{via!r} is not a provider of this campaign's "
                                     f"channels (they are: {', '.join(sorted(names))})")
            # reached, or still on the way (a fallback leg, a retry): not theirs to retry
            reached = select(messages.c.contact_id).where(
                messages.c.campaign_id == row.id, messages.c.contact_id.is_not(None),
                messages.c.state.in_(("delivered", *LIVE)))
            failed = select(messages.c.id).where(
                messages.c.campaign_id == row.id, messages.c.state.in_(FAILED),
                messages.c.contact_id.not_in(reached))
            if causes:
                # an expired message carries EXPIRED; the cause that kept it from being
                # delivered in time (an outage, say) is on its attempts
                m, a = messages.c, attempts.c
                failed = failed.where(or_(m.last_cause.in_(causes), and_(
                    m.state == "expired", exists().where(a.message_id == m.id,
                                                         a.cause.in_(causes)))))
            r = campaign_recipients
            new_round = row.round + 1
            n = conn.execute(update(r).where(
                r.c.campaign_id == row.id, r.c.state == "enqueued",
                r.c.message_id.in_(failed)).values(
                state="pending", round=new_round, due_at=now,
                detail=f"retry round {new_round}")).rowcount
            if n == 0:
                raise Conflict("no failed recipient to retry" + (
                    f" with cause {', '.join(causes)}" if causes else ""))
            body = json.loads(row.spec)
            body.setdefault("retries", []).append(
                {"round": new_round, "at": rfc3339(now), "by": actor, "causes": causes,
                 "via": via, "recipients": n})
            conn.execute(update(campaigns).where(campaigns.c.id == row.id).values(
                spec=json.dumps(body), round=new_round, updated_at=now, finished_at=None,
                state="paused" if row.state == "paused" else "sending"))
            _set_window(conn, row.id, now)
            audit(conn, actor, "campaign.retry", f"campaign:{row.id}",
                  {"round": new_round, "causes": causes, "via": via, "recipients": n}, now=now)
        return {**self.get(row.id), "retrying": n}

    # -- progress ---------------------------------------------------------------------------

    def progress(self, campaign_id: str) -> dict[str, Any]:
        """Recipients by state, messages by state, delivery and failure rates so far."""
        with self.store._read() as conn:
            rec: dict[str, int] = dict(conn.execute(
                select(campaign_recipients.c.state, func.count()).where(
                    campaign_recipients.c.campaign_id == campaign_id)
                .group_by(campaign_recipients.c.state)).all())
            msgs: dict[str, int] = dict(conn.execute(
                select(messages.c.state, func.count()).where(
                    messages.c.campaign_id == campaign_id).group_by(messages.c.state)).all())
            reached = int(conn.execute(
                select(func.count(func.distinct(messages.c.contact_id))).where(
                    messages.c.campaign_id == campaign_id,
                    messages.c.state == "delivered")).scalar_one())
            variants = conn.execute(text(
                "SELECT r.variant, m.state, COUNT(*) FROM campaign_recipients r "
                "JOIN messages m ON m.id = r.message_id WHERE r.campaign_id = :c "
                "AND r.variant IS NOT NULL GROUP BY r.variant, m.state"),
                {"c": campaign_id}).all()
        delivered = msgs.get("delivered", 0)
        failed = sum(msgs.get(s, 0) for s in FAILED)
        finished = delivered + failed
        out: dict[str, Any] = {
            "recipients": {k: int(v) for k, v in rec.items()},
            "messages": {k: int(v) for k, v in msgs.items()},
            "delivered": delivered, "failed": failed,
            "not_sent": msgs.get("suppressed", 0),
            "waiting": sum(msgs.get(s, 0) for s in LIVE),
            "failure_rate": round(failed / finished, 4) if finished else None,
            #: recipients at least one message of the campaign reached (by a fallback leg
            #: or a retry round too): failure_rate counts messages, this counts people
            "reached": reached,
        }
        if variants:
            per: dict[str, dict[str, int]] = {}
            for v, st, n in variants:
                per.setdefault(v, {})[st] = int(n)
            out["variants"] = per
        return out


def templates_mark(store: SQLStore) -> str:
    """What changes whenever a template, a layout or a partial gets a new version (they are
    only ever added): a pre-flight report about other templates than today's is stale."""
    from pushguard.store.schema import template_versions, templates

    with store._read() as conn:
        n = conn.execute(select(func.count()).select_from(templates)).scalar_one()
        v = conn.execute(select(func.count()).select_from(template_versions)).scalar_one()
    return f"{n}:{v}"


def hold(conn: Connection, campaign_id: str, now: float, why: str) -> int:
    """Hold the campaign's waiting messages (none is claimed until they are released)."""
    cond = "m.state IN ('queued', 'retry_scheduled', 'deferred') AND m.next_at < :held"
    _event(conn, campaign_id, now, why, cond, {"held": HELD_AT})
    return int(conn.execute(update(messages).where(
        messages.c.campaign_id == campaign_id, messages.c.state.in_(READY),
        messages.c.next_at < HELD_AT).values(next_at=HELD_AT, updated_at=now)).rowcount)


def _ids(conn: Connection, campaign_id: str, cond: str, params: dict[str, Any]) -> list[str]:
    return [r[0] for r in conn.execute(text(
        f"SELECT m.id FROM messages m WHERE m.campaign_id = :c AND "
        f"m.state IN ('queued', 'retry_scheduled', 'deferred') AND {cond}"),
        {"c": campaign_id, **params})]


def _event(conn: Connection, campaign_id: str, now: float, reason: str, cond: str,
           params: dict[str, Any], *, dst: str | None = None, cause: str | None = None) -> None:
    """One event per matching message of the campaign, in one statement (without ``dst``:
    a note that does not change the state, like a hold)."""
    conn.execute(text(
        "INSERT INTO events (message_id, at, src, dst, reason, cause) "
        f"SELECT m.id, :now, {'NULL' if dst is None else 'm.state'}, "
        f"{'m.state' if dst is None else ':dst'}, :reason, :cause "
        f"FROM messages m WHERE m.campaign_id = :c AND {cond}"),
        {"c": campaign_id, "now": now, "reason": reason, "dst": dst, "cause": cause, **params})


def _set_window(conn: Connection, campaign_id: str, now: float) -> None:
    """Auto-pause judges the failures since this moment (a start, a resume, a retry)."""
    row = conn.execute(select(campaigns.c.spec).where(campaigns.c.id == campaign_id)).one()
    body = json.loads(row.spec)
    body["window_from"] = now
    conn.execute(update(campaigns).where(campaigns.c.id == campaign_id).values(
        spec=json.dumps(body)))
