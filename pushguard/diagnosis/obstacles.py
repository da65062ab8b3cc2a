"""What stands between a contact and the next message, before anything is sent.

The pre-send gate (``pushguard/audience/gate.py``) decides per message; this module asks the
same tables the same questions about one contact, so a person can see every obstacle at once:
consent that is withdrawn or unconfirmed, addresses on a suppression list or deactivated,
quiet hours in force, frequency caps reached, and campaigns that skipped the contact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from pushguard.audience.gate import RULE_FIX, address_hash
from pushguard.audience.rules import AudiencePolicy, Cap, QuietHours, zone
from pushguard.store.schema import (
    campaign_recipients,
    campaigns,
    consent,
    consent_ledger,
    contact_addresses,
    contact_sends,
    suppressions,
    topics,
)
from pushguard.views import rfc3339

LIMIT = 50


@dataclass(frozen=True, slots=True)
class Person:
    """The contact row fields the story needs."""

    id: str
    external_id: str
    timezone: str | None
    quiet_hours: str | None


def consent_rows(conn: Connection, cid: str) -> list[dict[str, Any]]:
    """Every current consent of the contact, with the ledger entry that set it."""
    q = (select(consent.c.topic, consent.c.channel, consent.c.status, consent.c.source,
                consent.c.at, consent_ledger.c.actor, consent_ledger.c.proof)
         .select_from(consent.outerjoin(consent_ledger,
                                        consent_ledger.c.id == consent.c.ledger_id))
         .where(consent.c.contact_id == cid)
         .order_by(consent.c.topic, consent.c.channel).limit(200))
    return [{"topic": r.topic, "channel": r.channel, "status": r.status, "source": r.source,
             "at": rfc3339(r.at), "actor": r.actor, "proof": r.proof} for r in conn.execute(q)]


def addresses(conn: Connection, cid: str) -> list[Any]:
    return list(conn.execute(select(contact_addresses).where(
        contact_addresses.c.contact_id == cid).order_by(contact_addresses.c.created_at)
        .limit(200)))


def suppressed(conn: Connection, addrs: list[Any]) -> list[dict[str, Any]]:
    """Suppressions of the contact's addresses, stored plainly or as an erased hash."""
    out = []
    for a in addrs:
        keys = [a.address, address_hash(a.channel, a.address)]
        for r in conn.execute(select(suppressions).where(
                suppressions.c.channel == a.channel, suppressions.c.address.in_(keys))):
            out.append({"channel": a.channel, "address": a.address, "reason": r.reason,
                        "source": r.source, "since": rfc3339(r.created_at),
                        "fix": RULE_FIX["suppression"]})
    return out


def deactivated(addrs: list[Any]) -> list[dict[str, Any]]:
    return [{"channel": a.channel, "address": a.address, "reason": a.status_reason,
             "since": rfc3339(a.updated_at), "fix": RULE_FIX["address"]}
            for a in addrs if a.status != "active"]


def quiet_hours(conn: Connection, person: Person, policy: AudiencePolicy, now: float,
                relevant: set[str]) -> list[dict[str, Any]]:
    """Each quiet-hours window that applies to the contact's marketing (of the ``relevant``
    topics), from the most specific (the contact's own) to the policy default, and whether
    it holds now."""
    tzname = person.timezone or policy.default_timezone
    tz = zone(tzname, policy.default_timezone)
    windows: list[tuple[str, QuietHours]] = []
    if person.quiet_hours:
        windows.append(("contact", QuietHours.parse(person.quiet_hours)))
    for name, text in conn.execute(select(topics.c.name, topics.c.quiet_hours).where(
            topics.c.quiet_hours.is_not(None), topics.c.name.in_(sorted(relevant)[:LIMIT]))
            .order_by(topics.c.name)):
        windows.append((f"topic {name}", QuietHours.parse(text)))
    if policy.quiet_hours is not None:
        windows.append(("policy", policy.quiet_hours))
    out = []
    for source, window in windows:
        until = window.next_allowed(now, tz)
        out.append({"source": source, "window": str(window), "timezone": tzname,
                    "active_now": until is not None, "until": rfc3339(until),
                    "overridden": source != "contact" and person.quiet_hours is not None})
    return out


def caps(conn: Connection, cid: str, policy: AudiencePolicy, now: float,
         relevant: set[str]) -> list[dict[str, Any]]:
    """Frequency caps (the ``relevant`` topics' and the policy's) with the contact's counted
    sends inside each cap's period."""
    rules: list[tuple[str | None, Cap]] = [
        (name, Cap.parse(text)) for name, text in conn.execute(
            select(topics.c.name, topics.c.cap).where(
                topics.c.cap.is_not(None), topics.c.name.in_(sorted(relevant)[:LIMIT]))
            .order_by(topics.c.name))]
    if policy.marketing_cap is not None:
        rules.append((None, policy.marketing_cap))
    if not rules:
        return []
    marketing = set(conn.execute(select(topics.c.name).where(
        topics.c.kind == "marketing")).scalars())
    longest = max(cap.seconds for _, cap in rules)
    sends = conn.execute(select(contact_sends.c.topic, contact_sends.c.at).where(
        contact_sends.c.contact_id == cid, contact_sends.c.at > now - longest)
        .order_by(contact_sends.c.at.desc()).limit(10_000)).all()
    out = []
    for topic, cap in rules:
        n = sum(1 for t, at in sends if at > now - cap.seconds
                and (t == topic if topic else t in marketing))
        out.append({"scope": f"topic {topic}" if topic else "all marketing", "cap": cap.text,
                    "sent": n, "reached": n >= cap.limit,
                    "fix": RULE_FIX["frequency_cap"] if n >= cap.limit else None})
    return out


def skipped_by_campaigns(conn: Connection, cid: str, since: float) -> list[dict[str, Any]]:
    """Campaigns that left the contact out (no address, a template that would not render...)
    with a due time in the window."""
    cr = campaign_recipients.c
    q = (select(cr.campaign_id, campaigns.c.name, cr.detail, cr.due_at, cr.round)
         .select_from(campaign_recipients.outerjoin(campaigns, campaigns.c.id == cr.campaign_id))
         .where(cr.contact_id == cid, cr.state == "skipped", cr.due_at >= since)
         .order_by(cr.due_at.desc()).limit(LIMIT))
    return [{"campaign_id": r.campaign_id, "campaign": r.name, "detail": r.detail,
             "due_at": rfc3339(r.due_at), "round": r.round} for r in conn.execute(q)]


def all_of(conn: Connection, person: Person, policy: AudiencePolicy, since: float,
           now: float, topics_seen: set[str]) -> dict[str, Any]:
    """Every obstacle; quiet hours and caps of the topics the contact consented to or was
    sent in the window (``topics_seen``)."""
    addrs = addresses(conn, person.id)
    active = sorted({a.channel for a in addrs if a.status == "active"})
    current = consent_rows(conn, person.id)
    relevant = topics_seen | {c["topic"] for c in current}
    return {
        "active_channels": active,
        "consent": current,
        "consent_not_granted": [c for c in current if c["status"] != "granted"],
        "suppressions": suppressed(conn, addrs),
        "deactivated": deactivated(addrs),
        "quiet_hours": quiet_hours(conn, person, policy, now, relevant),
        "caps": caps(conn, person.id, policy, now, relevant),
        "campaigns_skipped": skipped_by_campaigns(conn, person.id, since),
    }

