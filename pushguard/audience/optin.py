"""Consent changes people make themselves: confirmed opt-in, unsubscribe, the preference centre.

Every change is a row in the consent ledger with its source, the requester's IP and user agent
and its proof (a confirmation id, "one-click (RFC 8058)"...), so that "when and how did they
agree, and what were they told" has an answer (GUARANTEES.md §2.4). Rules that keep the ledger
honest:

- A confirmed opt-in grants consent once. Replaying an old confirmation link never grants it
  again, so a link clicked after a later withdrawal changes nothing (§2.5).
- A withdrawal also voids the confirmations still outstanding for that topic and channel:
  "stop" wins over a link sent before it.
- A repeated unsubscribe records nothing new (RFC 8058 endpoints must be idempotent).

The signed tokens carry ids only (:mod:`pushguard.audience.links`); every way a token can be
wrong raises the same :class:`~pushguard.audience.links.BadLink`.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, select, update

from pushguard.audience.gate import CONSENT_CHANNELS, address_hash, consent_channel
from pushguard.audience.links import (
    PREFERENCES_MAX_AGE,
    TEST_LINK_MAX_AGE,
    UNSUBSCRIBE_MAX_AGE,
    BadLink,
    Links,
)
from pushguard.audience.models import SubscribeIn
from pushguard.audience.service import ConsentRecord
from pushguard.exceptions import ConfigError, InputError, NotFound
from pushguard.models import new_id
from pushguard.store.schema import (
    audit_log,
    confirmations,
    consent,
    contact_addresses,
    contacts,
    suppressions,
    topics,
)
from pushguard.views import rfc3339

if TYPE_CHECKING:
    from pushguard.app import App

__all__ = ["Choice", "Requester", "confirm", "confirmation", "confirmation_content",
           "preferences", "preferences_contact", "save_preferences", "subscribe",
           "unsubscribe", "unsubscribe_target"]

#: the message channels that carry each consent channel ("push" covers FCM and APNs)
MESSAGE_CHANNELS: dict[str, tuple[str, ...]] = {"push": ("fcm", "apns")}
#: unconfirmed, unexpired confirmations allowed per contact, topic and channel: a public
#: sign-up form must not become a way to flood someone's inbox with confirmation requests.
MAX_OUTSTANDING = 3
#: who the ledger says made a change through a link: the person holding it
PERSON = "person"
IDEMPOTENCY_SCOPE = "optin"


@dataclass(frozen=True, slots=True)
class Requester:
    """Who clicked: kept in the ledger as evidence."""

    ip: str | None = None
    user_agent: str | None = None

    def __post_init__(self) -> None:
        if self.user_agent is not None and len(self.user_agent) > 1024:
            object.__setattr__(self, "user_agent", self.user_agent[:1024])


@dataclass(frozen=True, slots=True)
class Choice:
    """One line of the preference centre: a marketing topic on one consent channel."""

    topic: str
    description: str
    channel: str
    #: granted | pending | withdrawn | none
    status: str
    double_opt_in: bool

    @property
    def key(self) -> str:
        return f"{self.topic}|{self.channel}"

    @property
    def wanted(self) -> bool:
        return self.status in ("granted", "pending")


# -- subscribing ----------------------------------------------------------------------------

def subscribe(app: App, ref: str, body: SubscribeIn, actor: str,
              *, source: str | None = None) -> dict[str, Any]:
    """Subscribe a contact to a topic on a channel.

    A topic with ``double_opt_in`` gets a ``pending`` ledger row and a confirmation message
    through that channel; consent is granted only when the link in it is confirmed. Any other
    topic is granted at once. ``source`` overrides the request's (the preference centre)."""
    cid = app.audience.resolve(ref)
    topic = _topic(app, body.topic)
    now = time.time()
    with app.audience.store._read() as conn:
        current = _status(conn, cid, body.topic, body.channel)
        channel, address = _address(conn, cid, body.channel, ref)
    policy = app.config.audience
    version = body.policy_version or policy.policy_version
    src = source or body.source
    base = {"contact_id": cid, "topic": body.topic, "channel": body.channel}
    if current == "granted":
        return {**base, "status": "granted", "changed": False}
    if not topic["double_opt_in"]:
        app.audience.record_consent([ConsentRecord(
            cid, body.topic, body.channel, "granted", src, now, body.ip, body.user_agent,
            None, version, actor)])
        return {**base, "status": "granted", "changed": True}
    cnf = new_id("cnf")
    ttl = policy.confirm_ttl
    try:
        url = app.links.confirm_url(cnf)
    except ConfigError as exc:
        raise InputError("topic", f"needs confirmed opt-in, and {exc.message}") from exc
    raw = {
        "channel": channel, "to": address, "contact": cid, "priority": "high",
        "ttl": max(60, min(ttl, app.settings.max_ttl)),
        "content": confirmation_content(channel, _label(topic), body.channel, url,
                                        app.config.audience.organisation),
    }
    msg = app.intake.prepare(app.intake.parse(raw))  # every check before anything is written
    with app.audience.store._read() as conn:
        blocked = conn.execute(select(suppressions.c.reason, suppressions.c.source).where(
            suppressions.c.channel == channel,
            suppressions.c.address.in_([address, address_hash(channel, address)]))).first()
    if blocked is not None:
        # e.g. the number texted STOP: a sign-up form must not text it again; START will
        raise InputError("channel", f"the contact's {channel} address is on the suppression "
                         f"list ({blocked.reason}, {blocked.source}); no confirmation can be "
                         "sent to it")
    expires = now + ttl
    with app.audience.store._write() as conn:
        outstanding = conn.execute(select(confirmations.c.id).where(
            confirmations.c.contact_id == cid, confirmations.c.topic == body.topic,
            confirmations.c.channel == body.channel, confirmations.c.confirmed_at.is_(None),
            confirmations.c.expires_at > now)).all()
        if len(outstanding) >= MAX_OUTSTANDING:
            raise InputError("topic", f"{len(outstanding)} confirmations of {body.topic!r} on "
                             f"{body.channel} are already waiting for contact {ref!r}; wait "
                             "for one to be confirmed or to expire")
        conn.execute(confirmations.insert().values(
            id=cnf, contact_id=cid, topic=body.topic, channel=body.channel, address=address,
            created_at=now, expires_at=expires, confirmed_at=None, message_id=msg.id,
            policy_version=version))
        app.audience.record_consent([ConsentRecord(
            cid, body.topic, body.channel, "pending", src, now, body.ip, body.user_agent, cnf,
            version, actor)], conn)
    (accepted,) = app.intake.submit([msg], scope=IDEMPOTENCY_SCOPE)
    state = getattr(accepted, "state", None)
    return {**base, "status": "pending", "changed": True, "confirmation_id": cnf,
            "message_id": msg.id, "message_state": state.value if state else None,
            "address": address, "expires_at": rfc3339(expires)}


