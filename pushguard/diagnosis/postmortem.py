"""Post-mortem reports: the story of a campaign, or of an incident, told once it is over.

Both reports have the same sections: a one-paragraph ``summary`` (what happened, the outcome,
the verdict); the ``impact`` (delivered, failed, not sent by policy, deferred, unsubscribed and
complained since it started, what the providers charged); a ``timeline``; the root ``causes``
with counts, provider codes, example messages, the taxonomy's fix, the operators' lessons, and
the pre-flight ``checks`` that would have caught each; what was done (``actions``: overrides,
retries, replays, holds, pauses); ``recommendations``; and, when a fix was applied, a
``comparison`` of the failure rate before it and after it (a two-proportion z-test).

A campaign's messages are read through its partial index, an incident's through its window;
every count is a GROUP BY and every list is bounded. Which pre-flight check catches which
cause is :mod:`.prevention`'s; :mod:`.report_md` and :mod:`.report_html` only format what this
returns.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Integer, and_, case, cast, func, literal_column, or_, select
from sqlalchemy.sql.elements import ColumnElement

from pushguard import taxonomy
from pushguard.diagnosis.compare import two_proportions
from pushguard.diagnosis.failures import pct
from pushguard.diagnosis.lessons import Lessons, Subject, notes_json
from pushguard.diagnosis.measures import LOOKBACK, not_alerts
from pushguard.diagnosis.prevention import (
    caught_by,
    findings_by_code,
    loads,
    overridden_causes,
    recommend,
)
from pushguard.diagnosis.replay import REPLAY_SCOPE
from pushguard.exceptions import NotFound, PushguardError
from pushguard.models import new_id
from pushguard.store.schema import (
    alerts,
    attempts,
    audit_log,
    campaign_recipients,
    campaigns,
    consent_ledger,
    events,
    incident_events,
    messages,
    suppressions,
)
from pushguard.store.sql import SQLStore
from pushguard.views import rfc3339

if TYPE_CHECKING:
    from pushguard.app import App

MAX_CAUSES = 20
EXAMPLES = 5
CODES = 5
MAX_BUCKETS = 60
MAX_EVENTS = 200
FAILED = ("failed", "dead", "expired")
#: round bucket sizes for the failure-rate chart; the smallest giving <= MAX_BUCKETS is used
BUCKETS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200,
           10800, 21600, 43200, 86400, 2 * 86400, 7 * 86400, 30 * 86400)
#: replays carry the idempotency key ``replay:<incident id>:<message id>`` (:mod:`.replay`)
_REPLAY = "replay:"
_INCIDENT_ID = len(new_id("inc"))
#: "after a fix" is compared over as long as "before" was, at least this long
MIN_AFTER = 600.0

_AUDIT = {"campaign.create": "created", "campaign.update": "definition changed",
          "campaign.start": "started", "campaign.override": "pre-flight overridden",
          "campaign.pause": "paused", "campaign.resume": "resumed",
          "campaign.retry": "retry", "campaign.cancel": "cancelled",
          "campaign.test_send": "test send"}


def _sql(app: App) -> SQLStore:
    if not isinstance(app.store, SQLStore):
        raise PushguardError("post-mortem reports need the SQL store")
    return app.store


def _event(ts: float, kind: str, actor: str, text: str) -> dict[str, Any]:
    return {"ts": ts, "at": rfc3339(ts), "kind": kind, "actor": actor, "text": text}


def _timeline(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    ordered = sorted(items, key=lambda e: e["ts"])[:MAX_EVENTS]
    return [{k: v for k, v in e.items() if k != "ts"} for e in ordered]


def _who() -> ColumnElement[Any]:
    """A message's recipient: its contact, or its address when it names none."""
    return func.coalesce(messages.c.contact_id, messages.c.to_addr)


# -- counting ----------------------------------------------------------------------------------

def _states(conn: Connection, cond: ColumnElement[bool]) -> dict[str, int]:
    q = select(messages.c.state, func.count()).where(cond).group_by(messages.c.state)
    return {str(s): int(n) for s, n in conn.execute(q)}


