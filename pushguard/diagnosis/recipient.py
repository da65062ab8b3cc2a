"""Why has this person received nothing? The story of one contact over the last days.

Used by ``pushguard why --contact REF`` and ``GET /v1/contacts/{ref}/explain``. It reads the
contact's messages in the window (``messages.contact_id``: messages sent to the contact, their
device copies, campaigns, and marketing the gate matched to them), counts them by outcome in
SQL, explains each kind of failure with its cause, rule and fix, then lists what would stop the
next message before it is sent (:mod:`pushguard.diagnosis.obstacles`). The verdict comes
first, in one paragraph, because that is what the person asking reads.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, or_, select

from pushguard.audience.gate import consent_channel
from pushguard.diagnosis import obstacles
from pushguard.diagnosis.lessons import Lessons, Subject, as_lines, notes_json
from pushguard.exceptions import NotFound
from pushguard.store.schema import contacts, messages
from pushguard.views import rfc3339

if TYPE_CHECKING:
    from pushguard.audience.rules import AudiencePolicy
    from pushguard.store.sql import SQLStore

OUTCOME = {"delivered": "delivered", "failed": "failed", "dead": "failed",
           "expired": "failed", "suppressed": "suppressed", "deferred": "deferred"}
#: what happened to a group of messages, singular and plural
VERB = {"failed": ("failed", "failed"),
        "suppressed": ("was stopped before sending", "were stopped before sending"),
        "deferred": ("is held back", "are held back"),
        "pending": ("is still on its way", "are still on their way")}
GROUPS = 100


def find_contact(conn: Connection, ref: str) -> obstacles.Person:
    r = conn.execute(select(contacts).where(
        or_(contacts.c.id == ref, contacts.c.external_id == ref))).first()
    if r is None:
        raise NotFound(f"no contact {ref!r}")
    return obstacles.Person(r.id, r.external_id, r.timezone, r.quiet_hours)


def message_groups(conn: Connection, cid: str, since: float, until: float) -> list[Any]:
    m = messages.c
    keys = (m.state, m.last_cause, m.topic, m.channel, m.template, m.last_provider)
    q = (select(*keys, func.count().label("n"), func.max(m.id).label("example"))
         .where(m.contact_id == cid, m.created_at >= since, m.created_at < until)
         .group_by(*keys).order_by(func.count().desc()).limit(GROUPS))
    return list(conn.execute(q))


def failures_of(conn: Connection, ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """``id -> (address, failure JSON)`` of the example messages."""
    if not ids:
        return {}
    q = select(messages.c.id, messages.c.to_addr, messages.c.failure).where(
        messages.c.id.in_(ids))
    return {r.id: (r.to_addr, json.loads(r.failure) if r.failure else {})
            for r in conn.execute(q)}


def because(g: dict[str, Any], name: str, found: dict[str, Any]) -> str:
    """The reason of one group, in words, from the rule that stopped it or its failure."""
    rule, topic, channel = g["rule"], g["topic"], g["channel"]
    if rule == "consent":
        cch = consent_channel(channel)
        row = next((c for c in found["consent"]
                    if c["topic"] == topic and c["channel"] == cch), None)
        if row and row["status"] == "withdrawn":
            return (f"{name} withdrew consent to `{topic}` on {cch} on {row['at'][:10]} "
                    f"(source: {row['source']}, recorded by {row['actor']})")
        if row and row["status"] == "pending":
            return f"{name} has not confirmed the subscription to `{topic}` on {cch}"
        if row and row["status"] == "granted":
            return f"consent to `{topic}` on {cch} was missing then (it is granted now)"
        return f"{name} never consented to `{topic}` on {cch}"
    if rule == "suppression":
        sup = next((s for s in found["suppressions"] if s["channel"] == channel), None)
        if sup:
            return (f"{sup['address']} is on the {channel} suppression list ({sup['reason']}, "
                    f"since {str(sup['since'])[:10]})")
    if rule == "address":
        off = next((a for a in found["deactivated"] if a["channel"] == channel), None)
        if off:
            return (f"the {channel} address {off['address']} is deactivated "
                    f"({off['reason'] or 'no reason given'})")
    if rule in ("quiet_hours", "frequency_cap", "topic"):
        return f"of the {rule.replace('_', ' ')} rule: {g['explanation']}"
    text = str(g["explanation"] or "no failure was recorded yet").rstrip(".")
    return f"{text[0].lower()}{text[1:]}" + (f" ({g['cause']})" if g["cause"] else "")


def recipient_story(store: SQLStore, ref: str, *, days: int = 7, policy: AudiencePolicy,
                    now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    since = now - days * 86400
    with store._read() as conn:
        person = find_contact(conn, ref)
        rows = message_groups(conn, person.id, since, now)
        examples = failures_of(conn, [r.example for r in rows if r.state != "delivered"])
        found = obstacles.all_of(conn, person, policy, since, now,
                                 {r.topic for r in rows if r.topic})
        subjects: set[Subject] = set()
        groups = []
        for r in rows:
            addr, failure = examples.get(r.example, ("", {}))
            g = {"outcome": OUTCOME.get(r.state, "pending"), "state": r.state, "count": r.n,
                 "topic": r.topic, "channel": r.channel, "template": r.template,
                 "provider": r.last_provider,
                 "cause": r.last_cause if r.state != "delivered" else None,
                 "rule": failure.get("rule"), "explanation": failure.get("explanation"),
                 "fix": failure.get("fix"), "to": addr or None, "example": r.example}
            subjects.update((k, str(g[f])) for k, f in (("cause", "cause"),
                            ("provider", "provider"), ("template", "template")) if g[f])
            groups.append(g)
        found_lessons = Lessons(store).about(subjects, conn)
    name = person.external_id
    for g in groups:
        if g["outcome"] != "delivered":
            g["because"] = because(g, name, found)
            g["lessons"] = notes_json(found_lessons, *((k, str(g[f])) for k, f in (
                ("cause", "cause"), ("provider", "provider"), ("template", "template"))
                if g[f]))
    tally = {k: sum(g["count"] for g in groups if g["outcome"] == k)
             for k in ("delivered", "failed", "suppressed", "deferred", "pending")}
    tally["total"] = sum(g["count"] for g in groups)
    text, fix = verdict(name, days, tally, groups, found)
    return {"contact": {"id": person.id, "external_id": name, "timezone": person.timezone,
                        "quiet_hours": person.quiet_hours},
            "since": rfc3339(since), "until": rfc3339(now), "days": days, "verdict": text,
            "fix": fix, "messages": tally, "outcomes": groups, "obstacles": found}


def _noun(n: int, topic: str | None, channel: str) -> str:
    what = f"`{topic}` message" if topic else "message"
    return f"{n} {what}{'' if n == 1 else 's'} by {channel}"


def verdict(name: str, days: int, tally: dict[str, int], groups: list[dict[str, Any]],
            found: dict[str, Any]) -> tuple[str, str | None]:
    span = "this week" if days == 7 else f"in the last {days} day{'s' if days != 1 else ''}"
    unsent = sorted((g for g in groups if g["outcome"] != "delivered"),
                    key=lambda g: -int(g["count"]))
    reasons = [f"{_noun(g['count'], g['topic'], g['channel'])} "
               f"{VERB[g['outcome']][g['count'] != 1]} because {g['because']}"
               for g in unsent[:3]]
    if len(unsent) > 3:
        reasons.append(f"and {sum(g['count'] for g in unsent[3:])} more (see below)")
    fix = next((g["fix"] for g in unsent if g["fix"]), None)
    if tally["total"] == 0:
        text = f"No message was sent to {name} {span}."
        skips = found["campaigns_skipped"]
        if skips:
            text += (f" {len(skips)} campaign{'s' if len(skips) != 1 else ''} skipped "
                     f"{name}: {skips[0]['detail'] or 'no detail recorded'}.")
        if not found["active_channels"]:
            text += f" {name} has no active address on any channel."
        return text, fix
    if tally["delivered"] == 0:
        text = f"Nothing reached {name} {span}: " + "; ".join(reasons) + "."
    else:
        text = f"{tally['delivered']} of {tally['total']} messages reached {name} {span}."
        if reasons:
            rest = "; ".join(reasons)
            text += f" {rest[0].upper()}{rest[1:]}."
    if fix:
        text += f" Fix: {fix}"
    return text, fix


def as_text(story: dict[str, Any]) -> str:
    c = story["contact"]
    lines = [f"Contact {c['external_id']} ({c['id']}), {story['since']} to {story['until']}",
             "", story["verdict"], ""]
    t = story["messages"]
    lines.append("Messages: " + ", ".join(f"{t[k]} {k}" for k in
                                          ("total", "delivered", "failed", "suppressed",
                                           "deferred", "pending")))
    for g in story["outcomes"]:
        lines.append(f"  {g['count']:>4} {g['state']:<15} {g['channel']:<8} "
                     f"{g['topic'] or '-':<16} {g['cause'] or '':<20} e.g. {g['example']}")
        if g["outcome"] != "delivered":
            lines.append(f"       because {g['because']}")
            if g["fix"]:
                lines.append(f"       fix: {g['fix']}")
            lines += as_lines(g["lessons"], "       lesson ")
    o = story["obstacles"]
    lines += ["", "Before sending:",
              f"  active channels: {', '.join(o['active_channels']) or 'none'}"]
    lines += [f"  consent {x['status']}: {x['topic']} on {x['channel']} ({x['source']}, "
              f"{x['at']}, by {x['actor']})" for x in o["consent_not_granted"]]
    lines += [f"  suppressed: {x['channel']} {x['address']} ({x['reason']}, {x['source']}, "
              f"since {x['since']})" for x in o["suppressions"]]
    lines += [f"  deactivated: {x['channel']} {x['address']} ({x['reason']})"
              for x in o["deactivated"]]
    lines += [f"  quiet hours ({x['source']}): {x['window']} {x['timezone']}"
              + (f", in force now until {x['until']}" if x["active_now"] else "")
              for x in o["quiet_hours"]]
    lines += [f"  cap ({x['scope']}): {x['cap']}, {x['sent']} sent"
              + (" - reached" if x["reached"] else "") for x in o["caps"]]
    lines += [f"  skipped by campaign {x['campaign'] or x['campaign_id']}: {x['detail']}"
              for x in o["campaigns_skipped"]]
    return "\n".join(lines)