def confirmation_content(channel: str, label: str, consent_ch: str, url: str,
                         organisation: str | None = None) -> dict[str, Any]:
    """The confirmation message for one message channel: who asks (GDPR wants the controller
    named), what the subscription is, the link, that nothing happens without it and that
    consent can be withdrawn. No marketing: it is a transactional message (GUARANTEES.md
    §2.5)."""
    label = " ".join(label.split())  # a description may hold line breaks; a subject may not
    if organisation:
        label = f"{label} from {' '.join(organisation.split())}"
    short = label if len(label) <= 60 else label[:57] + "..."
    line = (f"Please confirm that you want to receive {label} by {_WORDS[consent_ch]}.")
    after = ("If you did not ask for this, ignore this message: you will not be subscribed. "
             "You can withdraw your consent at any time with the unsubscribe link in every "
             "message" + (", or by replying STOP." if consent_ch == "sms" else "."))
    if channel == "email":
        return {
            "subject": f"Confirm your subscription: {short}",
            "text": f"{line}\n\nConfirm: {url}\n\n{after}\n",
            "html": (f"<p>{html.escape(line)}</p><p><a href=\"{html.escape(url)}\">Confirm "
                     f"my subscription</a></p><p style=\"font-size:12px;color:#666\">"
                     f"{html.escape(after)}</p>"),
        }
    if channel == "sms":
        return {"text": f"Confirm your subscription to {short}: {url} Ignore this if you did "
                        "not ask for it. Reply STOP to opt out."}
    title = "Confirm your subscription"
    body = f"Confirm that you want {short}. You can withdraw at any time."
    if channel in ("fcm", "apns"):
        return {"title": title, "body": body, "data": {"url": url, "kind": "confirmation"}}
    if channel == "webpush":
        return {"title": title, "body": body, "url": url}
    if channel == "chat":
        return {"title": title, "text": f"{line}\nConfirm: {url}\n{after}"}
    return {"kind": "confirmation", "text": f"{line} {after}", "confirm_url": url}