def _impact(conn: Connection, cond: ColumnElement[bool]) -> dict[str, Any]:
    """Messages by outcome, recipients reached and not, and how many were ever deferred."""
    st = _states(conn, cond)
    total = sum(st.values())
    delivered, suppressed = st.get("delivered", 0), st.get("suppressed", 0)
    failed = sum(st.get(s, 0) for s in FAILED)
    m = messages.c
    reached = select(_who()).where(cond, m.state == "delivered")
    people, got = conn.execute(select(
        func.count(func.distinct(_who())),
        func.count(func.distinct(case((m.state == "delivered", _who()))))).where(cond)).one()
    unreached = conn.execute(select(func.count(func.distinct(_who()))).where(
        cond, m.state.in_(FAILED), _who().not_in(reached))).scalar_one()
    # not reached because the gate stopped every message to them (consent, suppression,
    # caps), none of which failed: the recipients the counts above would otherwise lose
    failed_once = select(_who()).where(cond, m.state.in_(FAILED))
    withheld = conn.execute(select(func.count(func.distinct(_who()))).where(
        cond, m.state == "suppressed", _who().not_in(reached),
        _who().not_in(failed_once))).scalar_one()
    deferred = conn.execute(select(func.count(func.distinct(events.c.message_id))).select_from(
        events.join(messages, events.c.message_id == m.id)).where(
        cond, events.c.dst == "deferred")).scalar_one()
    return {"messages": total, "delivered": delivered, "failed": failed,
            "not_sent": suppressed, "pending": total - delivered - failed - suppressed,
            "deferred": int(deferred), "failure_rate": _rate(failed, delivered + failed),
            "recipients": int(people), "reached": int(got), "unreached": int(unreached),
            "withheld": int(withheld)}


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def _left(conn: Connection, contacts: Any, cond: ColumnElement[bool], since: float
          ) -> dict[str, Any]:
    """Distinct people who unsubscribed or complained since ``since``: the consent ledger of
    ``contacts``, and suppressions of the addresses of the messages matching ``cond``."""
    cl, s, m = consent_ledger.c, suppressions.c, messages.c
    ledger = select(cl.source.label("kind"), cl.contact_id.label("who")).where(
        cl.contact_id.in_(contacts), cl.source.in_(("unsubscribe", "complaint")),
        cl.at >= since)
    kind = case((s.reason == "unsubscribe", "unsubscribe"), else_="complaint")
    listed = select(kind.label("kind"), _who().label("who")).select_from(
        suppressions.join(messages, and_(m.channel == s.channel, m.to_addr == s.address))
    ).where(cond, s.reason.in_(("unsubscribe", "complaint", "NO_CONSENT")),
            s.created_at >= since)
    both = ledger.union_all(listed).subquery()
    q = (select(both.c.kind, func.count(func.distinct(both.c.who)))
         .group_by(both.c.kind))
    found = {str(k): int(n) for k, n in conn.execute(q)}
    return {"unsubscribed": found.get("unsubscribe", 0),
            "complained": found.get("complaint", 0), "since": rfc3339(since) or ""}


def _cost(app: App, conn: Connection, cond: ColumnElement[bool]) -> dict[str, Any]:
    """What the providers charged: their ``cost`` option x the messages they delivered."""
    m = messages.c
    q = (select(m.last_provider, func.count(),
                func.sum(case((m.state == "delivered", 1), else_=0)))
         .where(cond, m.last_provider.is_not(None)).group_by(m.last_provider)
         .order_by(m.last_provider).limit(50))
    rows, total = [], 0.0
    for name, n, delivered in conn.execute(q):
        pc = app.config.providers.get(str(name))
        each = pc.cost if pc is not None else None
        cost = round((each or 0.0) * int(delivered or 0), 6)
        total += cost
        rows.append({"provider": name, "messages": int(n), "delivered": int(delivered or 0),
                     "cost_each": each, "cost": cost})
    return {"total": round(total, 6), "providers": rows,
            "unpriced": sorted(r["provider"] for r in rows if r["cost_each"] is None)}


def bucket_seconds(span: float) -> float:
    """The smallest round bucket cutting ``span`` seconds into at most MAX_BUCKETS."""
    want = max(span, 1.0) / MAX_BUCKETS
    return next((s for s in BUCKETS if s >= want), float(math.ceil(want)))


