"""Applying the data doctor's fixes, each in its own transaction, each audited.

A fix names the rows its finding looked at; before changing anything it checks they are still
as the finding saw them (the data may have moved since the doctor ran, or an earlier fix in
the same run may have dealt with it), and reports the fix as skipped, with the reason,
rather than act on something else. Every applied fix writes the audit log and moves the
audience generation, so every gate sees the change at its next batch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, select, update

from pushguard.audience.doctor import KINDS, Doctor, Finding
from pushguard.audience.gate import bump
from pushguard.audience.service import Audience, ConsentRecord
from pushguard.exceptions import InputError
from pushguard.store.schema import (
    audit_log,
    confirmations,
    consent,
    consent_ledger,
    contact_addresses,
    contact_sends,
    contacts,
    messages,
    suppressions,
)
from pushguard.store.sql import audit

_ca = contact_addresses


@dataclass(slots=True)
class Applied:
    """What came of one fix: applied with its audit entries, or skipped and why."""

    id: str
    kind: str
    action: str
    applied: bool
    reason: str | None = None
    audit: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "action": self.action,
                               "applied": self.applied, "audit": self.audit}
        if self.reason is not None:
            out["reason"] = self.reason
        return out


class _Moved(Exception):
    """The data is no longer as the finding saw it."""


def apply_fixes(doctor: Doctor, ids: Sequence[str], *, actor: str,
                field_name: str = "ids") -> list[Applied]:
    """Apply the fixes of these findings, in order. An id that is not a current finding is
    refused (``InputError`` naming ``ids[i]``) before anything is changed."""
    found = {f.id: f for f in doctor.findings()}
    for i, fid in enumerate(ids):
        if fid not in found:
            raise InputError(f"{field_name}[{i}]", f"no finding {fid!r} (the data may have "
                             "changed since: run the doctor again)")
    return [_apply(doctor.audience, found[fid], actor) for fid in dict.fromkeys(ids)]


def ids_of_kinds(doctor: Doctor, kinds: Sequence[str], *, field_name: str = "kinds"
                 ) -> list[str]:
    for i, kind in enumerate(kinds):
        if kind not in KINDS:
            raise InputError(f"{field_name}[{i}]", f"unknown kind {kind!r}; one of: "
                             f"{', '.join(KINDS)}")
    return [f.id for f in doctor.findings() if f.kind in kinds]


def _apply(aud: Audience, f: Finding, actor: str) -> Applied:
    now = time.time()
    try:
        with aud.store._write() as conn:
            entries = _FIXES[f.action](aud, conn, f, actor, now)
    except _Moved as exc:
        return Applied(f.id, f.kind, f.action, False, str(exc))
    return Applied(f.id, f.kind, f.action, True, audit=entries)


# -- merge ----------------------------------------------------------------------------------

def _merge(aud: Audience, conn: Connection, f: Finding, actor: str,
           now: float) -> list[dict[str, Any]]:
    keep: str = f.plan["keep"]
    others: list[str] = f.plan["merge"]
    rows = {r.id: r for r in conn.execute(select(contacts).where(
        contacts.c.id.in_([keep, *others])))}
    for cid in (keep, *others):
        if cid not in rows:
            raise _Moved(f"contact {cid} no longer exists")
    k = rows[keep]
    attrs = json.loads(k.attributes)
    fields = {"timezone": k.timezone, "locale": k.locale, "quiet_hours": k.quiet_hours}
    merged = []
    for oid in others:
        o = rows[oid]
        moved, combined = _move_addresses(conn, oid, keep, now)
        ledger = conn.execute(update(consent_ledger).where(consent_ledger.c.contact_id == oid)
                              .values(contact_id=keep)).rowcount
        kept_consent = _move_consent(conn, oid, keep)
        history = {t.name: conn.execute(update(t).where(t.c.contact_id == oid)
                                        .values(contact_id=keep)).rowcount
                   for t in (confirmations, contact_sends, messages)}
        theirs = json.loads(o.attributes)
        took = sorted(a for a in theirs if a not in attrs)
        attrs.update({a: theirs[a] for a in took})
        filled = [n for n in fields if fields[n] is None and getattr(o, n) is not None]
        for n in filled:
            fields[n] = getattr(o, n)
        conn.execute(delete(contacts).where(contacts.c.id == oid))
        # links already sent name the old id: they must keep working (an unsubscribe link
        # lives 400 days), so the old id points at the contact it became
        _audit(conn, actor, "contact.alias", f"alias:{oid}", {"contact_id": keep}, now)
        merged.append({
            "id": oid, "external_id": o.external_id, "created_at": o.created_at,
            "addresses_moved": moved, "addresses_combined": combined,
            "ledger_rows_moved": ledger, "consent": kept_consent, "rows_moved": history,
            "attributes_taken": took, "fields_taken": filled,
        })
    conn.execute(update(contacts).where(contacts.c.id == keep).values(
        attributes=json.dumps(attrs), updated_at=now, **fields))
    entry = _audit(conn, actor, "contact.merged", f"contact:{keep}", {
        "finding": f.id, "evidence": f.evidence, "kept": {"id": keep,
                                                          "external_id": k.external_id},
        "merged": merged}, now)
    bump(conn)
    return [entry]


def _move_addresses(conn: Connection, src: str, dst: str,
                    now: float) -> tuple[list[str], list[dict[str, str]]]:
    """Move ``src``'s addresses to ``dst``; one both hold becomes one row, deactivated if
    either was (a merge must not bring a dead address back)."""
    mine = {(r.channel, r.address): r for r in conn.execute(
        select(_ca).where(_ca.c.contact_id == dst))}
    moved, combined = [], []
    for r in conn.execute(select(_ca).where(_ca.c.contact_id == src)).all():
        k = mine.get((r.channel, r.address))
        if k is None:
            conn.execute(update(_ca).where(_ca.c.id == r.id).values(contact_id=dst,
                                                                   updated_at=now))
            moved.append(r.id)
            continue
        dead = k if k.status != "active" else r
        conn.execute(update(_ca).where(_ca.c.id == k.id).values(
            verified=bool(k.verified) or bool(r.verified),
            last_seen=max(k.last_seen or 0, r.last_seen or 0) or None,
            status=dead.status, status_reason=dead.status_reason,
            status_evidence=dead.status_evidence, updated_at=now))
        conn.execute(delete(_ca).where(_ca.c.id == r.id))
        combined.append({"kept": k.id, "dropped": r.id})
    return moved, combined


def _move_consent(conn: Connection, src: str, dst: str) -> list[dict[str, Any]]:
    """Current consent of ``src`` onto ``dst``: per topic and channel, the newer wins."""
    mine = {(r.topic, r.channel): r for r in conn.execute(
        select(consent).where(consent.c.contact_id == dst))}
    out = []
    for r in conn.execute(select(consent).where(consent.c.contact_id == src)).all():
        key = (consent.c.topic == r.topic, consent.c.channel == r.channel)
        k = mine.get((r.topic, r.channel))
        if k is None:
            conn.execute(update(consent).where(consent.c.contact_id == src, *key)
                         .values(contact_id=dst))
            won = "merged"
        elif (r.at, r.ledger_id) > (k.at, k.ledger_id):
            conn.execute(update(consent).where(consent.c.contact_id == dst, *key).values(
                status=r.status, source=r.source, at=r.at, ledger_id=r.ledger_id))
            won = "merged"
        else:
            won = "kept"
        conn.execute(delete(consent).where(consent.c.contact_id == src, *key))
        best = k if won == "kept" and k is not None else r
        out.append({"topic": r.topic, "channel": r.channel, "status": best.status,
                    "ledger_id": best.ledger_id, "from": won})
    return out


# -- addresses ------------------------------------------------------------------------------

def _deactivate(aud: Audience, conn: Connection, f: Finding, actor: str,
                now: float) -> list[dict[str, Any]]:
    plan = f.plan
    if "keep" in plan:
        kept = conn.execute(select(_ca.c.status).where(_ca.c.id == plan["keep"])).scalar()
        if kept != "active":
            raise _Moved("the address is no longer active on the contact it would stay on")
    entries = []
    for aid in plan["deactivate"]:
        r = conn.execute(select(_ca).where(_ca.c.id == aid)).first()
        if r is None or r.status != "active":
            continue
        conn.execute(update(_ca).where(_ca.c.id == aid).values(
            status="deactivated", status_reason=plan["reason"], status_evidence=f.evidence,
            updated_at=now))
        entries.append(_audit(conn, actor, "address.deactivated", f"contact:{r.contact_id}", {
            "address_id": aid, "channel": r.channel, "reason": plan["reason"],
            "evidence": f.evidence, "was": r.status, "finding": f.id}, now))
    if not entries:
        raise _Moved("the address is no longer active where the finding saw it")
    bump(conn)
    return entries


def _suppress(aud: Audience, conn: Connection, f: Finding, actor: str,
              now: float) -> list[dict[str, Any]]:
    channel, address = f.plan["channel"], f.plan["address"]
    if conn.execute(select(_ca.c.id).where(_ca.c.channel == channel,
                                           _ca.c.address == address)).first():
        raise _Moved("a contact holds the address now: run the doctor again")
    if conn.execute(select(suppressions.c.reason).where(
            suppressions.c.channel == channel, suppressions.c.address == address)).first():
        raise _Moved("the address is on the suppression list already")
    aud.store.suppress_in(conn, channel, address, f.plan["reason"],
                          f"data doctor {f.id}: {f.evidence}", actor=actor)
    return [_last_audit(conn, "suppression.added", f"{channel}:{address}")]


# -- consent --------------------------------------------------------------------------------

def _withdraw(aud: Audience, conn: Connection, f: Finding, actor: str,
              now: float) -> list[dict[str, Any]]:
    p = f.plan
    cur = conn.execute(select(consent).where(
        consent.c.contact_id == p["contact"], consent.c.topic == p["topic"],
        consent.c.channel == p["channel"])).first()
    if cur is None or cur.status != "granted" or cur.ledger_id != p["ledger_id"]:
        raise _Moved("the consent changed since the finding was made")
    (lid,) = aud.record_consent([ConsentRecord(
        p["contact"], p["topic"], p["channel"], "withdrawn", "admin", now,
        proof=f"data doctor {f.id}: {f.evidence}", actor=actor)], conn)
    return [_audit(conn, actor, "consent.withdrawn", f"contact:{p['contact']}", {
        "finding": f.id, "topic": p["topic"], "channel": p["channel"], "ledger_id": lid,
        "replaces_ledger_id": p["ledger_id"], "evidence": f.evidence}, now)]


_Fix = Callable[[Audience, Connection, Finding, str, float], list[dict[str, Any]]]
_FIXES: dict[str, _Fix] = {"merge": _merge, "deactivate": _deactivate, "suppress": _suppress,
                           "withdraw_consent": _withdraw}


def _audit(conn: Connection, actor: str, action: str, subject: str, detail: dict[str, Any],
           now: float) -> dict[str, Any]:
    audit(conn, actor, action, subject, detail, now=now)
    return _last_audit(conn, action, subject)


def _last_audit(conn: Connection, action: str, subject: str) -> dict[str, Any]:
    r = conn.execute(select(audit_log).where(
        audit_log.c.action == action, audit_log.c.subject == subject)
        .order_by(audit_log.c.id.desc()).limit(1)).one()
    return {"id": r.id, "at": r.at, "actor": r.actor, "action": r.action,
            "subject": r.subject, "detail": json.loads(r.detail)}
