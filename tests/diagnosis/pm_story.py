"""Stories for the post-mortem tests, written through the store's own API on the test's store
(SQLite or PostgreSQL): a campaign sent in two rounds despite an overridden pre-flight, and an
incident raised by the real alert book, acted on, replayed and closed."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import insert, update

from pushguard import taxonomy
from pushguard.audience.service import ConsentRecord
from pushguard.diagnosis import actions
from pushguard.diagnosis.alerts import AlertBook
from pushguard.diagnosis.incidents import Incidents
from pushguard.diagnosis.lessons import Lessons
from pushguard.diagnosis.replay import replay
from pushguard.models import Accepted, Attempt, Failure, NewMessage, Outcome
from pushguard.states import State
from pushguard.store.schema import attempts, campaigns, messages
from pushguard.store.sql import SQLStore, audit
from pushguard.views import rfc3339
from tests.diagnosis.test_why_contact import Desk

#: free text from the database, as hostile as it gets for a page or a table
REASON = 'the <b>landing</b> page | goes "live" at 9 [see](javascript:alert(1))'
NOTE = "<script>alert('x')</script> | call the vendor"
LINK = "welcome [default]: line 1: link http://links.example/missing answers HTTP 404"
OUTAGE_CODE, INVALID_CODE = "421 4.3.0", "550 5.1.1"

Plan = dict[str, tuple[State, str | None, str, str | None]]


def settle(store: SQLStore, plan: Plan, *, default: str = "mailer") -> None:
    """Claim every ready message and record one attempt each: ``id -> (state, cause, provider,
    provider code)``; a claimed message not in ``plan`` is delivered by ``default``."""
    now = time.time()
    outcomes = []
    for job in store.claim("s", 10_000, 30):
        state, cause, provider, code = plan.get(job.id, (State.DELIVERED, None, default, None))
        failure = None
        if cause is not None:
            c = taxonomy.get(cause)
            expl, fix = taxonomy.describe(c, provider=provider, detail="test")
            failure = Failure(cause, c.transient, code, expl, fix, provider)
        attempt = Attempt(1, now, provider, "failed" if cause else "delivered",
                          provider_code=code, cause=cause, detail="test")
        outcomes.append(Outcome(job.id, state, f"settled {state}", attempt=attempt,
                                failure=failure, provider=provider))
    store.record("s", outcomes)


def priced(desk: Desk, cost: float = 0.01) -> None:
    """Give the desk's providers a per-message cost."""
    providers = {n: replace(p, cost=cost) for n, p in desk.app.config.providers.items()}
    desk.app.config = replace(desk.app.config, providers=providers)


def campaign_row(store: SQLStore, name: str, *, started_at: float, override: bool = True,
                 state: str = "completed", finished_at: float | None = None) -> str:
    cid = f"cmp_{name}"
    spec = {"campaign": {"name": name, "topic": "news", "channels": [
        {"channel": "email", "template": "welcome"}]}}
    preflight = {
        "campaign": cid, "name": name, "checked_at": rfc3339(started_at - 5),
        "recipients": 6, "blocking": 1,
        "predicted": {"delivered": 5, "not_sent": 1, "deferred": 0, "delivery_rate": 0.8333},
        "estimate": {"expires_before_sent": False},
        "findings": [
            {"code": "template.link_http_error", "severity": "block", "count": 1,
             "problem": LINK, "fix": "fix or replace the link",
             "url": "http://links.example/missing"},
            {"code": "invalid_address", "severity": "warn", "count": 1,
             "problem": "their address is not valid for its channel (17% of the audience)",
             "fix": "Fix or remove the address."}]}
    record = {"by": "ops", "at": rfc3339(started_at), "reason": REASON,
              "findings": [{"code": "template.link_http_error", "problem": LINK, "count": 1}]}
    with store._write() as conn:
        conn.execute(insert(campaigns).values(
            id=cid, name=name, state=state, spec=json.dumps(spec), created_at=started_at - 100,
            updated_at=time.time(), created_by="ops", started_at=started_at,
            finished_at=finished_at, recipients=6, round=1,
            override=json.dumps(record) if override else None,
            preflight=json.dumps(preflight)))
    return cid


def audit_at(store: SQLStore, at: float, actor: str, action: str, cid: str,
             detail: dict[str, Any]) -> None:
    with store._write() as conn:
        audit(conn, actor, action, f"campaign:{cid}", detail, now=at)


@dataclass
class CampaignStory:
    cid: str
    start: float
    fix_at: float
    contacts: dict[str, str]
    round0: list[str]
    round1: list[str]