def _series(conn: Connection, cond: ColumnElement[bool], lo: float, hi: float
            ) -> dict[str, Any]:
    """Attempts and failed attempts per time bucket in [lo, hi], every bucket present."""
    size = bucket_seconds(hi - lo)
    n = min(MAX_BUCKETS, max(1, math.ceil((hi - lo) / size)))
    offset = (attempts.c.at - lo) / size
    index = func.floor(offset) if conn.dialect.name == "postgresql" else cast(offset, Integer)
    bad = func.sum(case((attempts.c.outcome != "delivered", 1), else_=0))
    # by the output name: PostgreSQL cannot match an expression with bound parameters
    q = (select(index.label("k_bucket"), func.count(), bad)
         .select_from(messages.join(attempts, attempts.c.message_id == messages.c.id))
         .where(cond, attempts.c.at >= lo, attempts.c.at <= hi)
         .group_by(literal_column("k_bucket")))
    tally = [[0, 0] for _ in range(n)]
    for k, total, failed in conn.execute(q):
        i = min(n - 1, max(0, int(k)))
        tally[i][0] += int(total)
        tally[i][1] += int(failed or 0)
    rows = [{"start": rfc3339(lo + i * size), "attempts": t, "failed": f,
             "failure_rate": _rate(f, t)} for i, (t, f) in enumerate(tally)]
    return {"bucket_seconds": size, "since": rfc3339(lo), "until": rfc3339(hi), "rows": rows}


# -- causes ------------------------------------------------------------------------------------

