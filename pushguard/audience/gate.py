"""The pre-send gate: consent, suppression, address status, quiet hours and frequency caps.

It runs inside the store's transactions, on whole batches: at intake (so a client learns at
once that a message will not go) and again when a worker claims messages (consent can be
withdrawn, or an address suppressed, while a message waits). Each message either passes or
gets a :class:`Stop`: ``suppressed`` or ``deferred``, with the rule that stopped it.

Lookups are cached in memory. Every write to what the gate reads moves one counter
(``audience_generation``) in the same transaction; the gate reads that counter once per batch
and drops its cache when it moved, so a process never acts on a change older than its own
transaction, whichever process made the change.
"""

from __future__ import annotations

import hashlib
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select, update

from pushguard import taxonomy
from pushguard.audience.rules import AudiencePolicy, Cap, QuietHours, zone
from pushguard.models import Failure
from pushguard.states import State
from pushguard.store.schema import audience_generation, topics
from pushguard.views import rfc3339

CHUNK = 500
MAX_CACHE = 200_000

#: the consent channel of each message channel: one "push" consent covers FCM and APNs.
CONSENT_CHANNEL = {"fcm": "push", "apns": "push"}
CONSENT_CHANNELS = ("email", "sms", "push", "webpush", "chat", "webhook")

#: suppression reasons that only stop marketing: an unsubscribed person still gets their
#: password resets and receipts.
MARKETING_ONLY_REASONS = frozenset({"unsubscribe"})


#: words of the consent rule's details that tell its cases apart (the pre-flight counts them)
UNCONFIRMED = "has not confirmed"
WITHDREW = "withdrew consent"

#: what to do about a message each rule stopped (the taxonomy's fix, made specific).
RULE_FIX = {
    "suppression": "Nothing to retry. If the address was suppressed by mistake, remove it with "
    "`pushguard suppressions remove` or DELETE /v1/suppressions (audited) and send again.",
    "address": "Add a working address for the contact, or reactivate this one if the "
    "deactivation was wrong (audited), then send again.",
    "consent": "Nothing to retry. The contact must opt in to this topic on this channel "
    "(a confirmed opt-in, a form, or POST /v1/contacts/{id}/consent with proof).",
    "topic": "Create the topic (`pushguard topics add` or POST /v1/topics) or send under an "
    "existing one.",
    "quiet_hours": "Nothing to do: the message waits for the end of the contact's quiet hours. "
    "Use a transactional topic only if it truly must go now.",
    "frequency_cap": "Nothing to do: the contact already received as many messages as the cap "
    "allows. Raise the cap in pushguard.toml or on the topic if it is too strict.",
}


def consent_channel(channel: str) -> str:
    return CONSENT_CHANNEL.get(channel, channel)


def address_hash(channel: str, address: str) -> str:
    """What is kept of an erased address: enough to keep suppressing it, not to read it."""
    return "sha256:" + hashlib.sha256(f"{channel}\0{address}".encode()).hexdigest()


def bump(conn: Connection) -> None:
    """Tell every gate that what it caches changed (call inside the writing transaction)."""
    conn.execute(update(audience_generation).where(audience_generation.c.id == 1)
                 .values(n=audience_generation.c.n + 1))


@dataclass(frozen=True, slots=True)
class Stop:
    """Why a message is not sent now."""

    state: State  # SUPPRESSED or DEFERRED
    cause: str  # taxonomy cause: NO_CONSENT or POLICY_SUPPRESSED
    rule: str  # suppression | address | consent | quiet_hours | frequency_cap
    detail: str
    next_at: float | None = None


@dataclass(slots=True)
class Item:
    """One message as the gate sees it."""

    id: str
    channel: str
    to: str
    topic: str | None
    contact_id: str | None
    #: what a cap counts: the message, or the push it is a device copy of
    group: str | None = None
    #: the contact as the caller has just read it, ``to`` being one of its active addresses
    #: (a campaign's page of recipients): the gate then reads neither the contact nor the
    #: address's other holders again. Never cached: the next check reads afresh.
    rule: ContactRule | None = None
    #: when it would be sent, if not at the check's ``now`` (a pre-flight under a
    #: ``local_time`` schedule judges each recipient at their own send time, in one check)
    at: float | None = None
    #: filled in by the gate
    marketing: bool = False
    stop: Stop | None = None