def campaign_story(desk: Desk) -> CampaignStory:
    """Six recipients. Round 0 (an hour ago): three PROVIDER_OUTAGE, one INVALID_RECIPIENT, two
    delivered; the campaign auto-paused, was resumed, and the three outage failures were
    retried in round 1 (now): two delivered, one PROVIDER_OUTAGE again. A seventh contact
    never consented (not sent by the gate). After the start one recipient unsubscribed and one
    complained; an older unsubscribe does not count."""
    store = desk.store
    priced(desk)
    desk.topic("news")
    now = time.time()
    start, fix_at = now - 3600, now - 1800
    contacts = {f"a{i}": desk.contact(f"a{i}", email=f"a{i}@example.com") for i in range(6)}
    for cid_ in contacts.values():
        desk.consent(cid_, "news", "email", "granted")
    stranger = desk.contact("stranger", email="stranger@example.com")
    cid = campaign_row(store, "spring", started_at=start, finished_at=now)
    for i, contact in enumerate(contacts.values()):
        desk.recipient(cid, contact, "enqueued", seq=i)
    desk.recipient(cid, "ct_nobody", "skipped", seq=9, detail="no active address")

    def send(ext: str) -> str:
        return desk.send(f"{ext}@example.com", topic="news", contact_id=contacts.get(ext),
                         campaign_id=cid, template="welcome")[0]

    round0 = [send(f"a{i}") for i in range(6)]
    settle(store, {
        **{m: (State.FAILED, "PROVIDER_OUTAGE", "mailer", OUTAGE_CODE) for m in round0[:3]},
        round0[3]: (State.FAILED, "INVALID_RECIPIENT", "mailer", INVALID_CODE)})
    with store._write() as conn:  # round 0 went out an hour ago
        conn.execute(update(messages).where(messages.c.id.in_(round0)).values(
            created_at=start + 60, updated_at=start + 120))
        conn.execute(update(attempts).where(attempts.c.message_id.in_(round0)).values(
            at=start + 90))
    audit_at(store, start - 100, "ops", "campaign.create", cid, {"name": "spring"})
    audit_at(store, start, "ops", "campaign.override", cid,
             {"reason": REASON, "codes": ["template.link_http_error"]})
    audit_at(store, start, "ops", "campaign.start", cid, {"at": rfc3339(start)})
    audit_at(store, start + 130, "auto-pause", "campaign.pause", cid, {
        "reason": "auto-pause: 4 of the last 6 messages tried failed", "held": 0})
    audit_at(store, start + 1000, "ops", "campaign.resume", cid, {"released": 0})
    audit_at(store, fix_at, "ops", "campaign.retry", cid, {
        "round": 1, "causes": ["PROVIDER_OUTAGE"], "via": None, "recipients": 3})
    round1 = [send(f"a{i}") for i in range(3)]
    settle(store, {round1[2]: (State.FAILED, "PROVIDER_OUTAGE", "mailer", OUTAGE_CODE)})
    stopped = desk.send("stranger@example.com", topic="news", contact_id=stranger,
                        campaign_id=cid, template="welcome")
    assert store.get(stopped[0]).state is State.SUPPRESSED  # type: ignore[union-attr]
    desk.app.audience.record_consent([ConsentRecord(contacts["a3"], "news", "email",
                                                    "withdrawn", "unsubscribe", start - 7200)])
    desk.consent(contacts["a4"], "news", "email", "withdrawn", source="unsubscribe")
    store.suppress("email", "a5@example.com", "NO_CONSENT", f"receipt for {round0[5]}")
    Lessons(store).add("cause", "PROVIDER_OUTAGE", NOTE, author="ops")
    return CampaignStory(cid, start, fix_at, contacts, round0, round1)


@dataclass
class IncidentStory:
    incident: str
    cid: str
    originals: list[str]
    replays: list[str]
    stopped: list[dict[str, str]]


def incident_story(desk: Desk, *, suppressed_since: int = 0) -> IncidentStory:
    """25 campaign emails through ``mailer``: 20 fail with PROVIDER_OUTAGE. The real alert
    book opens an incident on provider:mailer; the operator fails the provider over, replays
    the 20 (they are delivered) and closes it."""
    store = desk.store
    priced(desk)
    cid = campaign_row(store, "autumn", started_at=time.time() - 60, state="completed",
                       finished_at=time.time())
    sent = store.enqueue([NewMessage("email", f"r{i}@example.com", {"subject": "s",
                                                                    "text": "t"},
                                     campaign_id=cid, template="welcome") for i in range(25)],
                         scope="t")
    ids = [r.id for r in sent if isinstance(r, Accepted)]
    settle(store, {m: (State.FAILED, "PROVIDER_OUTAGE", "mailer", "503") for m in ids[:20]})
    AlertBook(desk.app).evaluate(force=True)
    book = Incidents(desk.app)
    (found,) = [i for i in book.recent() if i["scope"] == "provider:mailer"]
    actions.act(desk.app, found["id"], "failover", actor="ops", provider="mailer",
                duration="10m", reason="mailer is down")
    for i in range(suppressed_since):  # addresses suppressed between the failure and the replay
        store.suppress("email", f"r{i}@example.com", "INVALID_RECIPIENT", "a bounce")
    done = replay(desk.app, book, found["id"], via="mailer", actor="ops")
    assert {r["original"] for r in done["enqueued"] + done["stopped"]} >= set(ids[:20]), done
    settle(store, {})
    book.close(found["id"], "mailer recovered; replayed the 20", actor="ops")
    return IncidentStory(found["id"], cid, ids[:20], [r["id"] for r in done["enqueued"]],
                         done["stopped"])
