"""Contacts, addresses, topics and the consent ledger: what the edges call.

One :class:`Audience` per process, over the same :class:`~pushguard.store.sql.SQLStore` as the
queue. Every write that the pre-send gate caches moves the audience generation in the same
transaction (:func:`~pushguard.audience.gate.bump`), and every change a person may ask about
later (consent, suppression, address status, erasure, fixes) leaves a record: the consent
ledger or the audit log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, or_, select, update

from pushguard.addresses import normalize_address
from pushguard.audience.gate import address_hash, bump, consent_channel
from pushguard.audience.models import AddressIn, ContactIn, TopicIn
from pushguard.exceptions import InputError, NotFound
from pushguard.models import new_id
from pushguard.ssrf import OutboundGuard
from pushguard.store.schema import (
    attempts,
    audit_log,
    campaign_recipients,
    confirmations,
    consent,
    consent_ledger,
    contact_addresses,
    contact_sends,
    contacts,
    events,
    messages,
    suppressions,
    topics,
)
from pushguard.store.sql import SQLStore, audit

CHUNK = 500
#: platforms implied by a channel when the client does not say
_PLATFORM = {"apns": "ios", "webpush": "web"}


@dataclass(slots=True)
class UpsertResult:
    id: str
    external_id: str
    created: bool


@dataclass(slots=True)
class ConsentRecord:
    contact_id: str
    topic: str
    channel: str
    status: str
    source: str
    at: float
    ip: str | None = None
    user_agent: str | None = None
    proof: str | None = None
    policy_version: str | None = None
    actor: str = "api"


@dataclass(slots=True)
class NormalContact:
    """A contact after validation and normalisation, ready to write."""

    external_id: str
    attributes: dict[str, Any] | None
    timezone: str | None
    locale: str | None
    quiet_hours: str | None
    addresses: list[dict[str, Any]] = field(default_factory=list)
    #: which fields the client sent (others are left as stored)
    fields_set: frozenset[str] = frozenset()


def normalise_contact(c: ContactIn, guard: OutboundGuard, prefix: str = "",
                      *, resolve: bool = False) -> NormalContact:
    """Check every address of ``c`` for its channel and normalise it; raise ``InputError``
    naming the field (``addresses[1].address``). Duplicates within the contact collapse."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for i, a in enumerate(c.addresses):
        f = f"{prefix}addresses[{i}]."
        channel = a.channel
        addr = normalize_address(channel, a.address, guard=guard, field=f + "address",
                                 resolve=resolve)
        row = _address_row(a, channel, addr)
        prior = seen.get((channel, addr))
        if prior is not None:
            prior["verified"] = prior["verified"] or row["verified"]
            continue
        seen[(channel, addr)] = row
    return NormalContact(
        external_id=c.external_id, attributes=c.attributes, timezone=c.timezone,
        locale=c.locale, quiet_hours=c.quiet_hours, addresses=list(seen.values()),
        fields_set=frozenset(c.model_fields_set),
    )


def _address_row(a: AddressIn, channel: str, addr: str) -> dict[str, Any]:
    return {
        "channel": channel, "address": addr,
        "platform": a.platform or _PLATFORM.get(channel),
        "environment": a.environment if channel in ("apns", "fcm") else None,
        "verified": a.verified, "last_seen": a.last_seen,
    }


def _merge(prior: NormalContact, later: NormalContact) -> NormalContact:
    """Two upserts of one external id in one call, as if made one after the other."""
    def pick(name: str) -> Any:
        return getattr(later if name in later.fields_set else prior, name)

    attrs = later.attributes
    if prior.attributes and "attributes" in prior.fields_set:
        attrs = {**prior.attributes, **(later.attributes or {})}
    return NormalContact(
        external_id=later.external_id, attributes=attrs, timezone=pick("timezone"),
        locale=pick("locale"), quiet_hours=pick("quiet_hours"),
        addresses=[*prior.addresses, *later.addresses],
        fields_set=prior.fields_set | later.fields_set,
    )