_WORDS = {"email": "email", "sms": "text message", "push": "push notification",
          "webpush": "browser notification", "chat": "chat message", "webhook": "webhook"}


# -- confirming -----------------------------------------------------------------------------

def confirmation(app: App, token: str) -> dict[str, Any]:
    """What a confirmation link is about, without changing anything (the GET page)."""
    cnf = _verify(app, "confirm", token, app.config.audience.confirm_ttl)
    with app.audience.store._read() as conn:
        row = conn.execute(select(confirmations).where(confirmations.c.id == cnf)).first()
        if row is None or (row.confirmed_at is None and not _confirmable(conn, row)):
            raise BadLink()
        status = _status(conn, row.contact_id, row.topic, row.channel)
    return {"topic": row.topic, "channel": row.channel, "label": _label_of(app, row.topic),
            "confirmed": row.confirmed_at is not None, "subscribed": status == "granted"}


def confirm(app: App, token: str, who: Requester) -> dict[str, Any]:
    """Grant the consent a confirmation link stands for, once. ``changed`` is false when it was
    already confirmed: then nothing is written, whatever happened since."""
    cnf = _verify(app, "confirm", token, app.config.audience.confirm_ttl)
    now = time.time()
    with app.audience.store._write() as conn:
        row = conn.execute(select(confirmations).where(confirmations.c.id == cnf)).first()
        if row is None:
            raise BadLink()
        claimed = 0
        if row.confirmed_at is None:
            if not _confirmable(conn, row, now):
                raise BadLink()
            # conditional: two clicks at once still grant once
            claimed = conn.execute(update(confirmations).where(
                confirmations.c.id == cnf, confirmations.c.confirmed_at.is_(None))
                .values(confirmed_at=now)).rowcount
        if claimed and _status(conn, row.contact_id, row.topic, row.channel) == "pending":
            app.audience.record_consent([ConsentRecord(
                row.contact_id, row.topic, row.channel, "granted", "double_opt_in", now,
                who.ip, who.user_agent, cnf, row.policy_version, PERSON)], conn)
        else:
            claimed = 0
        # a link used before, and withdrawn since: it changed nothing and must not say
        # "subscribed"
        status = _status(conn, row.contact_id, row.topic, row.channel)
    return {"topic": row.topic, "channel": row.channel, "label": _label_of(app, row.topic),
            "changed": bool(claimed), "subscribed": status == "granted"}


def _confirmable(conn: Connection, row: Any, now: float | None = None) -> bool:
    """An unconfirmed confirmation still counts if it has not expired and nothing withdrew
    the consent since it was sent (a withdrawal, however it came, wins over the link)."""
    if row.expires_at <= (now if now is not None else time.time()):
        return False
    return _status(conn, row.contact_id, row.topic, row.channel) in ("pending", "granted")


# -- unsubscribing --------------------------------------------------------------------------

def unsubscribe_target(app: App, token: str) -> dict[str, Any]:
    """Who and what an unsubscribe link is for, and whether it is still subscribed."""
    cid, topic, channel = _unsub_payload(app, token)
    with app.audience.store._read() as conn:
        status = _status(conn, cid, topic, channel)
    return {"contact_id": cid, "topic": topic, "channel": channel,
            "label": _label_of(app, topic), "subscribed": status in ("granted", "pending")}


def unsubscribe(app: App, token: str, who: Requester, method: str) -> dict[str, Any]:
    """Withdraw consent to the link's topic on its channel. Idempotent: nothing is written when
    it is already withdrawn, or when the contact no longer exists (erased): the person gets the
    same answer either way."""
    cid, topic, channel = _unsub_payload(app, token)
    now = time.time()
    changed = False
    with app.audience.store._write() as conn:
        known = conn.execute(select(contacts.c.id).where(contacts.c.id == cid)).first()
        exists = conn.execute(select(topics.c.name).where(topics.c.name == topic)).first()
        if known is not None and exists is not None \
                and _status(conn, cid, topic, channel) != "withdrawn":
            _withdraw(app, conn, cid, [(topic, channel)], "unsubscribe", now, who, method)
            changed = True
    return {"topic": topic, "channel": channel, "label": _label_of(app, topic),
            "changed": changed, "preferences_url": _prefs_url(app, cid)}