@dataclass(frozen=True, slots=True)
class TopicRule:
    name: str
    marketing: bool
    double_opt_in: bool
    cap: Cap | None
    quiet_hours: QuietHours | None


@dataclass(frozen=True, slots=True)
class ContactRule:
    id: str
    timezone: str | None
    quiet_hours: QuietHours | None

    @classmethod
    def of(cls, contact_id: str, timezone: str | None, quiet_hours: str | None) -> ContactRule:
        """The rule of a ``contacts`` row's columns."""
        return cls(contact_id, timezone, QuietHours.parse(quiet_hours) if quiet_hours else None)


@dataclass(frozen=True, slots=True)
class Holder:
    """A contact that holds an address, and the address's status there."""

    contact_id: str
    active: bool
    reason: str | None


@dataclass(slots=True)
class _Cache:
    generation: int | None = None
    topics: dict[str, TopicRule] | None = None
    contacts: dict[str, ContactRule | None] = field(default_factory=dict)
    holders: dict[tuple[str, str], list[Holder]] = field(default_factory=dict)
    consent: dict[tuple[str, str, str], tuple[str, str, float] | None] = field(
        default_factory=dict)
    suppressed: dict[tuple[str, str], tuple[str, str] | None] = field(default_factory=dict)

    def size(self) -> int:
        return len(self.contacts) + len(self.holders) + len(self.consent) + len(self.suppressed)