class Audience:
    def __init__(self, store: SQLStore, guard: OutboundGuard) -> None:
        self.store = store
        self.guard = guard

    # -- topics -----------------------------------------------------------------------------

    def put_topic(self, t: TopicIn, *, actor: str = "api") -> dict[str, Any]:
        now = time.time()
        row = {"name": t.name, "kind": t.kind, "description": t.description,
               "double_opt_in": t.double_opt_in, "cap": t.cap, "quiet_hours": t.quiet_hours}
        with self.store._write() as conn:
            prior = conn.execute(select(topics).where(topics.c.name == t.name)).first()
            if prior is None:
                conn.execute(insert(topics).values(created_at=now, **row))
            else:
                conn.execute(update(topics).where(topics.c.name == t.name).values(**row))
            audit(conn, actor, "topic.created" if prior is None else "topic.updated",
                  f"topic:{t.name}", row, now=now)
            bump(conn)
        return self.topic(t.name)

    def topic(self, name: str) -> dict[str, Any]:
        with self.store._read() as conn:
            r = conn.execute(select(topics).where(topics.c.name == name)).first()
        if r is None:
            raise NotFound(f"no topic {name!r}")
        return _topic_json(r)

    def topics(self) -> list[dict[str, Any]]:
        with self.store._read() as conn:
            return [_topic_json(r) for r in conn.execute(select(topics).order_by(topics.c.name))]

    def topic_kinds(self) -> dict[str, str]:
        with self.store._read() as conn:
            return {n: k for n, k in conn.execute(select(topics.c.name, topics.c.kind))}

    # -- contacts ---------------------------------------------------------------------------

    def upsert(self, items: Sequence[NormalContact], *, actor: str = "api",
               now: float | None = None, conn: Connection | None = None) -> list[UpsertResult]:
        """Create or update contacts (by external id) and add their addresses, in one
        transaction (the caller's, when ``conn`` is given); many at once is the bulk import's
        path."""
        if conn is None:
            with self.store._write() as c:
                return self.upsert(items, actor=actor, now=now, conn=c)
        now = now if now is not None else time.time()
        out: list[UpsertResult] = []
        for i in range(0, len(items), CHUNK):
            out.extend(self._upsert_chunk(conn, items[i : i + CHUNK], now))
        bump(conn)
        return out

    def _upsert_chunk(self, conn: Connection, items: Sequence[NormalContact],
                      now: float) -> list[UpsertResult]:
        # the last occurrence of an external id in one call wins, field by field, like
        # sequential upserts: a later row that leaves a field out keeps the earlier value
        merged: dict[str, NormalContact] = {}
        for c in items:
            prior = merged.get(c.external_id)
            merged[c.external_id] = c if prior is None else _merge(prior, c)
        ext = sorted(merged)
        existing = {r.external_id: r for r in conn.execute(
            select(contacts).where(contacts.c.external_id.in_(ext)))}
        new_rows, updates = [], []
        ids: dict[str, str] = {}
        for e in ext:
            c = merged[e]
            old = existing.get(e)
            if old is None:
                cid = new_id("ctc")
                attrs = {k: v for k, v in (c.attributes or {}).items() if v is not None}
                new_rows.append({
                    "id": cid, "external_id": e, "attributes": json.dumps(attrs),
                    "timezone": c.timezone, "locale": c.locale, "quiet_hours": c.quiet_hours,
                    "created_at": now, "updated_at": now,
                })
            else:
                cid = old.id
                attrs = json.loads(old.attributes)
                for k, v in (c.attributes or {}).items():
                    if v is None:
                        attrs.pop(k, None)
                    else:
                        attrs[k] = v
                updates.append({
                    "b_id": cid, "attributes": json.dumps(attrs),
                    "timezone": c.timezone if "timezone" in c.fields_set else old.timezone,
                    "locale": c.locale if "locale" in c.fields_set else old.locale,
                    "quiet_hours": c.quiet_hours if "quiet_hours" in c.fields_set
                    else old.quiet_hours,
                    "updated_at": now,
                })
            ids[e] = cid
        if new_rows:
            conn.execute(insert(contacts), new_rows)
        if updates:
            conn.execute(update(contacts).where(contacts.c.id == bindparam("b_id")).values(
                attributes=bindparam("attributes"), timezone=bindparam("timezone"),
                locale=bindparam("locale"), quiet_hours=bindparam("quiet_hours"),
                updated_at=bindparam("updated_at")), updates)
        fresh = {str(r["id"]) for r in new_rows}
        self._add_addresses(conn, [(ids[e], a) for e in ext for a in merged[e].addresses], now,
                            fresh=fresh)
        return [UpsertResult(ids[e], e, e not in existing) for e in ext]

    def _add_addresses(self, conn: Connection, pairs: list[tuple[str, dict[str, Any]]],
                       now: float, *, fresh: Collection[str] = ()) -> None:
        """Add each address to its contact, or refresh it when the contact has it already.
        Contacts in ``fresh`` were created in this transaction, so they have no addresses
        to look up (the bulk import's common case: one query fewer per chunk)."""
        if not pairs:
            return
        cids = sorted({c for c, _ in pairs if c not in fresh})
        have: dict[tuple[str, str, str], Any] = {}
        for i in range(0, len(cids), CHUNK):
            for r in conn.execute(select(contact_addresses).where(
                    contact_addresses.c.contact_id.in_(cids[i : i + CHUNK]))):
                have[(r.contact_id, r.channel, r.address)] = r
        new, seen_upd = [], []
        for cid, a in pairs:
            key = (cid, a["channel"], a["address"])
            old = have.get(key)
            if old is None:
                row = {"id": new_id("adr"), "contact_id": cid, "status": "active",
                       "status_reason": None, "status_evidence": None, "created_at": now,
                       "updated_at": now, **a}
                row["last_seen"] = a["last_seen"] if a["last_seen"] is not None else now
                new.append(row)
                have[key] = row  # a repeat in the same call is an update, not a duplicate
            elif isinstance(old, dict):
                old["verified"] = old["verified"] or a["verified"]
            else:
                seen_upd.append({
                    "b_id": old.id, "verified": bool(old.verified) or a["verified"],
                    # repeating an address (a nightly CRM sync) is not a sign of life
                    "last_seen": max(old.last_seen or 0, a["last_seen"] or 0) or None,
                    "platform": a["platform"] or old.platform,
                    "environment": a["environment"] or old.environment, "updated_at": now,
                })
        if new:
            conn.execute(insert(contact_addresses), new)
        if seen_upd:
            conn.execute(update(contact_addresses)
                         .where(contact_addresses.c.id == bindparam("b_id"))
                         .values(verified=bindparam("verified"), last_seen=bindparam("last_seen"),
                                 platform=bindparam("platform"),
                                 environment=bindparam("environment"),
                                 updated_at=bindparam("updated_at")), seen_upd)

    def resolve(self, ref: str, conn: Connection | None = None) -> str:
        """A contact's id from its id (``ctc_...``) or its external id."""
        def look(c: Connection) -> str | None:
            q = select(contacts.c.id).where(
                or_(contacts.c.id == ref, contacts.c.external_id == ref))
            return c.execute(q).scalar()

        if conn is not None:
            found = look(conn)
        else:
            with self.store._read() as c:
                found = look(c)
        if found is None:
            raise NotFound(f"no contact {ref!r}")
        return str(found)

    def contact(self, ref: str) -> dict[str, Any]:
        with self.store._read() as conn:
            cid = self.resolve(ref, conn)
            return self._contact_json(conn, cid)

    def _contact_json(self, conn: Connection, cid: str) -> dict[str, Any]:
        r = conn.execute(select(contacts).where(contacts.c.id == cid)).one()
        addrs = [_address_json(a) for a in conn.execute(
            select(contact_addresses).where(contact_addresses.c.contact_id == cid)
            .order_by(contact_addresses.c.created_at, contact_addresses.c.id))]
        cons = [{"topic": c.topic, "channel": c.channel, "status": c.status,
                 "source": c.source, "at": c.at}
                for c in conn.execute(select(consent).where(consent.c.contact_id == cid)
                                      .order_by(consent.c.topic, consent.c.channel))]
        return {
            "id": r.id, "external_id": r.external_id, "attributes": json.loads(r.attributes),
            "timezone": r.timezone, "locale": r.locale, "quiet_hours": r.quiet_hours,
            "created_at": r.created_at, "updated_at": r.updated_at,
            "addresses": addrs, "consent": cons,
        }

    def contacts(self, *, limit: int = 100, after: str | None = None) -> list[dict[str, Any]]:
        q = select(contacts.c.id).order_by(contacts.c.id).limit(limit)
        if after:
            q = q.where(contacts.c.id > after)
        with self.store._read() as conn:
            return [self._contact_json(conn, cid) for cid in conn.execute(q).scalars()]

    def contact_for_address(self, channel: str, address: str) -> list[str]:
        with self.store._read() as conn:
            return list(conn.execute(select(contact_addresses.c.contact_id).where(
                contact_addresses.c.channel == channel,
                contact_addresses.c.address == address)).scalars())

    def active_addresses(self, ref: str, channel: str) -> tuple[str, list[str]]:
        """``(contact id, addresses)``: the contact's active addresses on ``channel``, best
        first (verified, then most recently seen); InputError when there is none."""
        with self.store._read() as conn:
            cid = self.resolve(ref, conn)
            rows = conn.execute(select(contact_addresses).where(
                contact_addresses.c.contact_id == cid,
                contact_addresses.c.channel == channel,
                contact_addresses.c.status == "active")).all()
        if not rows:
            raise InputError("contact", f"contact {ref!r} has no active {channel} address")
        best = sorted(rows, key=lambda r: (bool(r.verified), r.last_seen or 0, r.created_at),
                      reverse=True)
        return cid, [r.address for r in best]

    def set_address_status(self, ref: str, address_id: str, status: str, reason: str,
                           evidence: str | None, *, actor: str) -> dict[str, Any]:
        now = time.time()
        with self.store._write() as conn:
            cid = self.resolve(ref, conn)
            row = conn.execute(select(contact_addresses).where(
                contact_addresses.c.id == address_id,
                contact_addresses.c.contact_id == cid)).first()
            if row is None:
                raise NotFound(f"contact {ref!r} has no address {address_id!r}")
            conn.execute(update(contact_addresses).where(contact_addresses.c.id == address_id)
                         .values(status=status, status_reason=reason,
                                 status_evidence=evidence, updated_at=now))
            audit(conn, actor, f"address.{status}", f"contact:{cid}",
                  {"address_id": address_id, "channel": row.channel, "reason": reason,
                   "evidence": evidence, "was": row.status}, now=now)
            bump(conn)
            return self._contact_json(conn, cid)

    # -- consent ----------------------------------------------------------------------------

    def record_consent(self, records: Iterable[ConsentRecord],
                       conn: Connection | None = None) -> list[int]:
        """Append to the ledger and move the current consent, in one transaction."""
        if conn is None:
            with self.store._write() as c:
                return self.record_consent(records, c)
        kinds = dict(conn.execute(select(topics.c.name, topics.c.kind)).all())
        ids = []
        for rec in records:
            if rec.topic not in kinds:
                raise InputError("topic", f"unknown topic {rec.topic!r}")
            res = conn.execute(insert(consent_ledger).values(
                contact_id=rec.contact_id, topic=rec.topic, channel=rec.channel,
                status=rec.status, source=rec.source, at=rec.at, ip=rec.ip,
                user_agent=rec.user_agent, proof=rec.proof, policy_version=rec.policy_version,
                actor=rec.actor))
            lid = int(res.inserted_primary_key[0])  # type: ignore[index]
            key = and_(consent.c.contact_id == rec.contact_id, consent.c.topic == rec.topic,
                       consent.c.channel == rec.channel)
            values = {"status": rec.status, "source": rec.source, "at": rec.at,
                      "ledger_id": lid}
            if conn.execute(update(consent).where(key).values(**values)).rowcount == 0:
                conn.execute(insert(consent).values(contact_id=rec.contact_id, topic=rec.topic,
                                                    channel=rec.channel, **values))
            ids.append(lid)
        bump(conn)
        return ids

    def confirmed(self, cid: str, topic: str, channel: str, proof: str | None) -> bool:
        """Whether ``proof`` names a confirmation this contact completed for this topic and
        channel: what granting a confirmed-opt-in topic by hand must point to."""
        if not proof:
            return False
        with self.store._read() as conn:
            return conn.execute(select(confirmations.c.id).where(
                confirmations.c.id == proof, confirmations.c.contact_id == cid,
                confirmations.c.topic == topic, confirmations.c.channel == channel,
                confirmations.c.confirmed_at.is_not(None))).first() is not None

    def ledger(self, ref: str) -> list[dict[str, Any]]:
        with self.store._read() as conn:
            cid = self.resolve(ref, conn)
            return [_ledger_json(r) for r in conn.execute(
                select(consent_ledger).where(consent_ledger.c.contact_id == cid)
                .order_by(consent_ledger.c.id))]

    def current_consent(self, cid: str, conn: Connection) -> dict[tuple[str, str], str]:
        return {(r.topic, r.channel): r.status for r in conn.execute(
            select(consent).where(consent.c.contact_id == cid))}

    # -- export and erasure -----------------------------------------------------------------

    def export(self, ref: str) -> dict[str, Any]:
        """Everything held about a contact (GDPR Art. 15): the contact, its addresses,
        the consent ledger, confirmations, messages sent to it, suppressions and audit."""
        with self.store._read() as conn:
            cid = self.resolve(ref, conn)
            out = self._contact_json(conn, cid)
            out["consent_ledger"] = [_ledger_json(r) for r in conn.execute(
                select(consent_ledger).where(consent_ledger.c.contact_id == cid)
                .order_by(consent_ledger.c.id))]
            out["confirmations"] = [
                {"id": r.id, "topic": r.topic, "channel": r.channel, "address": r.address,
                 "created_at": r.created_at, "expires_at": r.expires_at,
                 "confirmed_at": r.confirmed_at}
                for r in conn.execute(select(confirmations)
                                      .where(confirmations.c.contact_id == cid))]
            pairs = [(a["channel"], a["address"]) for a in out["addresses"]]
            msgs = conn.execute(select(
                messages.c.id, messages.c.channel, messages.c.to_addr, messages.c.topic,
                messages.c.state, messages.c.created_at, messages.c.content).where(
                or_(messages.c.contact_id == cid,
                    *[and_(messages.c.channel == ch, messages.c.to_addr == a)
                      for ch, a in pairs[:200]])).order_by(messages.c.created_at)).all()
            out["messages"] = [{"id": m.id, "channel": m.channel, "to": m.to_addr,
                                "topic": m.topic, "state": m.state, "created_at": m.created_at,
                                "content": json.loads(m.content)} for m in msgs]
            out["suppressions"] = [
                {"channel": s.channel, "address": s.address, "reason": s.reason,
                 "source": s.source, "created_at": s.created_at}
                for s in conn.execute(select(suppressions).where(or_(
                    *[and_(suppressions.c.channel == ch, suppressions.c.address == a)
                      for ch, a in pairs[:200]]))) if pairs]
            out["campaigns"] = [
                {"campaign_id": r.campaign_id, "state": r.state, "round": r.round,
                 "channel": r.channel, "message_id": r.message_id, "variant": r.variant,
                 "detail": r.detail}
                for r in conn.execute(select(campaign_recipients).where(
                    campaign_recipients.c.contact_id == cid))]
            out["audit"] = [
                {"at": a.at, "actor": a.actor, "action": a.action,
                 "detail": json.loads(a.detail)}
                for a in conn.execute(select(audit_log).where(
                    audit_log.c.subject == f"contact:{cid}").order_by(audit_log.c.id))]
        return out

    def erase(self, ref: str, *, actor: str) -> dict[str, Any]:
        """Forget a contact (GDPR Art. 17). What stays: a hashed suppression entry per
        address, so the person is never messaged again by mistake, and an audit entry
        that says an erasure happened (no personal data)."""
        now = time.time()
        with self.store._write() as conn:
            cid = self.resolve(ref, conn)
            addrs = conn.execute(select(contact_addresses.c.channel, contact_addresses.c.address)
                                 .where(contact_addresses.c.contact_id == cid)).all()
            hashed = [{"channel": ch, "address": address_hash(ch, a), "reason": "erased",
                       "source": "erasure", "created_at": now} for ch, a in addrs]
            if hashed:
                conn.execute(self.store._insert_ignore(suppressions), hashed)
                conn.execute(delete(suppressions).where(or_(*[
                    and_(suppressions.c.channel == ch, suppressions.c.address == a)
                    for ch, a in addrs])))
            # messages keep their state and history for the counts, not the person: the
            # address becomes its hash wherever a text quotes it, contents and pending legs go
            conds = [messages.c.contact_id == cid] + [
                and_(messages.c.channel == ch, messages.c.to_addr == a) for ch, a in addrs]
            ids = list(conn.execute(select(messages.c.id).where(or_(*conds))).scalars())
            for ch, a in addrs:
                h = address_hash(ch, a)
                conn.execute(update(messages).where(messages.c.channel == ch,
                                                    messages.c.to_addr == a)
                             .values(to_addr=h))
                for i in range(0, len(ids), CHUNK):
                    chunk = ids[i : i + CHUNK]
                    conn.execute(update(messages).where(messages.c.id.in_(chunk)).values(
                        failure=func.replace(messages.c.failure, a, h)))
                    conn.execute(update(events).where(events.c.message_id.in_(chunk)).values(
                        reason=func.replace(events.c.reason, a, h)))
                    conn.execute(update(attempts).where(attempts.c.message_id.in_(chunk))
                                 .values(detail=func.replace(attempts.c.detail, a, h),
                                         raw=func.replace(attempts.c.raw, a, h)))
                conn.execute(update(audit_log).where(audit_log.c.subject == f"{ch}:{a}")
                             .values(subject=f"{ch}:{h}",
                                     detail=func.replace(audit_log.c.detail, a, h)))
            for i in range(0, len(ids), CHUNK):
                conn.execute(update(messages).where(messages.c.id.in_(ids[i : i + CHUNK]))
                             .values(contact_id=None, content="{}", fallback=None,
                                     confirm_by=None))
            # a campaign keeps counting the recipient, without the words that may quote it
            conn.execute(update(campaign_recipients).where(
                campaign_recipients.c.contact_id == cid).values(detail=None))
            for table, col in ((contact_addresses, contact_addresses.c.contact_id),
                               (consent, consent.c.contact_id),
                               (consent_ledger, consent_ledger.c.contact_id),
                               (confirmations, confirmations.c.contact_id),
                               (contact_sends, contact_sends.c.contact_id),
                               (contacts, contacts.c.id)):
                conn.execute(delete(table).where(col == cid))
            conn.execute(delete(audit_log).where(audit_log.c.subject == f"contact:{cid}"))
            audit(conn, actor, "contact.erased", f"erased:{cid}",
                  {"addresses": len(addrs)}, now=now)
            bump(conn)
        return {"id": cid, "erased": True, "addresses_suppressed": len(addrs)}

    def channel_of(self, message_channel: str) -> str:
        return consent_channel(message_channel)

    def audit(self, *, subject: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        q = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if subject:
            q = q.where(audit_log.c.subject == subject)
        with self.store._read() as conn:
            return [{"id": r.id, "at": r.at, "actor": r.actor, "action": r.action,
                     "subject": r.subject, "detail": json.loads(r.detail)}
                    for r in conn.execute(q)]


def _topic_json(r: Any) -> dict[str, Any]:
    return {"name": r.name, "kind": r.kind, "description": r.description,
            "double_opt_in": bool(r.double_opt_in), "cap": r.cap,
            "quiet_hours": r.quiet_hours, "created_at": r.created_at}


def _address_json(a: Any) -> dict[str, Any]:
    return {"id": a.id, "channel": a.channel, "address": a.address, "platform": a.platform,
            "environment": a.environment, "verified": bool(a.verified),
            "last_seen": a.last_seen, "status": a.status, "status_reason": a.status_reason,
            "status_evidence": a.status_evidence}


def _ledger_json(r: Any) -> dict[str, Any]:
    return {"id": r.id, "topic": r.topic, "channel": r.channel, "status": r.status,
            "source": r.source, "at": r.at, "ip": r.ip, "user_agent": r.user_agent,
            "proof": r.proof, "policy_version": r.policy_version, "actor": r.actor}
