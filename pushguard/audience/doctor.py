"""The data doctor: what is wrong in the audience data, the evidence, and a fix for each.

Five kinds of finding, each found by a query the database does most of the work of:

- ``duplicate_contacts``: contacts that share an active email (compared case-insensitively)
  or phone number; the fix merges them into the oldest.
- ``conflicting_address``: one push token or phone number active on several contacts; the
  fix keeps it on the contact that used it last and deactivates it elsewhere.
- ``stale_token``: a push token not seen for 270 days and not delivered to since; the fix
  deactivates it.
- ``soft_bouncing``: an address whose last 3 or more messages in 30 days ended with a
  temporary recipient failure and none was delivered since; the fix deactivates it (or
  suppresses it when no contact holds it).
- ``consent_without_proof``: a current grant whose ledger row has no proof, or a grant on a
  confirmed opt-in topic that did not come from a confirmation; the fix withdraws it, and is
  applied only when asked for by id or by kind (it stops messages a person may want).

A finding's id is a hash of its kind and subjects, so the same problem keeps its id between
runs and a fix names exactly what was looked at. Nothing is changed unless asked; each fix is
re-checked and applied in its own transaction, and writes the audit log
(:mod:`pushguard.audience.repair`).
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, distinct, func, select

from pushguard import taxonomy
from pushguard.store.schema import (
    consent,
    consent_ledger,
    contact_addresses,
    contacts,
    messages,
    suppressions,
    topics,
)

if TYPE_CHECKING:
    from pushguard.audience.service import Audience

KINDS = ("duplicate_contacts", "conflicting_address", "stale_token", "soft_bouncing",
         "consent_without_proof")
_PREFIX = {"duplicate_contacts": "dup", "conflicting_address": "conflict",
           "stale_token": "stale", "soft_bouncing": "bounce",
           "consent_without_proof": "consent"}
PUSH = ("fcm", "apns", "webpush")
DAY = 86400.0
#: recipient failures that may clear up by themselves (mailbox full, phone off)
SOFT_CAUSES = tuple(c.name for c in taxonomy.CAUSES.values()
                    if c.transient and c.name.startswith("RECIPIENT"))
#: states a message ends in without being delivered
ENDED = ("failed", "dead", "expired")
_IN = 500

_ca = contact_addresses


@dataclass(slots=True)
class Finding:
    """One problem: what, who, the evidence in words, and the fix that would be applied."""

    id: str
    kind: str
    contacts: list[dict[str, str]]
    addresses: list[dict[str, Any]]
    evidence: str
    fix: str
    #: merge | deactivate | suppress | withdraw_consent
    action: str
    #: applied only when named (by id or kind), never as part of a routine clean-up
    explicit: bool = False
    #: what applying needs: ids as they were when the finding was made
    plan: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "contacts": self.contacts,
                "addresses": self.addresses, "evidence": self.evidence,
                "fix": {"action": self.action, "description": self.fix,
                        "explicit_only": self.explicit}}


def finding_id(kind: str, subjects: Iterable[str]) -> str:
    """Stable across runs: the same kind and subjects give the same id."""
    digest = hashlib.sha256("\0".join([kind, *subjects]).encode()).hexdigest()
    return f"{_PREFIX[kind]}-{digest[:12]}"


class Doctor:
    def __init__(self, audience: Audience, *, stale_days: float = 270,
                 bounce_days: float = 30, bounces: int = 3) -> None:
        self.audience = audience
        self.stale_days = stale_days
        self.bounce_days = bounce_days
        self.bounces = bounces

    def findings(self, now: float | None = None) -> list[Finding]:
        """Every finding, by kind then id."""
        now = now if now is not None else time.time()
        with self.audience.store._read() as conn:
            dups = self._duplicates(conn)
            found = [*dups, *self._conflicts(conn, dups)]
            found += self._stale_and_bouncing(conn, now)
            found += self._consent(conn)
        order = {k: i for i, k in enumerate(KINDS)}
        return sorted(found, key=lambda f: (order[f.kind], f.id))

    # -- duplicates -------------------------------------------------------------------------

    def _shared(self, conn: Connection, channels: Sequence[str],
                fold: bool) -> list[Any]:
        """Active addresses on these channels that more than one contact holds (``fold``:
        compared case-insensitively)."""
        key = func.lower(_ca.c.address) if fold else _ca.c.address
        live = (_ca.c.channel.in_(channels), _ca.c.status == "active")
        shared = select(_ca.c.channel, key.label("k")).where(*live).group_by(
            _ca.c.channel, key).having(func.count(distinct(_ca.c.contact_id)) > 1).subquery()
        q = select(_ca.c.id, _ca.c.contact_id, _ca.c.channel, _ca.c.address, _ca.c.last_seen,
                   _ca.c.created_at, key.label("k")).join(
            shared, (shared.c.channel == _ca.c.channel) & (shared.c.k == key)).where(*live)
        return list(conn.execute(q.order_by(_ca.c.channel, key, _ca.c.contact_id)))

    def _duplicates(self, conn: Connection) -> list[Finding]:
        rows = self._shared(conn, ("email",), True) + self._shared(conn, ("sms",), False)
        parent: dict[str, str] = {}

        def root(x: str) -> str:
            while parent.setdefault(x, x) != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        by_key: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for r in rows:
            by_key[(r.channel, r.k)].append(r)
        for group in by_key.values():
            for r in group[1:]:
                parent[root(r.contact_id)] = root(group[0].contact_id)
        members: dict[str, set[str]] = defaultdict(set)
        for r in rows:
            members[root(r.contact_id)].add(r.contact_id)
        groups_of: dict[str, list[list[Any]]] = defaultdict(list)
        for group in by_key.values():
            groups_of[root(group[0].contact_id)].append(group)
        info = _contacts(conn, {r.contact_id for r in rows})
        out = []
        for top, ids in members.items():
            ids = {i for i in ids if i in info}
            if len(ids) < 2:
                continue
            ordered = sorted(ids, key=lambda i: (info[i][1], i))
            keep, rest = ordered[0], ordered[1:]
            shared = groups_of[top]
            said = [f"{'email' if g[0].channel == 'email' else 'phone'} {g[0].address} is on "
                    + ", ".join(_who(info, r.contact_id) for r in g) for g in shared]
            out.append(Finding(
                id=finding_id("duplicate_contacts", sorted(ids)), kind="duplicate_contacts",
                contacts=[_contact(info, i) for i in ordered],
                addresses=[_address(r) for g in shared for r in g],
                evidence="; ".join(said),
                fix=f"merge {', '.join(_who(info, i) for i in rest)} into {_who(info, keep)} "
                "(the oldest): move addresses, the consent ledger and current consent (the "
                "newest per topic and channel wins), then delete the merged contacts",
                action="merge", plan={"keep": keep, "merge": rest}))
        return out

    # -- conflicting addresses --------------------------------------------------------------

    def _conflicts(self, conn: Connection, dups: list[Finding]) -> list[Finding]:
        rows = self._shared(conn, (*PUSH, "sms"), False)
        if not rows:
            return []
        info = _contacts(conn, {r.contact_id for r in rows})
        used = _last_delivered_by_contact(conn, sorted(info))
        groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for r in rows:
            groups[(r.channel, r.address)].append(r)
        merged_in = {frozenset([f.plan["keep"], *f.plan["merge"]]): f.id for f in dups}
        out = []
        for (channel, address), group in groups.items():
            def last_use(r: Any) -> float:
                return max(r.last_seen or 0.0,
                           used.get((r.contact_id, r.channel, r.address), 0.0))

            ranked = sorted(group, key=lambda r: (last_use(r), r.created_at, r.contact_id),
                            reverse=True)
            keep, rest = ranked[0], ranked[1:]
            holders = {r.contact_id for r in group}
            also = next((fid for ids, fid in merged_in.items() if holders <= ids), None)
            what = "phone number" if channel == "sms" else f"{channel} token"
            evidence = (f"the {what} {_short(address)} is active on {len(group)} contacts: "
                        + ", ".join(f"{_who(info, r.contact_id)} (last used "
                                    f"{_day(last_use(r))})" for r in ranked))
            if also:
                evidence += f"; if they are one person, merge them instead ({also})"
            out.append(Finding(
                id=finding_id("conflicting_address", [channel, address, *sorted(holders)]),
                kind="conflicting_address",
                contacts=[_contact(info, r.contact_id) for r in ranked],
                addresses=[_address(r) for r in ranked], evidence=evidence,
                fix=f"keep it on {_who(info, keep.contact_id)}, who used it last; deactivate it "
                f"on {', '.join(_who(info, r.contact_id) for r in rest)} (reason conflict)",
                action="deactivate",
                plan={"keep": keep.id, "deactivate": [r.id for r in rest],
                      "reason": "conflict"}))
        return out

    # -- stale tokens and soft bounces ------------------------------------------------------

    def _stale_and_bouncing(self, conn: Connection, now: float) -> list[Finding]:
        stale_cut = now - self.stale_days * DAY
        bounce_cut = now - self.bounce_days * DAY
        stale = list(conn.execute(select(
            _ca.c.id, _ca.c.contact_id, _ca.c.channel, _ca.c.address, _ca.c.last_seen,
            _ca.c.created_at).where(
            _ca.c.channel.in_(PUSH), _ca.c.status == "active",
            func.coalesce(_ca.c.last_seen, _ca.c.created_at) < stale_cut)))
        bounced: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for m in conn.execute(select(
                messages.c.id, messages.c.channel, messages.c.to_addr, messages.c.created_at,
                messages.c.last_cause).where(
                messages.c.last_cause.in_(SOFT_CAUSES), messages.c.created_at >= bounce_cut,
                messages.c.state.in_(ENDED))):
            bounced[(m.channel, m.to_addr)].append(m)
        bounced = {k: v for k, v in bounced.items() if len(v) >= self.bounces}
        wanted = {(r.channel, r.address) for r in stale} | set(bounced)
        delivered = _last_delivered(conn, wanted, min(stale_cut, bounce_cut))
        out = []
        live_stale = [r for r in stale
                      if delivered.get((r.channel, r.address), 0.0) < stale_cut]
        info = _contacts(conn, {r.contact_id for r in live_stale})
        for r in live_stale:
            if r.contact_id not in info:
                continue
            seen = r.last_seen or r.created_at
            evidence = (f"the {r.channel} token {_short(r.address)} of "
                        f"{_who(info, r.contact_id)} was last seen {_day(seen)} "
                        f"({(now - seen) / DAY:.0f} days ago) and no message was delivered to "
                        f"it in the last {self.stale_days:.0f} days")
            out.append(Finding(
                id=finding_id("stale_token", [r.id]), kind="stale_token",
                contacts=[_contact(info, r.contact_id)], addresses=[_address(r)],
                evidence=evidence,
                fix="deactivate it (reason stale_token); the contact's other addresses still "
                "receive messages, and the app registers a new token when it runs again",
                action="deactivate", plan={"deactivate": [r.id], "reason": "stale_token"}))
        out += self._bouncing(conn, bounced, delivered)
        return out

    def _bouncing(self, conn: Connection, bounced: dict[tuple[str, str], list[Any]],
                  delivered: dict[tuple[str, str], float]) -> list[Finding]:
        out = []
        for (channel, address), msgs in sorted(bounced.items()):
            since = delivered.get((channel, address), 0.0)
            after = sorted((m for m in msgs if m.created_at > since),
                           key=lambda m: m.created_at)
            if len(after) < self.bounces:
                continue
            holders = list(conn.execute(select(
                _ca.c.id, _ca.c.contact_id, _ca.c.channel, _ca.c.address, _ca.c.status).where(
                _ca.c.channel == channel, _ca.c.address == address)))
            active = [h for h in holders if h.status == "active"]
            if holders and not active:
                continue  # deactivated already: the gate stops it
            if not holders and conn.execute(select(suppressions.c.reason).where(
                    suppressions.c.channel == channel,
                    suppressions.c.address == address)).first():
                continue
            info = _contacts(conn, {h.contact_id for h in active})
            causes = sorted({m.last_cause for m in after})
            evidence = (f"{len(after)} messages to {_short(address)} ({channel}) in the last "
                        f"{self.bounce_days:.0f} days ended with {', '.join(causes)} (first "
                        f"{_day(after[0].created_at)}, last {_day(after[-1].created_at)}: "
                        f"{after[-1].id}); none was delivered since")
            if active:
                fix = ("deactivate it (reason soft_bounce) on "
                       + ", ".join(_who(info, h.contact_id) for h in active))
                plan: dict[str, Any] = {"deactivate": [h.id for h in active],
                                        "reason": "soft_bounce"}
                action = "deactivate"
            else:
                fix = "no contact holds it: put it on the suppression list (reason soft_bounce)"
                plan = {"channel": channel, "address": address, "reason": "soft_bounce"}
                action = "suppress"
            out.append(Finding(
                id=finding_id("soft_bouncing", [channel, address]), kind="soft_bouncing",
                contacts=[_contact(info, h.contact_id) for h in active],
                addresses=[_address(h) for h in active] or
                [{"channel": channel, "address": address}],
                evidence=evidence, fix=fix, action=action,
                plan={**plan, "evidence": evidence}))
        return out

    # -- consent ----------------------------------------------------------------------------

    def _consent(self, conn: Connection) -> list[Finding]:
        q = select(consent.c.contact_id, consent.c.topic, consent.c.channel, consent.c.source,
                   consent.c.at, consent.c.ledger_id, consent_ledger.c.proof,
                   topics.c.double_opt_in).join(
            consent_ledger, consent_ledger.c.id == consent.c.ledger_id).join(
            topics, topics.c.name == consent.c.topic).where(consent.c.status == "granted")
        rows = [r for r in conn.execute(q)
                if not (r.proof or "").strip()
                or (r.double_opt_in and r.source != "double_opt_in")]
        info = _contacts(conn, {r.contact_id for r in rows})
        out = []
        for r in rows:
            if r.contact_id not in info:
                continue
            who = _who(info, r.contact_id)
            if not (r.proof or "").strip():
                why = "with no proof in the consent ledger"
            else:
                why = (f"but topic {r.topic!r} needs confirmed opt-in and this grant came from "
                       f"{r.source}, not a confirmation")
            evidence = (f"{who} is granted {r.topic} on {r.channel} since {_day(r.at)} "
                        f"(source {r.source}, ledger row {r.ledger_id}) {why}")
            out.append(Finding(
                id=finding_id("consent_without_proof",
                              [r.contact_id, r.topic, r.channel, str(r.ledger_id)]),
                kind="consent_without_proof", contacts=[_contact(info, r.contact_id)],
                addresses=[], evidence=evidence,
                fix="if you have the proof, record it (POST /v1/contacts/{id}/consent with "
                "proof); otherwise withdraw the grant (source admin). Applied only when "
                "asked for by id or kind", action="withdraw_consent", explicit=True,
                plan={"contact": r.contact_id, "topic": r.topic, "channel": r.channel,
                      "ledger_id": r.ledger_id, "evidence": evidence}))
        return out


# -- helpers ------------------------------------------------------------------------------

def _contacts(conn: Connection, ids: Iterable[str]) -> dict[str, tuple[str, float]]:
    """``id -> (external id, created_at)``."""
    wanted = sorted(ids)
    out: dict[str, tuple[str, float]] = {}
    for i in range(0, len(wanted), _IN):
        for r in conn.execute(select(contacts.c.id, contacts.c.external_id,
                                     contacts.c.created_at).where(
                contacts.c.id.in_(wanted[i : i + _IN]))):
            out[r.id] = (r.external_id, r.created_at)
    return out


def _last_delivered(conn: Connection, wanted: set[tuple[str, str]],
                    since: float) -> dict[tuple[str, str], float]:
    """The last delivery since ``since`` to each of ``wanted``: one pass over the deliveries
    (messages has no index on the address), keeping only the addresses asked about."""
    if not wanted:
        return {}
    channels = sorted({ch for ch, _ in wanted})
    q = select(messages.c.channel, messages.c.to_addr,
               func.max(messages.c.delivered_at)).where(
        messages.c.state == "delivered", messages.c.channel.in_(channels),
        messages.c.delivered_at >= since).group_by(messages.c.channel, messages.c.to_addr)
    out: dict[tuple[str, str], float] = {}
    for ch, to, at in conn.execution_options(stream_results=True, max_row_buffer=1000) \
            .execute(q):
        if (ch, to) in wanted:
            out[(ch, to)] = float(at)
    return out


def _last_delivered_by_contact(conn: Connection, ids: list[str]
                               ) -> dict[tuple[str, str, str], float]:
    """``(contact, channel, address) -> last delivery`` for messages sent to a contact."""
    out: dict[tuple[str, str, str], float] = {}
    for i in range(0, len(ids), _IN):
        q = select(messages.c.contact_id, messages.c.channel, messages.c.to_addr,
                   func.max(messages.c.delivered_at)).where(
            messages.c.contact_id.in_(ids[i : i + _IN]), messages.c.state == "delivered"
        ).group_by(messages.c.contact_id, messages.c.channel, messages.c.to_addr)
        for cid, ch, to, at in conn.execute(q):
            out[(cid, ch, to)] = float(at)
    return out


def _contact(info: dict[str, tuple[str, float]], cid: str) -> dict[str, str]:
    return {"id": cid, "external_id": info[cid][0]}


def _address(r: Any) -> dict[str, Any]:
    return {"id": r.id, "contact_id": r.contact_id, "channel": r.channel,
            "address": r.address}


def _who(info: dict[str, tuple[str, float]], cid: str) -> str:
    """A contact in words: its external id (the finding lists the ids)."""
    return repr(info[cid][0]) if cid in info else cid


def _short(address: str) -> str:
    return address if len(address) <= 40 else f"{address[:16]}…{address[-8:]}"


def _day(ts: float) -> str:
    return "never" if not ts else time.strftime("%Y-%m-%d", time.gmtime(ts))
