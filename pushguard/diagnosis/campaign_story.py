"""Why did this campaign under-deliver? Its messages by outcome and cause, and who it skipped.

Used by ``pushguard why --campaign ID`` and ``GET /v1/campaigns/{id}/explain``. It reads the
campaign tables directly (``campaigns``, ``campaign_recipients``) rather than the campaign
service, so the story can be told for any campaign in the database, whatever runs it. Counts
are ``GROUP BY``s over the campaign's partial index on ``messages``; every list is bounded.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select

from pushguard.diagnosis import analytics
from pushguard.diagnosis.analytics import FAILED_STATES, Filters
from pushguard.diagnosis.failures import pct, top_causes
from pushguard.diagnosis.lessons import Lessons, Subject, as_lines, notes_json
from pushguard.diagnosis.recipient import failures_of
from pushguard.diagnosis.timespan import Window
from pushguard.exceptions import NotFound
from pushguard.store.schema import campaign_recipients, campaigns, messages
from pushguard.views import rfc3339

EXAMPLES = 3
GROUPS = 20
#: all of time: a campaign's messages are selected by campaign, not by window
EVER = Window(0.0, 1e11)


def find_campaign(conn: Connection, ref: str) -> Any:
    row = conn.execute(select(campaigns).where(
        (campaigns.c.id == ref) | (campaigns.c.name == ref))).first()
    if row is None:
        raise NotFound(f"no campaign {ref!r}")
    return row


def outcome_groups(conn: Connection, cid: str) -> list[dict[str, Any]]:
    """Messages per (state, cause), largest first, with up to :data:`EXAMPLES` ids each."""
    m = messages.c
    q = (select(m.state, m.last_cause, func.count().label("n"))
         .where(m.campaign_id == cid).group_by(m.state, m.last_cause)
         .order_by(func.count().desc()).limit(GROUPS))
    out = []
    for r in conn.execute(q):
        cause = None if r.state == "delivered" else r.last_cause
        g: dict[str, Any] = {"state": r.state, "cause": cause, "count": r.n, "examples": []}
        if r.state != "delivered":
            same = m.last_cause.is_(None) if r.last_cause is None else m.last_cause == cause
            g["examples"] = list(conn.execute(
                select(m.id).where(m.campaign_id == cid, m.state == r.state, same)
                .order_by(m.id.desc()).limit(EXAMPLES)).scalars())
        out.append(g)
    return out


def recipient_counts(conn: Connection, cid: str) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Recipients per state, and the skipped ones per reason (with one example contact)."""
    cr = campaign_recipients.c
    by_state = {r.state: int(r.n) for r in conn.execute(
        select(cr.state, func.count().label("n")).where(cr.campaign_id == cid)
        .group_by(cr.state))}
    skipped = [{"detail": r.detail, "count": int(r.n), "example_contact": r.example}
               for r in conn.execute(
                   select(cr.detail, func.count().label("n"),
                          func.max(cr.contact_id).label("example"))
                   .where(cr.campaign_id == cid, cr.state == "skipped").group_by(cr.detail)
                   .order_by(func.count().desc()).limit(GROUPS))]
    return by_state, skipped


def campaign_story(store: Any, ref: str) -> dict[str, Any]:
    with store._read() as conn:
        c = find_campaign(conn, ref)
        filters = Filters(EVER, campaign=c.id)
        totals = analytics.totals(conn, filters)
        groups = outcome_groups(conn, c.id)
        causes = top_causes(analytics.cause_rows(conn, filters))
        templates, _ = analytics.group_rows(conn, filters, ["template"], limit=GROUPS)
        recipients, skipped = recipient_counts(conn, c.id)
        examples = failures_of(conn, [g["examples"][0] for g in groups if g["examples"]])
        subjects: set[Subject] = {("cause", x["cause"]) for x in causes}
        for x in causes:
            subjects.update(("provider", p["provider"]) for p in x["providers"])
        subjects.update(("template", str(t["key"]["template"])) for t in templates
                        if t["key"]["template"])
        found = Lessons(store).about(subjects, conn)
    for g in groups:
        failure = examples[g["examples"][0]][1] if g["examples"] else {}
        g["explanation"] = failure.get("explanation")
        g["rule"] = failure.get("rule")
        g["fix"] = failure.get("fix")
        g["lessons"] = notes_json(found, ("cause", g["cause"])) if g["cause"] else []
    for x in causes:
        x["lessons"] = notes_json(found, ("cause", x["cause"]),
                                  *(("provider", p["provider"]) for p in x["providers"]))
    for t in templates:
        t["lessons"] = notes_json(found, ("template", str(t["key"]["template"])))
    campaign = {"id": c.id, "name": c.name, "state": c.state, "recipients": c.recipients,
                "round": c.round, "started_at": rfc3339(c.started_at),
                "finished_at": rfc3339(c.finished_at), "paused_reason": c.paused_reason}
    return {"campaign": campaign, "verdict": verdict(campaign, totals, causes, recipients,
                                                     skipped, groups),
            "messages": totals, "outcomes": groups, "top_causes": causes,
            "templates": templates, "recipients": recipients, "skipped": skipped}