def test_link(app: App, token: str) -> tuple[str, str, str]:
    """(kind, topic label, channel) of a test send's stand-in link; ``BadLink`` if it is
    not one. Nothing is read about, or written for, any contact."""
    kind, topic, channel = _triple(_signed(app, "test", token, TEST_LINK_MAX_AGE))
    if kind not in ("unsubscribe", "preferences"):
        raise BadLink()
    return kind, _label_of(app, topic), channel


# -- the preference centre ------------------------------------------------------------------

def preferences_contact(app: App, token: str) -> str:
    """The contact id a preferences link is for; ``BadLink`` if it is not one."""
    return current_id(app, _verify(app, "preferences", token, PREFERENCES_MAX_AGE))


def preferences(app: App, token: str) -> tuple[str, list[Choice]]:
    """The contact id of a preferences link, and its choices: every marketing topic on every
    consent channel the contact has an active address for (or a consent on)."""
    cid = preferences_contact(app, token)
    with app.audience.store._read() as conn:
        return cid, _choices(conn, cid)


def save_preferences(app: App, token: str, wanted: Iterable[str], who: Requester,
                     *, pause_all: bool = False) -> tuple[list[Choice], list[dict[str, Any]]]:
    """Make the ledger match what the person ticked (``topic|channel`` keys); ``pause_all``
    withdraws every marketing consent. A tick on a confirmed-opt-in topic starts a
    confirmation. Returns the new choices and what changed."""
    cid, before = preferences(app, token)
    shown = {c.key: c for c in before}
    keys = set(wanted)
    unknown = sorted(keys - shown.keys())
    if unknown:
        raise InputError("sub", f"{unknown[0]!r} is not one of the choices on this page")
    if pause_all:
        keys = set()
    drop = [(c.topic, c.channel) for c in before if c.wanted and c.key not in keys]
    add = [c for c in before if not c.wanted and c.key in keys]
    now = time.time()
    changes: list[dict[str, Any]] = []
    if drop:
        proof = "preference centre: pause all" if pause_all else "preference centre"
        with app.audience.store._write() as conn:
            _withdraw(app, conn, cid, drop, "preferences", now, who, proof)
        changes += [{"topic": t, "channel": ch, "status": "withdrawn"} for t, ch in drop]
    for c in add:
        body = SubscribeIn.model_validate({"topic": c.topic, "channel": c.channel,
                                           "ip": who.ip, "user_agent": who.user_agent})
        try:
            got = subscribe(app, cid, body, PERSON, source="preferences")
        except InputError as exc:  # e.g. the number texted STOP: the rest is still saved
            changes.append({"topic": c.topic, "channel": c.channel, "status": "failed",
                            "description": c.description, "problem": exc.problem})
            continue
        changes.append({"topic": c.topic, "channel": c.channel, "status": got["status"]})
    with app.audience.store._read() as conn:
        return _choices(conn, cid), changes


def _choices(conn: Connection, cid: str) -> list[Choice]:
    if conn.execute(select(contacts.c.id).where(contacts.c.id == cid)).first() is None:
        return []  # erased: nothing left to manage
    marketing = conn.execute(select(topics).where(topics.c.kind == "marketing")
                             .order_by(topics.c.name)).all()
    current = {(r.topic, r.channel): r.status for r in conn.execute(
        select(consent.c.topic, consent.c.channel, consent.c.status)
        .where(consent.c.contact_id == cid))}
    reachable = {consent_channel(ch) for ch in conn.execute(
        select(contact_addresses.c.channel).where(contact_addresses.c.contact_id == cid,
                                                  contact_addresses.c.status == "active"))
        .scalars()}
    out = []
    for t in marketing:
        for ch in CONSENT_CHANNELS:
            c = Choice(t.name, t.description or t.name, ch, current.get((t.name, ch), "none"),
                       bool(t.double_opt_in))
            # a channel without an address can only be switched off, never on
            if ch in reachable or c.wanted:
                out.append(c)
    return out