class Gate:
    def __init__(self, policy: AudiencePolicy | None = None) -> None:
        self.policy = policy or AudiencePolicy()
        self._c = _Cache()
        self._lock = threading.Lock()
        #: lookups answered from memory vs from the database (for tests and metrics)
        self.hits = 0
        self.misses = 0

    # -- cache ------------------------------------------------------------------------------

    def forget(self) -> None:
        """Drop the cache: the store calls it when a transaction rolls back. A check inside
        that transaction may have read what it wrote, the counter's next value among it, and
        another process committing that same value later would otherwise look like no
        change at all."""
        with self._lock:
            self._c = _Cache()

    def _refresh(self, conn: Connection) -> None:
        n = conn.execute(select(audience_generation.c.n).where(
            audience_generation.c.id == 1)).scalar()
        if n is None or n != self._c.generation or self._c.size() > MAX_CACHE:
            # no counter row (a damaged schema) means no caching at all, never a stale one
            self._c = _Cache(generation=n)

    def longest_cap(self, rules: dict[str, TopicRule]) -> float:
        """The longest window any cap counts sends over (the marketing cap, each topic's)."""
        overall = self.policy.marketing_cap
        return max([overall.seconds if overall else 0.0] +
                   [r.cap.seconds for r in rules.values() if r.cap])

    def topic_rules(self, conn: Connection) -> dict[str, TopicRule]:
        if self._c.topics is None:
            self._c.topics = {
                r.name: TopicRule(
                    r.name, r.kind == "marketing", bool(r.double_opt_in),
                    Cap.parse(r.cap) if r.cap else None,
                    QuietHours.parse(r.quiet_hours) if r.quiet_hours else None,
                )
                for r in conn.execute(select(topics))
            }
        return self._c.topics

    def _load_suppressed(self, conn: Connection, pairs: set[tuple[str, str]]) -> None:
        cache = self._c.suppressed
        missing = [p for p in pairs if p not in cache]
        self.hits += len(pairs) - len(missing)
        self.misses += len(missing)
        if not missing:
            return
        # by channel, so the (channel, address) primary key answers each lookup
        keys: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)
        for ch, addr in missing:
            cache[(ch, addr)] = None
            keys[ch][addr] = keys[ch][address_hash(ch, addr)] = (ch, addr)
        for ch, wanted in keys.items():
            for addr, reason, source in _rows(conn, _SUPPRESSED, sorted(wanted), before=(ch,)):
                cache[wanted[addr]] = (reason, source)

    def _load_holders(self, conn: Connection, pairs: set[tuple[str, str]]) -> None:
        cache = self._c.holders
        missing = [p for p in pairs if p not in cache]
        self.hits += len(pairs) - len(missing)
        self.misses += len(missing)
        if not missing:
            return
        by_channel: dict[str, list[str]] = defaultdict(list)
        for ch, addr in missing:
            cache[(ch, addr)] = []
            by_channel[ch].append(addr)
        for ch, addrs in by_channel.items():
            for addr, cid, status, reason in _rows(conn, _HOLDERS, sorted(addrs),
                                                   before=(ch,)):
                cache[(ch, addr)].append(Holder(cid, status == "active", reason))

    def _load_contacts(self, conn: Connection, ids: set[str]) -> None:
        cache = self._c.contacts
        missing = sorted(i for i in ids if i not in cache)
        self.hits += len(ids) - len(missing)
        self.misses += len(missing)
        if not missing:
            return
        for cid in missing:
            cache[cid] = None
        for cid, tz, qh in _rows(conn, _CONTACTS, missing):
            cache[cid] = ContactRule.of(cid, tz, qh)

    def _load_consent(self, conn: Connection, keys: set[tuple[str, str, str]]) -> None:
        cache = self._c.consent
        missing = [k for k in keys if k not in cache]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if not missing:
            return
        for k in missing:
            cache[k] = None
        for cid, topic, ch, status, source, at in _rows(conn, _CONSENT,
                                                        sorted({k[0] for k in missing})):
            if (cid, topic, ch) in cache:
                cache[(cid, topic, ch)] = (status, source, at)

    # -- deciding ---------------------------------------------------------------------------

    def check(
        self, conn: Connection, items: Sequence[Item], now: float, *, sending: bool,
        lock: bool = False,
    ) -> None:
        # One gate serves every thread of a process (API requests run in a thread pool, and
        # on PostgreSQL their transactions overlap): a check must not see the cache swapped
        # under it. Checks are short; the database work inside is per batch.
        with self._lock:
            self._check(conn, items, now, sending=sending, lock=lock)

    def _check(
        self, conn: Connection, items: Sequence[Item], now: float, *, sending: bool,
        lock: bool = False,
    ) -> None:
        """Set ``stop`` (and ``marketing``, ``contact_id``) on each item.

        ``sending``: the worker is about to send, so sends are counted against the caps in
        this transaction; ``lock``: take row locks on capped contacts first (PostgreSQL, where
        workers run concurrently)."""
        if not items:
            return
        self._refresh(conn)
        rules = self.topic_rules(conn)
        pairs = {(it.channel, it.to) for it in items}
        self._load_suppressed(conn, pairs)
        self._load_holders(conn, {(it.channel, it.to) for it in items if it.rule is None})
        for it in items:
            self._stop_by_address(it, rules)
        live = [it for it in items if it.stop is None and it.marketing]
        if not live:
            return
        ids: set[str] = set()
        for it in live:
            if it.rule is not None:
                continue
            if it.contact_id is not None:
                ids.add(it.contact_id)
            else:  # every active holder of the address decides (a withdrawal wins)
                ids.update(h.contact_id for h in self._c.holders[(it.channel, it.to)]
                           if h.active)
        self._load_contacts(conn, ids)
        keys = set()
        for it in live:
            for cid in self._holders_of(it):
                keys.add((cid, it.topic or "", consent_channel(it.channel)))
        self._load_consent(conn, keys)
        for it in live:
            self._stop_by_consent(it)
            if it.stop is None:
                self._stop_by_quiet_hours(it, rules, now if it.at is None else it.at)
        self._caps(conn, [it for it in live if it.stop is None], rules, now,
                   sending=sending, lock=lock)

    def _holders_of(self, it: Item) -> list[str]:
        """Contacts whose consent decides for this message: the named contact, or every
        active holder of the address (a withdrawal by any of them wins)."""
        if it.rule is not None:
            return [it.rule.id]
        if it.contact_id is not None and it.contact_id in self._c.contacts:
            named = self._c.contacts[it.contact_id]
            if named is not None:
                return [it.contact_id]
        return [h.contact_id for h in self._c.holders.get((it.channel, it.to), []) if h.active]

    def _stop_by_address(self, it: Item, rules: dict[str, TopicRule]) -> None:
        rule = rules.get(it.topic) if it.topic else None
        it.marketing = bool(rule and rule.marketing)
        sup = self._c.suppressed.get((it.channel, it.to))
        if sup is not None and (it.marketing or sup[0] not in MARKETING_ONLY_REASONS):
            reason, source = sup
            cause = "NO_CONSENT" if reason in ("unsubscribe", "complaint", "NO_CONSENT") \
                else "POLICY_SUPPRESSED"
            it.stop = Stop(State.SUPPRESSED, cause, "suppression",
                           f"{it.to} is on the {it.channel} suppression list ({reason}, "
                           f"{source})")
            return
        holders = self._c.holders.get((it.channel, it.to), []) if it.rule is None else []
        if holders and not any(h.active for h in holders):
            h = holders[0]
            it.stop = Stop(State.SUPPRESSED, "POLICY_SUPPRESSED", "address",
                           f"the {it.channel} address {it.to} is deactivated "
                           f"({h.reason or 'no reason given'})")
            return
        if it.topic and rule is None:
            it.stop = Stop(State.SUPPRESSED, "POLICY_SUPPRESSED", "topic",
                           f"topic {it.topic!r} does not exist (any more)")

    def _stop_by_consent(self, it: Item) -> None:
        topic, ch = it.topic or "", consent_channel(it.channel)
        holders = self._holders_of(it)
        if not holders:
            it.stop = Stop(
                State.SUPPRESSED, "NO_CONSENT", "consent",
                f"{it.topic} is a marketing topic and no contact holds {it.to}, so nobody "
                f"consented to it on {ch}")
            return
        states = [(cid, self._c.consent.get((cid, topic, ch))) for cid in holders]
        for cid, st in states:
            if st is not None and st[0] == "withdrawn":
                it.stop = Stop(State.SUPPRESSED, "NO_CONSENT", "consent",
                               f"contact {cid} {WITHDREW} to {topic} on {ch} "
                               f"({st[1]}, {rfc3339(st[2])})")
                return
        if any(st is not None and st[0] == "granted" for _, st in states):
            if it.contact_id is None:
                it.contact_id = next(c for c, st in states if st and st[0] == "granted")
            return
        pending = any(st is not None and st[0] == "pending" for _, st in states)
        it.stop = Stop(
            State.SUPPRESSED, "NO_CONSENT", "consent",
            f"contact {holders[0]} {UNCONFIRMED} the subscription to {topic} on {ch} yet"
            if pending else f"contact {holders[0]} never consented to {topic} on {ch}")

    def _stop_by_quiet_hours(self, it: Item, rules: dict[str, TopicRule], now: float) -> None:
        contact = it.rule or self._c.contacts.get(it.contact_id or "")
        topic = rules[it.topic or ""]
        window = (contact.quiet_hours if contact else None) or topic.quiet_hours \
            or self.policy.quiet_hours
        if window is None:
            return
        tzname = (contact.timezone if contact else None) or self.policy.default_timezone
        until = window.next_allowed(now, zone(tzname, self.policy.default_timezone))
        if until is not None:
            it.stop = Stop(State.DEFERRED, "POLICY_SUPPRESSED", "quiet_hours",
                           f"quiet hours {window} in {tzname}; deferred to {rfc3339(until)}",
                           next_at=until)

    def _caps(self, conn: Connection, items: list[Item], rules: dict[str, TopicRule],
              now: float, *, sending: bool, lock: bool) -> None:
        overall = self.policy.marketing_cap
        capped = [it for it in items if it.contact_id and
                  (overall is not None or rules[it.topic or ""].cap is not None)]
        if not capped:
            return
        ids = sorted({it.contact_id for it in capped if it.contact_id})
        longest = self.longest_cap(rules)
        # (topic, at, message id) of each counted send; a message counts once however many
        # times it is claimed (retries, pacing, open circuits)
        sent: dict[str, list[tuple[str, float, str]]] = defaultdict(list)
        if lock:  # serialise concurrent workers on the same contacts (PostgreSQL)
            _rows(conn, _LOCK_CONTACTS, ids)
        earliest = min(now if it.at is None else it.at for it in capped)
        for cid, topic, at, mid in _rows(conn, _SENDS, ids, after=(earliest - longest,)):
            sent[cid].append((topic, at, mid))
        rows: list[tuple[str, str, float, str]] = []
        for it in capped:
            cid, topic = it.contact_id or "", it.topic or ""
            when = now if it.at is None else it.at
            history = sent[cid]
            group = it.group or it.id
            if any(mid == group for _, _, mid in history):
                continue  # already counted: an earlier claim, or a copy to another device
            marketing_times = [at for t, at, _ in history if rules.get(t, _NOT).marketing]
            cap = rules[topic].cap
            if cap is not None and cap.exceeded([at for t, at, _ in history if t == topic],
                                                when):
                it.stop = Stop(State.SUPPRESSED, "POLICY_SUPPRESSED", "frequency_cap",
                               f"frequency cap for {topic}: {cap.text}")
            elif overall is not None and overall.exceeded(marketing_times, when):
                it.stop = Stop(State.SUPPRESSED, "POLICY_SUPPRESSED", "frequency_cap",
                               f"frequency cap for marketing: {overall.text}")
            elif sending:
                history.append((topic, when, group))
                rows.append((cid, topic, when, group))
        if rows:
            conn.exec_driver_sql(_param(conn, _INSERT_SEND), rows)