def verdict(c: dict[str, Any], t: dict[str, Any], causes: list[dict[str, Any]],
            recipients: dict[str, int], skipped: list[dict[str, Any]],
            groups: list[dict[str, Any]]) -> str:
    head = f"Campaign {c['name']} ({c['state']})"
    if c["state"] == "paused" and c["paused_reason"]:
        head += f", paused: {c['paused_reason']}"
    n_skipped = recipients.get("skipped", 0)
    if t["total"] == 0 and not recipients:
        return f"{head} has not sent anything yet."
    who = f"{sum(recipients.values())} recipients, " if recipients else ""
    text = (f"{head}: {who}{t['total']} messages; "
            f"{t['delivered']} delivered, {t['failed']} failed "
            f"({pct(t['failure_rate'])} of {t['finished']} finished), {t['suppressed']} not "
            f"sent by policy, {t['pending']} pending")
    text += f"; {n_skipped} recipients skipped before sending." if n_skipped else "."
    failing = [x for x in causes if x["failed"]]
    if failing:
        x = failing[0]
        via = f" via {x['providers'][0]['provider']}" if x["providers"] else ""
        fix = next((g["fix"] for g in groups if g["cause"] == x["cause"]
                    and g["state"] in FAILED_STATES and g["fix"]), x["fix"])
        text += f" Top failure: {x['cause']}, {x['failed']} messages{via}. Fix: {fix}"
    elif t["suppressed"]:
        x = causes[0]
        fix = next((g["fix"] for g in groups if g["cause"] == x["cause"] and g["fix"]),
                   x["fix"])
        text += f" Nothing failed; most unsent: {x['cause']} ({x['count']}). Fix: {fix}"
    elif skipped:
        text += f" Most skipped: {skipped[0]['detail'] or 'no detail'} ({skipped[0]['count']})."
    return text


def as_text(story: dict[str, Any]) -> str:
    c = story["campaign"]
    lines = [f"Campaign {c['name']} ({c['id']}), {c['state']}", "", story["verdict"], "",
             "Messages by outcome:"]
    for g in story["outcomes"]:
        lines.append(f"  {g['count']:>6} {g['state']:<15} {g['cause'] or '':<20} "
                     + (f"e.g. {', '.join(g['examples'])}" if g["examples"] else ""))
        if g["explanation"]:
            lines.append(f"         {g['explanation']}")
        if g["fix"]:
            lines.append(f"         fix: {g['fix']}")
        lines += as_lines(g["lessons"], "         lesson ")
    for x in story["top_causes"]:
        via = ", ".join(f"{p['provider']} {p['count']}" for p in x["providers"])
        if via:
            lines.append(f"  {x['cause']} by provider: {via}")
        lines += as_lines([le for le in x["lessons"] if le["kind"] == "provider"],
                          "    lesson ")
    for t in story["templates"]:
        lines += as_lines(t["lessons"], "  lesson ")
    r = story["recipients"]
    lines += ["", "Recipients: " + (", ".join(f"{n} {s}" for s, n in sorted(r.items()))
                                    or "none yet")]
    lines += [f"  {s['count']:>6} skipped: {s['detail'] or 'no detail'} "
              f"(e.g. contact {s['example_contact']})" for s in story["skipped"]]
    return "\n".join(lines)