# -- shared ---------------------------------------------------------------------------------

def _withdraw(app: App, conn: Connection, cid: str, pairs: list[tuple[str, str]],
              source: str, now: float, who: Requester, proof: str) -> None:
    """Withdraw consents and void the confirmations still waiting for them, in ``conn``."""
    version = app.config.audience.policy_version
    app.audience.record_consent([ConsentRecord(
        cid, topic, channel, "withdrawn", source, now, who.ip, who.user_agent, proof, version,
        PERSON) for topic, channel in pairs], conn)
    for topic, channel in pairs:
        conn.execute(update(confirmations).where(
            confirmations.c.contact_id == cid, confirmations.c.topic == topic,
            confirmations.c.channel == channel, confirmations.c.confirmed_at.is_(None),
            confirmations.c.expires_at > now).values(expires_at=now))


def _signed(app: App, purpose: str, token: str, max_age: int) -> Any:
    """What a link's token carries; ``BadLink`` for every token we did not sign."""
    try:
        links: Links = app.links
    except ConfigError as exc:  # no key: no link we could have signed
        raise BadLink() from exc
    return links.verify(purpose, token, max_age)


def _triple(value: Any) -> tuple[str, str, str]:
    if not (isinstance(value, list) and len(value) == 3
            and all(isinstance(v, str) and v for v in value)):
        raise BadLink()
    return value[0], value[1], value[2]


def _verify(app: App, purpose: str, token: str, max_age: int) -> str:
    value = _signed(app, purpose, token, max_age)
    if not isinstance(value, str) or not value:
        raise BadLink()
    return value


def _unsub_payload(app: App, token: str) -> tuple[str, str, str]:
    cid, topic, channel = _triple(_signed(app, "unsubscribe", token, UNSUBSCRIBE_MAX_AGE))
    return current_id(app, cid), topic, channel


def current_id(app: App, cid: str) -> str:
    """The contact a link's id stands for now: itself, or the contact it was merged into."""
    with app.audience.store._read() as conn:
        for _ in range(5):  # merges of merges
            if conn.execute(select(contacts.c.id).where(contacts.c.id == cid)).first():
                return cid
            row = conn.execute(select(audit_log.c.detail).where(
                audit_log.c.subject == f"alias:{cid}").order_by(audit_log.c.id.desc())
                .limit(1)).scalar()
            if row is None:
                return cid
            cid = str(json.loads(row)["contact_id"])
    return cid


def _prefs_url(app: App, cid: str) -> str:
    return app.links.preferences_url(cid)


def _status(conn: Connection, cid: str, topic: str, channel: str) -> str:
    got = conn.execute(select(consent.c.status).where(and_(
        consent.c.contact_id == cid, consent.c.topic == topic,
        consent.c.channel == channel))).scalar()
    return str(got) if got is not None else "none"


def _address(conn: Connection, cid: str, channel: str, ref: str) -> tuple[str, str]:
    """The message channel and address a confirmation on consent channel ``channel`` goes
    to: the contact's verified, then most recently seen, active address."""
    rows = conn.execute(select(contact_addresses).where(
        contact_addresses.c.contact_id == cid,
        contact_addresses.c.channel.in_(MESSAGE_CHANNELS.get(channel, (channel,))),
        contact_addresses.c.status == "active")).all()
    if not rows:
        raise InputError("channel", f"contact {ref!r} has no active {channel} address to "
                         "subscribe with")
    best = max(rows, key=lambda r: (bool(r.verified), r.last_seen or 0, r.created_at))
    return str(best.channel), str(best.address)


def _topic(app: App, name: str) -> dict[str, Any]:
    try:
        return app.audience.topic(name)
    except NotFound:
        raise InputError("topic", f"unknown topic {name!r}; create it first (pushguard topics "
                         "add, or POST /v1/topics)") from None


def _label(topic: dict[str, Any]) -> str:
    """A topic's description on one line (it is shown in subjects), or its name."""
    text = " ".join(str(topic.get("description") or "").split())
    return text[:200] or str(topic["name"])


def _label_of(app: App, name: str) -> str:
    try:
        return _label(app.audience.topic(name))
    except NotFound:
        return name