def _causes(conn: Connection, cond: ColumnElement[bool]) -> list[dict[str, Any]]:
    """Unsent messages per cause: counts, providers, provider codes seen, examples, fix."""
    m, a = messages.c, attempts.c
    rows = conn.execute(
        select(m.last_cause, m.last_provider,
               func.sum(case((m.state.in_(FAILED), 1), else_=0)),
               func.sum(case((m.state == "suppressed", 1), else_=0)))
        .where(cond, m.state.in_((*FAILED, "suppressed")))
        .group_by(m.last_cause, m.last_provider).order_by(func.count().desc()).limit(500))
    by: dict[str, dict[str, Any]] = {}
    providers: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for cause, provider, failed, suppressed in rows:
        name = str(cause or "UNKNOWN")
        c = by.setdefault(name, {"cause": name, "kind": "failure", "failed": 0,
                                 "suppressed": 0})
        c["failed"] += int(failed or 0)
        c["suppressed"] += int(suppressed or 0)
        if provider:
            providers[name][str(provider)] += int(failed or 0) + int(suppressed or 0)
    ranked = sorted(by.values(), key=lambda c: (-c["failed"], -c["suppressed"],
                                                c["cause"]))[:MAX_CAUSES]
    names = [c["cause"] for c in ranked]
    codes: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if names:
        for cause, code, n in conn.execute(
                select(a.cause, a.provider_code, func.count())
                .select_from(messages.join(attempts, a.message_id == m.id))
                .where(cond, a.cause.in_(names), a.provider_code.is_not(None))
                .group_by(a.cause, a.provider_code).order_by(func.count().desc())
                .limit(MAX_CAUSES * CODES * 2)):
            if len(codes[cause]) < CODES:
                codes[cause].append({"code": code, "attempts": int(n)})
    for c in ranked:
        named = sorted(providers[c["cause"]].items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        same = m.last_cause == c["cause"]
        if c["cause"] == "UNKNOWN":
            same = or_(same, m.last_cause.is_(None))
        c["count"] = c["failed"] + c["suppressed"]
        c["providers"] = [{"provider": p, "count": n} for p, n in named]
        c["codes"] = codes.get(c["cause"], [])
        c["examples"] = list(conn.execute(
            select(m.id).where(cond, same, m.state.in_((*FAILED, "suppressed")))
            .order_by(m.id.desc()).limit(EXAMPLES)).scalars())
        cause = taxonomy.get(c["cause"])
        c["transient"] = cause.transient
        c["fix"] = taxonomy.describe(cause, provider=named[0][0] if named else "")[1]
    return ranked


def _with_lessons(store: SQLStore, conn: Connection, causes: list[dict[str, Any]],
                  templates: Iterable[str]) -> None:
    subjects: set[Subject] = {("template", t) for t in templates if t}
    for c in causes:
        if c["kind"] == "failure":
            subjects.add(("cause", c["cause"]))
        subjects.update(("provider", p["provider"]) for p in c["providers"])
    found = Lessons(store).about(subjects, conn)
    for c in causes:
        mine: list[Subject] = [("provider", p["provider"]) for p in c["providers"]]
        if c["kind"] == "failure":
            mine.insert(0, ("cause", c["cause"]))
        if c.get("template"):
            mine.append(("template", str(c["template"])))
        c["lessons"] = notes_json(found, *mine)


# -- before and after --------------------------------------------------------------------------

def _tried(conn: Connection, cond: ColumnElement[bool]) -> tuple[int, int]:
    m = messages.c
    failed, tried = conn.execute(select(
        func.coalesce(func.sum(case((m.state.in_(FAILED), 1), else_=0)), 0), func.count())
        .where(cond, m.state.in_(("delivered", *FAILED)))).one()
    return int(failed), int(tried)


def _comparison(conn: Connection, before: ColumnElement[bool], after: ColumnElement[bool],
                labels: tuple[str, str], fix: str, at: float) -> dict[str, Any]:
    x1, n1 = _tried(conn, before)
    x2, n2 = _tried(conn, after)
    t = two_proportions(x1, n1, x2, n2)
    words = {"significant": "a significant change (95%)", "noise": "within noise",
             "too_small": "too small a sample to tell", "no_data": "nothing to compare yet",
             "none": "nothing failed on either side", "all": "everything failed on both sides"}
    summary = (f"Failure rate {labels[0]}: {pct(t['a']['rate'])} ({x1}/{n1}); {labels[1]}: "
               f"{pct(t['b']['rate'])} ({x2}/{n2}); {words[t['verdict']]}"
               + (f", p = {t['p_value']:.2g}" if t["p_value"] is not None else "") + ".")
    return {"fix": fix, "at": rfc3339(at), "labels": list(labels), **t, "summary": summary}


def _replay_key(incident_id: str) -> ColumnElement[bool]:
    prefix = f"{_REPLAY}{incident_id}:"
    return and_(messages.c.idem_scope == REPLAY_SCOPE,
                func.substr(messages.c.idem_key, 1, len(prefix)) == prefix)


def _replays(conn: Connection, cond: ColumnElement[bool]) -> list[dict[str, Any]]:
    """Replays among the messages of ``cond``, per incident."""
    m = messages.c
    incident = func.substr(m.idem_key, len(_REPLAY) + 1, _INCIDENT_ID)
    q = (select(incident.label("k_incident"), func.count(),
                func.sum(case((m.state == "delivered", 1), else_=0)),
                func.sum(case((m.state.in_(FAILED), 1), else_=0)), func.min(m.created_at))
         .where(cond, m.idem_scope == REPLAY_SCOPE).group_by(literal_column("k_incident"))
         .order_by(func.min(m.created_at)).limit(20))
    out = []
    for iid, n, ok, bad, first in conn.execute(q):
        events_ = conn.execute(select(incident_events).where(
            incident_events.c.incident_id == iid, incident_events.c.kind == "replay")
            .order_by(incident_events.c.id).limit(20)).all()
        detail = [loads(e.detail) or {} for e in events_]
        via = sorted({str(d.get("via") or d.get("channel")) for d in detail
                      if d.get("via") or d.get("channel")})
        out.append({"incident": iid, "messages": int(n), "delivered": int(ok or 0),
                    "failed": int(bad or 0), "pending": int(n) - int(ok or 0) - int(bad or 0),
                    "first_at": float(first), "via": via,
                    "events": [_event(e.at, "replay", e.actor, e.message) for e in events_]})
    return out


def _holds(conn: Connection, providers: Iterable[str], lo: float, hi: float
           ) -> list[dict[str, Any]]:
    subjects = [f"provider:{p}" for p in sorted(set(providers))][:50]
    if not subjects:
        return []
    q = (select(audit_log).where(audit_log.c.action.in_(("provider.hold", "provider.release")),
                                 audit_log.c.subject.in_(subjects), audit_log.c.at >= lo,
                                 audit_log.c.at <= hi)
         .order_by(audit_log.c.at).limit(50))
    out = []
    for r in conn.execute(q):
        d = loads(r.detail) or {}
        what = "held" if r.action == "provider.hold" else "released"
        text = f"{r.subject.split(':', 1)[1]} {what}" + (
            f" for {d['seconds']:g} s: {d.get('reason')}" if "seconds" in d else "")
        out.append(_event(r.at, "hold" if what == "held" else "release", r.actor, text))
    return out


def _alerts(conn: Connection, scopes: Iterable[str], lo: float, hi: float
            ) -> list[dict[str, Any]]:
    """Alerts of ``scopes`` open at some time in [lo, hi]."""
    q = (select(alerts).where(alerts.c.scope.in_(sorted(set(scopes))[:100]),
                              alerts.c.opened_at <= hi,
                              or_(alerts.c.resolved_at.is_(None), alerts.c.resolved_at >= lo))
         .order_by(alerts.c.opened_at).limit(50))
    return [{"id": r.id, "rule": r.rule, "scope": r.scope, "severity": r.peak,
             "state": r.state, "value": r.value, "summary": r.summary,
             "opened_at": rfc3339(r.opened_at), "resolved_at": rfc3339(r.resolved_at),
             "incident": r.incident_id, "ts": r.opened_at} for r in conn.execute(q)]


# -- the campaign ------------------------------------------------------------------------------

def _audit_event(r: Any) -> dict[str, Any]:
    d = loads(r.detail) or {}
    kind = _AUDIT.get(r.action, r.action)
    text = kind
    if r.action == "campaign.pause":
        kind = "auto-pause" if r.actor == "auto-pause" else "paused"
        text = f"{kind}: {d.get('reason')} ({d.get('held', 0)} messages held)"
    elif r.action == "campaign.override":
        text = (f"pre-flight block overridden ({', '.join(map(str, d.get('codes') or []))}): "
                f"{d.get('reason')}")
    elif r.action == "campaign.retry":
        text = (f"retry round {d.get('round')}: {d.get('recipients')} recipients"
                + (f", causes {', '.join(d['causes'])}" if d.get("causes") else "")
                + (f", through {d['via']}" if d.get("via") else ""))
    elif r.action == "campaign.resume":
        text = f"resumed ({d.get('released', 0)} messages released)"
    elif r.action == "campaign.cancel":
        text = f"cancelled ({d.get('stopped', 0)} messages stopped)"
    return _event(r.at, kind, r.actor, text)


def campaign_postmortem(app: App, ref: str, *, now: float | None = None) -> dict[str, Any]:
    """The post-mortem of the campaign whose id or name is ``ref`` (NotFound otherwise)."""
    store = _sql(app)
    now = time.time() if now is None else now
    m = messages.c
    with store._read() as conn:
        row = conn.execute(select(campaigns).where(
            (campaigns.c.id == ref) | (campaigns.c.name == ref))).first()
        if row is None:
            raise NotFound(f"no campaign {ref!r}")
        mine = m.campaign_id == row.id
        impact = _impact(conn, mine)
        first, last = conn.execute(select(func.min(m.created_at), func.max(m.updated_at))
                                   .where(mine)).one()
        first_try, last_try = _tries(conn, mine)
        start = row.started_at or first or row.created_at
        end = max(x for x in (row.finished_at, last, last_try, start) if x is not None)
        if row.state in ("scheduled", "sending", "paused"):
            end = max(end, now)
        skipped = int(conn.execute(select(func.count()).where(
            campaign_recipients.c.campaign_id == row.id,
            campaign_recipients.c.state == "skipped")).scalar_one())
        impact.update(planned=max(int(row.recipients), 0), skipped=skipped,
                      cost=_cost(app, conn, mine), **_left(conn, select(
                          campaign_recipients.c.contact_id).where(
                          campaign_recipients.c.campaign_id == row.id), mine, start))
        series = _series(conn, mine, first_try or start, max(end, (first_try or start) + 1))
        flagged = findings_by_code(loads(row.preflight))
        override = loads(row.override)
        overridden = {str(f.get("code")) for f in (override or {}).get("findings") or []}
        causes = _causes(conn, mine)
        for c in causes:
            c["checks"] = caught_by(c["cause"], flagged, overridden)
        causes = (causes + overridden_causes(conn, row, mine))[:MAX_CAUSES]
        templates = [str(t) for t in conn.execute(select(m.template).where(
            mine, m.template.is_not(None)).group_by(m.template).limit(20)).scalars()]
        _with_lessons(store, conn, causes, templates)
        audits = conn.execute(select(audit_log).where(
            audit_log.c.subject == f"campaign:{row.id}", audit_log.c.action.like("campaign.%"))
            .order_by(audit_log.c.at).limit(MAX_EVENTS)).all()
        replays = _replays(conn, mine)
        providers = [p["provider"] for p in impact["cost"]["providers"]]
        channels = [str(c) for c in conn.execute(select(m.channel).where(mine).group_by(
            m.channel).limit(20)).scalars()]
        holds = _holds(conn, providers, start, end)
        found = _alerts(conn, [f"campaign:{row.id}", *(f"provider:{p}" for p in providers),
                               *(f"channel:{c}" for c in channels)], start, end)
        retries = [r.at for r in audits if r.action == "campaign.retry"]
        fixes = [(at, "retry") for at in retries[:1]] + [
            (r["first_at"], f"replay from incident {r['incident']}") for r in replays[:1]]
        comparison = None
        if fixes:
            at, what = min(fixes)
            comparison = _comparison(
                conn, and_(mine, m.created_at < at, or_(m.idem_scope.is_(None),
                                                        m.idem_scope != REPLAY_SCOPE)),
                and_(mine, m.created_at >= at), ("before the fix", "after it"), what, at)
    audit_events = [_audit_event(r) for r in audits]
    actions = [e for e in audit_events if e["kind"] not in ("created", "definition changed",
                                                             "started", "test send")]
    for r in replays:
        actions += r["events"] or [_event(r["first_at"], "replay", "?", f"replayed "
                                          f"{r['messages']} messages from {r['incident']}")]
    actions += holds
    timeline = [*audit_events, *(e for r in replays for e in r["events"]), *holds]
    if first is not None:
        timeline.append(_event(first, "first message", "campaigns", "first message enqueued"))
    if row.state == "completed" and row.finished_at:
        timeline.append(_event(row.finished_at, "completed", "campaigns",
                               "completed: nothing left to send"))
    timeline += [_event(a["ts"], "alert", "alerts", f"{a['severity']}: {a['summary']}")
                 for a in found]
    for r in replays:
        del r["events"]
        r["first_at"] = rfc3339(r["first_at"])
    subject = {"id": row.id, "name": row.name, "state": row.state,
               "created_by": row.created_by, "started_at": rfc3339(row.started_at),
               "finished_at": rfc3339(row.finished_at), "round": row.round,
               "paused_reason": row.paused_reason, "channels": channels,
               "templates": templates}
    report = {
        "kind": "campaign", "title": f"Campaign {row.name}", "subject": subject,
        "generated_at": rfc3339(now), "window": {"since": rfc3339(start),
                                                 "until": rfc3339(end)},
        "impact": impact, "outcomes": _outcomes(impact), "series": series,
        "timeline": _timeline(timeline), "causes": causes,
        "preflight": _preflight_json(loads(row.preflight)), "override": override,
        "actions": _timeline(actions), "replays": replays,
        "alerts": [{k: v for k, v in a.items() if k != "ts"} for a in found],
        "recommendations": recommend(app, causes, channels), "comparison": comparison}
    report["summary"], report["verdict"] = _campaign_summary(report)
    return report


def _tries(conn: Connection, cond: ColumnElement[bool]) -> tuple[float | None, float | None]:
    """The first and the last attempt of the messages of ``cond``."""
    lo, hi = conn.execute(select(func.min(attempts.c.at), func.max(attempts.c.at)).select_from(
        messages.join(attempts, attempts.c.message_id == messages.c.id)).where(cond)).one()
    return (float(lo) if lo is not None else None, float(hi) if hi is not None else None)


def _outcomes(impact: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [("delivered", impact["delivered"]), ("failed", impact["failed"]),
            ("not sent (policy)", impact["not_sent"]), ("pending", impact["pending"])]
    if "skipped" in impact:
        rows.append(("skipped before sending", impact["skipped"]))
    return [{"outcome": k, "count": int(v)} for k, v in rows]


def _preflight_json(p: Any) -> dict[str, Any] | None:
    if not isinstance(p, dict):
        return None
    keep = ("code", "severity", "count", "problem", "fix", "url")
    return {"checked_at": p.get("checked_at"), "recipients": p.get("recipients"),
            "predicted": p.get("predicted"), "blocking": p.get("blocking"),
            "findings": [{k: f.get(k) for k in keep} for f in (p.get("findings") or [])
                         if isinstance(f, dict)][:MAX_CAUSES]}


def _verdict(impact: dict[str, Any], n_overridden: int) -> str:
    if impact["messages"] == 0:
        text = "nothing was sent"
    elif impact["failed"] == 0:
        text = "clean: nothing failed"
    elif impact["unreached"] == 0:
        text = "recovered: every recipient whose message failed was reached in the end"
    elif impact["reached"]:
        text = (f"partly recovered: {impact['unreached']} of {impact['recipients']} "
                "recipients were never reached")
    else:
        text = "not recovered: no recipient was reached"
    if impact.get("withheld"):
        text += (f"; {impact['withheld']} recipient(s) not sent to by policy (consent, "
                 "suppression, caps)")
    if n_overridden:
        text += f"; sent despite {n_overridden} overridden pre-flight finding(s)"
    return text


def _causes_text(causes: list[dict[str, Any]]) -> str:
    failing = [c for c in causes if c["kind"] == "failure" and c["failed"]]
    parts = [f"{c['cause']} ({c['failed']} messages"
             + (f" via {c['providers'][0]['provider']}" if c["providers"] else "") + ")"
             for c in failing[:3]]
    parts += [f"{c['cause']} overridden at start ({c['count']} {c['counted']})"
              for c in causes if c["kind"] == "preflight"][:3]
    return "; ".join(parts)


def _campaign_summary(r: dict[str, Any]) -> tuple[str, str]:
    s, i = r["subject"], r["impact"]
    n_over = sum(1 for c in r["causes"] if c["kind"] == "preflight")
    verdict = _verdict(i, n_over)
    text = (f"Campaign {s['name']} ({s['state']}) sent {i['messages']} messages to "
            f"{i['recipients']} recipients between {r['window']['since']} and "
            f"{r['window']['until']}: {i['delivered']} delivered, {i['failed']} failed "
            f"({pct(i['failure_rate'])} of those tried), {i['not_sent']} not sent by policy, "
            f"{i['pending']} pending; {i['reached']} recipients reached.")
    causes = _causes_text(r["causes"])
    if causes:
        text += f" Root causes: {causes}."
    if r["override"]:
        o = r["override"]
        text += f" The pre-flight block was overridden by {o.get('by')}: \"{o.get('reason')}\"."
    if r["comparison"]:
        text += f" After the fix ({r['comparison']['fix']}): {r['comparison']['summary']}"
    return f"{text} Verdict: {verdict}.", verdict


# -- the incident ------------------------------------------------------------------------------

def incident_postmortem(app: App, incident_id: str, *, now: float | None = None
                        ) -> dict[str, Any]:
    """The post-mortem of an incident (NotFound for an unknown id)."""
    from pushguard.diagnosis.incidents import Incidents, scope_filter

    store = _sql(app)
    now = time.time() if now is None else now
    book = Incidents(app)
    shown = book.show(incident_id)
    m = messages.c
    with store._read() as conn:
        row = book.row(conn, incident_id)
        ws = float(row.window_start)
        end = float(row.closed_at) if row.closed_at is not None else now
        radius = book.failed(row)
        scope = scope_filter(row.scope, book.channels_of)
        recent = and_(m.created_at >= ws - LOOKBACK, not_alerts())
        replayed = _replay_key(incident_id)
        moved = and_(scope, recent, m.updated_at >= ws, m.updated_at < end)
        touched = or_(moved, and_(replayed, recent))
        impact = _impact(conn, touched)
        impact.update(blast_radius=shown["blast_radius"], cost=_cost(app, conn, touched),
                      **_left(conn, select(m.contact_id).where(radius, m.contact_id.is_not(
                          None)), radius, ws))
        impact["replayed"] = _states(conn, replayed)
        charted = or_(and_(scope, recent), and_(replayed, recent))
        first = conn.execute(select(func.min(attempts.c.at)).select_from(messages.join(
            attempts, attempts.c.message_id == m.id)).where(
            charted, attempts.c.at >= ws, attempts.c.outcome != "delivered")).scalar()
        lo = float(first) if first is not None else ws
        series = _series(conn, charted, lo, max(end, lo + 1))
        causes = _causes(conn, radius)
        ids = [c["campaign"] for c in shown["blast_radius"]["campaigns"]]
        rows = conn.execute(select(campaigns).where(campaigns.c.id.in_(ids))).all() \
            if ids else []
        flagged: dict[str, dict[str, Any]] = {}
        overridden: set[str] = set()
        extra: list[dict[str, Any]] = []
        for c in rows:
            flagged.update(findings_by_code(loads(c.preflight)))
            override = loads(c.override)
            overridden |= {str(f.get("code")) for f in (override or {}).get("findings") or []}
            extra += overridden_causes(conn, c, m.campaign_id == c.id)
        for cause in causes:
            cause["checks"] = caught_by(cause["cause"], flagged, overridden)
        causes = (causes + extra)[:MAX_CAUSES]
        _with_lessons(store, conn, causes, [])
        pivot = conn.execute(select(func.min(incident_events.c.at)).where(
            incident_events.c.incident_id == incident_id,
            incident_events.c.kind.in_(("action", "replay")))).scalar()
        comparison = None
        fix = "the first action" if pivot is not None else "closing"
        pivot = pivot if pivot is not None else row.closed_at
        if pivot is not None:
            span = max(pivot - ws, MIN_AFTER)
            comparison = _comparison(
                conn, and_(scope, recent, m.updated_at >= ws, m.updated_at < pivot),
                or_(and_(scope, recent, m.updated_at >= pivot, m.updated_at < pivot + span),
                    and_(replayed, recent)),
                ("during the incident", "after it"), fix, pivot)
        named = [p["provider"] for p in shown["blast_radius"]["providers"]]
        if row.scope.startswith("provider:"):
            named.append(row.scope.split(":", 1)[1])
        holds = _holds(conn, named, ws, end)
    events_ = [_event(_ts(e["at"]), e["kind"], e["actor"], e["message"])
               for e in shown["timeline"]]
    if first is not None:
        events_.append(_event(lo, "first failure", "store", f"first failed attempt in "
                              f"{row.scope} within the incident's window"))
    actions = [e for e in events_ if e["kind"] in ("action", "action_failed", "replay",
                                                    "closed")] + holds
    for c in rows:
        o = loads(c.override)
        if isinstance(o, dict) and o.get("at"):
            actions.append(_event(_ts(o["at"]), "override", str(o.get("by")),
                                  f"campaign {c.name}: pre-flight overridden: "
                                  f"{o.get('reason')}"))
    channels = [c["channel"] for c in shown["blast_radius"]["channels"]]
    subject = {k: shown[k] for k in ("id", "scope", "state", "severity", "title", "opened_at",
                                     "closed_at", "closed_by", "note", "window_start")}
    subject["campaigns"] = [{"id": c.id, "name": c.name, "state": c.state} for c in rows]
    report = {
        "kind": "incident", "title": f"Incident {row.title}", "subject": subject,
        "generated_at": rfc3339(now), "window": {"since": rfc3339(ws), "until": rfc3339(end)},
        "impact": impact, "outcomes": _outcomes(impact), "series": series,
        "timeline": _timeline([*events_, *holds]), "causes": causes,
        "preflight": None, "override": None, "actions": _timeline(actions),
        "alerts": shown["alerts"], "recommendations": recommend(app, causes, channels),
        "comparison": comparison}
    report["summary"], report["verdict"] = _incident_summary(report)
    return report


def _ts(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _incident_summary(r: dict[str, Any]) -> tuple[str, str]:
    s, i = r["subject"], r["impact"]
    radius = i["blast_radius"]
    replayed = i["replayed"]
    n_over = sum(1 for c in r["causes"] if c["kind"] == "preflight")
    verdict = _verdict(i, n_over)
    state = f"closed at {s['closed_at']} by {s['closed_by']}" if s["state"] == "closed" \
        else "still open"
    text = (f"Incident {s['id']} ({s['severity']}) on {s['scope']} opened at "
            f"{s['opened_at']} and is {state}. {radius['messages']} messages to "
            f"{radius['recipients']} recipients failed in its window")
    if s["campaigns"]:
        text += " (campaigns: " + ", ".join(c["name"] for c in s["campaigns"]) + ")"
    text += "."
    causes = _causes_text(r["causes"])
    if causes:
        text += f" Root causes: {causes}."
    if replayed:
        text += (f" {sum(replayed.values())} messages were replayed: "
                 f"{replayed.get('delivered', 0)} delivered.")
    if r["comparison"]:
        text += f" After {r['comparison']['fix']}: {r['comparison']['summary']}"
    return f"{text} Verdict: {verdict}.", verdict