_NOT = TopicRule("", False, False, None, None)

# Plain SQL, like the queue's hot path: these run once per claimed batch, and SQLAlchemy's
# expanding IN parameters cost more than the queries themselves. ``{ids}`` becomes the
# placeholders of one chunk; ``?`` becomes ``%s`` on PostgreSQL.
_SUPPRESSED = ("SELECT address, reason, source FROM suppressions WHERE channel = ? AND "
               "address IN ({ids})")
_HOLDERS = ("SELECT address, contact_id, status, status_reason FROM contact_addresses "
            "WHERE channel = ? AND address IN ({ids})")
_CONTACTS = "SELECT id, timezone, quiet_hours FROM contacts WHERE id IN ({ids})"
_CONSENT = ("SELECT contact_id, topic, channel, status, source, at FROM consent "
            "WHERE contact_id IN ({ids})")
_LOCK_CONTACTS = "SELECT id FROM contacts WHERE id IN ({ids}) ORDER BY id FOR UPDATE"
_SENDS = ("SELECT contact_id, topic, at, message_id FROM contact_sends "
          "WHERE contact_id IN ({ids}) AND at > ?")
_INSERT_SEND = "INSERT INTO contact_sends (contact_id, topic, at, message_id) VALUES (?, ?, ?, ?)"


def _param(conn: Connection, sql: str) -> str:
    return sql.replace("?", "%s") if conn.dialect.name == "postgresql" else sql


def _rows(conn: Connection, sql: str, values: Sequence[str], *,
          before: tuple[Any, ...] = (), after: tuple[Any, ...] = ()) -> list[Any]:
    """Run ``sql`` over ``values`` in chunks (``{ids}``), between ``before`` and ``after``."""
    out: list[Any] = []
    for i in range(0, len(values), CHUNK):
        chunk = values[i : i + CHUNK]
        q = _param(conn, sql.replace("{ids}", ", ".join("?" * len(chunk))))
        out.extend(conn.exec_driver_sql(q, (*before, *chunk, *after)).all())
    return out

def stop_failure(stop: Stop) -> Failure:
    """The failure recorded for a message the gate stopped."""
    cause = taxonomy.get(stop.cause)
    expl, fix = taxonomy.describe(cause, detail=f"{stop.rule}: {stop.detail}")
    return Failure(cause.name, False, None, expl, RULE_FIX.get(stop.rule, fix), None, stop.rule)
