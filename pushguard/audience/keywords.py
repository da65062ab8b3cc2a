"""SMS opt-out and opt-in keywords: STOP, START and their synonyms (GUARANTEES.md §2.5).

A STOP from a phone suppresses the number for marketing (reason ``unsubscribe``: receipts and
password resets still go) and withdraws every granted SMS consent of every contact holding it.
A START lifts that suppression and grants again exactly the consents a STOP withdrew: the
latest ledger row of each says ``withdrawn`` by ``sms_keyword``, so a withdrawal made another
way (the preference centre, an unsubscribe link) stays withdrawn.

Providers deliver the same inbound message again when they doubt we got it. Each acted-on
message leaves an audit entry named after its id, and a message id already there is ignored:
a STOP delivered again after a later START must not stop the number again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, select, update

from pushguard.audience.gate import address_hash
from pushguard.audience.service import ConsentRecord
from pushguard.store.schema import (
    audit_log,
    confirmations,
    consent,
    contact_addresses,
    suppressions,
)
from pushguard.store.sql import audit

if TYPE_CHECKING:
    from pushguard.app import App

#: AWS's list, Twilio's STOPALL, and the usual French ones (ARRET, TD)
STOP = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT",
                  "OPT-OUT", "REMOVE", "ARRET", "TD"})
START = frozenset({"START", "UNSTOP", "YES"})
#: suppression reasons a START lifts: our own STOP, and a provider saying the number opted out
#: with it (Twilio 21610 is recorded as NO_CONSENT). A bounce or an invalid number stays.
LIFTED_BY_START = frozenset({"unsubscribe", "NO_CONSENT"})
SOURCE = "sms_keyword"


@dataclass(frozen=True, slots=True)
class KeywordResult:
    #: stop | start | none (not a keyword) | duplicate (this message was acted on already)
    action: str
    keyword: str
    #: consents withdrawn or granted again
    consents: int = 0
    suppression_changed: bool = False


def keyword_of(body: str) -> str:
    """The keyword a message is, if its whole text is one (trimmed, any case), else ``""``."""
    word = body.strip().upper()
    return word if word in STOP or word in START else ""


def handle_sms(app: App, phone: str, body: str, message_id: str,
               *, provider: str = "twilio") -> KeywordResult:
    """Act on one inbound SMS from ``phone`` (E.164); anything but a keyword changes nothing."""
    word = keyword_of(body)
    if not word:
        return KeywordResult("none", "")
    action = "stop" if word in STOP else "start"
    subject = f"inbound:{provider}:{message_id}"
    now = time.time()
    actor = f"inbound:{provider}"
    with app.audience.store._write() as conn:
        seen = conn.execute(select(audit_log.c.id).where(audit_log.c.subject == subject)
                            .limit(1)).first()
        if seen is not None:
            return KeywordResult("duplicate", word)
        holders = sorted(set(conn.execute(select(contact_addresses.c.contact_id).where(
            contact_addresses.c.channel == "sms",
            contact_addresses.c.address == phone)).scalars()))
        if action == "stop":
            before = _suppressed(conn, phone)
            app.audience.store.suppress_in(conn, "sms", phone, "unsubscribe",
                                           f"inbound STOP ({message_id})", actor=actor)
            changed = before is None
            # pending ones too: a STOP beats a confirmation link still in someone's inbox
            rows = (_consents(conn, holders, status="granted")
                    + _consents(conn, holders, status="pending"))
            new = "withdrawn"
            for cid, topic, _, _ in rows:
                conn.execute(update(confirmations).where(
                    confirmations.c.contact_id == cid, confirmations.c.topic == topic,
                    confirmations.c.channel == "sms", confirmations.c.confirmed_at.is_(None),
                    confirmations.c.expires_at > now).values(expires_at=now))
        else:
            reason = _suppressed(conn, phone)
            changed = reason in LIFTED_BY_START and app.audience.store.unsuppress_in(
                conn, "sms", phone, actor=actor, note=f"inbound {word} ({message_id})")
            rows = [r for r in _consents(conn, holders, status="withdrawn")
                    if r[3] == SOURCE]
            new = "granted"
            # a provider's opt-out report (e.g. Twilio 21610) also deactivated the number
            # on its contacts: START brings it back, audited
            if changed:
                revived = conn.execute(update(contact_addresses).where(
                    contact_addresses.c.channel == "sms",
                    contact_addresses.c.address == phone,
                    contact_addresses.c.status == "deactivated",
                    contact_addresses.c.status_reason.in_(sorted(LIFTED_BY_START)),
                ).values(status="active", status_reason=None, status_evidence=None,
                         updated_at=now)).rowcount
                if revived:
                    audit(conn, actor, "address.active", subject,
                          {"address": address_hash("sms", phone), "addresses": revived,
                           "keyword": word}, now=now)
        version = app.config.audience.policy_version
        app.audience.record_consent([ConsentRecord(
            cid, topic, "sms", new, SOURCE, now, None, None, message_id, version, actor)
            for cid, topic, _, _ in rows], conn)
        # no phone number here: this entry outlives an erasure of the contacts
        audit(conn, actor, f"inbound.{action}", subject,
              {"keyword": word, "address": address_hash("sms", phone),
               "contacts": len(holders), "consents": len(rows),
               "suppression_changed": bool(changed)}, now=now)
    return KeywordResult(action, word, len(rows), bool(changed))


def _suppressed(conn: Connection, phone: str) -> str | None:
    got = conn.execute(select(suppressions.c.reason).where(
        suppressions.c.channel == "sms", suppressions.c.address == phone)).scalar()
    return str(got) if got is not None else None


def _consents(conn: Connection, holders: list[str],
              *, status: str) -> list[tuple[str, str, str, str]]:
    if not holders:
        return []
    return [(r.contact_id, r.topic, r.status, r.source) for r in conn.execute(
        select(consent.c.contact_id, consent.c.topic, consent.c.status, consent.c.source)
        .where(consent.c.contact_id.in_(holders), consent.c.channel == "sms",
               consent.c.status == status)
        .order_by(consent.c.contact_id, consent.c.topic))]
