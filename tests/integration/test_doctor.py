"""The data doctor on real SQLite and PostgreSQL: each kind of finding with data that
triggers it and data that does not, and each fix applied, audited and visible (a merged
contact holds both addresses; a deactivated address stops messages at the gate)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import select, update

from pushguard.audience.doctor import Doctor, Finding, finding_id
from pushguard.audience.models import AddressIn, ContactIn, TopicIn
from pushguard.audience.repair import apply_fixes, ids_of_kinds
from pushguard.audience.service import Audience, ConsentRecord, normalise_contact
from pushguard.exceptions import InputError, NotFound
from pushguard.models import NewMessage
from pushguard.ssrf import OutboundGuard
from pushguard.states import State
from pushguard.store.schema import contact_addresses, messages
from pushguard.store.sql import SQLStore

DAY = 86400.0
NOW = time.time()
FCM = "fcm-" + "a" * 150
FCM2 = "fcm-" + "b" * 150
APNS = "ab" * 32
APNS2 = "cd" * 32
APNS3 = "ef" * 32


@pytest.fixture
def aud(store: SQLStore) -> Audience:
    a = Audience(store, OutboundGuard.from_env(""))
    a.put_topic(TopicIn(name="news", kind="marketing"))
    a.put_topic(TopicIn(name="promo", kind="marketing", double_opt_in=True))
    return a


def contact(aud: Audience, ext: str, *addresses: tuple[str, str], created: float = NOW,
            seen: float | None = None, attributes: dict[str, Any] | None = None) -> str:
    c = normalise_contact(ContactIn(
        external_id=ext, attributes=attributes,
        addresses=[AddressIn(channel=ch, address=a, last_seen=seen) for ch, a in addresses]),
        aud.guard)
    (r,) = aud.upsert([c], now=created)
    return r.id


def grant(aud: Audience, cid: str, topic: str, channel: str, *, status: str = "granted",
          source: str = "form", proof: str | None = "form 1", at: float = NOW) -> None:
    aud.record_consent([ConsentRecord(cid, topic, channel, status, source, at, proof=proof,
                                      actor="test")])


def message(store: SQLStore, channel: str, to: str, *, state: str, at: float,
            cause: str | None = None, contact_id: str | None = None) -> str:
    (acc,) = store.enqueue([NewMessage(channel, to, {"title": "t", "body": "b"},
                                       contact_id=contact_id)], scope="t")
    with store._write() as conn:
        conn.execute(update(messages).where(messages.c.id == acc.id).values(  # type: ignore[union-attr]
            state=state, last_cause=cause, created_at=at, updated_at=at,
            delivered_at=at if state == "delivered" else None))
    return acc.id  # type: ignore[union-attr]


def send(store: SQLStore, channel: str, to: str) -> Any:
    """A new message to ``to``, through intake's gate: its stored view."""
    (acc,) = store.enqueue([NewMessage(channel, to, {"title": "t", "body": "b"})], scope="t")
    return store.get(acc.id)  # type: ignore[union-attr]


def of_kind(aud: Audience, kind: str) -> list[Finding]:
    return [f for f in Doctor(aud).findings(NOW) if f.kind == kind]


def address(store: SQLStore, aid: str) -> Any:
    with store._read() as conn:
        return conn.execute(select(contact_addresses).where(
            contact_addresses.c.id == aid)).one()


def address_id(aud: Audience, ref: str, channel: str) -> str:
    return str(next(a["id"] for a in aud.contact(ref)["addresses"]
                    if a["channel"] == channel))


# -- duplicates -----------------------------------------------------------------------------

def test_duplicate_contacts_are_found_case_insensitively_and_merged(aud: Audience) -> None:
    a = contact(aud, "ana-crm", ("email", "Ana@Example.com"), ("sms", "+14155550100"),
                created=NOW - 10 * DAY, attributes={"plan": "gold"})
    b = contact(aud, "ana-shop", ("email", "ana@example.com"), ("fcm", FCM),
                created=NOW - DAY, attributes={"plan": "free", "city": "Paris"})
    contact(aud, "carl", ("email", "carl@example.com"))
    contact(aud, "dora", ("email", "dora@example.com"))
    e = contact(aud, "dora-old", ("email", "dora@example.com"))
    aud.set_address_status(e, address_id(aud, e, "email"), "deactivated", "bounced", None,
                           actor="test")  # a deactivated copy links nobody
    grant(aud, a, "news", "email", at=NOW - 5 * DAY)
    grant(aud, b, "news", "email", status="withdrawn", source="unsubscribe", at=NOW - DAY)
    grant(aud, b, "news", "sms", at=NOW - 2 * DAY)

    (f,) = of_kind(aud, "duplicate_contacts")
    assert [c["external_id"] for c in f.contacts] == ["ana-crm", "ana-shop"]
    assert f.id == finding_id("duplicate_contacts", sorted([a, b]))
    assert "Ana@example.com is on 'ana-crm', 'ana-shop'" in f.evidence
    assert f.fix.startswith("merge 'ana-shop' into 'ana-crm' (the oldest)")

    (done,) = apply_fixes(Doctor(aud), [f.id], actor="tester")
    assert done.applied and done.audit[0]["action"] == "contact.merged"
    entry = done.audit[0]
    assert entry["subject"] == f"contact:{a}" and entry["actor"] == "tester"
    merged = entry["detail"]["merged"][0]
    assert merged["id"] == b and merged["ledger_rows_moved"] == 2
    assert merged["attributes_taken"] == ["city"]
    with pytest.raises(NotFound):
        aud.resolve("ana-shop")
    kept = aud.contact("ana-crm")
    assert sorted((x["channel"], x["address"]) for x in kept["addresses"]) == [
        ("email", "Ana@example.com"), ("email", "ana@example.com"), ("fcm", FCM),
        ("sms", "+14155550100")]
    assert kept["attributes"] == {"plan": "gold", "city": "Paris"}
    assert {(c["topic"], c["channel"]): c["status"] for c in kept["consent"]} == {
        ("news", "email"): "withdrawn", ("news", "sms"): "granted"}  # the newest per key
    assert len(aud.ledger(a)) == 3
    assert of_kind(aud, "duplicate_contacts") == []


def test_duplicates_chain_into_one_group(aud: Audience) -> None:
    contact(aud, "a", ("sms", "+14155550100"), created=NOW - DAY)
    b = contact(aud, "b", ("sms", "+14155550100"), ("email", "b@example.com"))
    contact(aud, "c", ("email", "B@example.com"))
    (f,) = of_kind(aud, "duplicate_contacts")
    assert [c["external_id"] for c in f.contacts] == ["a", "b", "c"]
    # once b's phone is deactivated it links nobody: only b and c share an address
    aud.set_address_status(b, address_id(aud, b, "sms"), "deactivated", "complaint", "x",
                           actor="test")
    (f,) = of_kind(aud, "duplicate_contacts")
    assert [c["external_id"] for c in f.contacts] == ["b", "c"]


def test_a_merge_keeps_an_address_deactivated_if_either_copy_was(
        aud: Audience, store: SQLStore) -> None:
    a = contact(aud, "a", ("email", "a@example.com"), ("sms", "+14155550100"),
                created=NOW - DAY)
    b = contact(aud, "b", ("email", "a@example.com"), ("sms", "+14155550100"))
    aud.set_address_status(b, address_id(aud, b, "sms"), "deactivated", "complaint",
                           "STOP on 2026-01-02", actor="test")
    (f,) = of_kind(aud, "duplicate_contacts")
    (done,) = apply_fixes(Doctor(aud), [f.id], actor="tester")
    assert len(done.audit[0]["detail"]["merged"][0]["addresses_combined"]) == 2
    kept = {x["channel"]: x for x in aud.contact(a)["addresses"]}
    assert len(aud.contact(a)["addresses"]) == 2
    assert (kept["sms"]["status"], kept["sms"]["status_reason"]) == ("deactivated",
                                                                     "complaint")
    assert kept["email"]["status"] == "active"
    assert send(store, "sms", "+14155550100").failure.rule == "address"


# -- conflicting addresses ------------------------------------------------------------------

def test_a_token_on_two_contacts_stays_with_the_one_who_used_it_last(
        aud: Audience, store: SQLStore) -> None:
    x = contact(aud, "x", ("fcm", FCM), seen=NOW - 100 * DAY)
    y = contact(aud, "y", ("fcm", FCM), seen=NOW - DAY)
    contact(aud, "z", ("fcm", FCM2))  # alone: fine
    (f,) = of_kind(aud, "conflicting_address")
    assert [c["external_id"] for c in f.contacts] == ["y", "x"]
    assert f.fix.startswith("keep it on 'y', who used it last; deactivate it on 'x'")
    # a delivery to x through this token is more recent use than y's last_seen
    message(store, "fcm", FCM, state="delivered", at=NOW - 3600, contact_id=x)
    (f,) = of_kind(aud, "conflicting_address")
    assert [c["external_id"] for c in f.contacts] == ["x", "y"]

    (done,) = apply_fixes(Doctor(aud), [f.id], actor="tester")
    (entry,) = done.audit
    assert entry["action"] == "address.deactivated" and entry["subject"] == f"contact:{y}"
    assert entry["detail"]["reason"] == "conflict" and entry["detail"]["finding"] == f.id
    row = address(store, address_id(aud, y, "fcm"))
    assert (row.status, row.status_reason) == ("deactivated", "conflict")
    assert address(store, address_id(aud, x, "fcm")).status == "active"
    assert of_kind(aud, "conflicting_address") == []


def test_a_phone_on_two_contacts_is_a_conflict_and_a_duplicate(aud: Audience) -> None:
    contact(aud, "p", ("sms", "+14155550100"))
    contact(aud, "q", ("sms", "+14155550100"))
    (dup,) = of_kind(aud, "duplicate_contacts")
    (conflict,) = of_kind(aud, "conflicting_address")
    assert f"merge them instead ({dup.id})" in conflict.evidence
    # merging first leaves nothing for the conflict fix to do: it is skipped, with the reason
    merged, skipped = apply_fixes(Doctor(aud), [dup.id, conflict.id], actor="tester")
    assert merged.applied and not skipped.applied and skipped.audit == []
    assert skipped.reason and "no longer" in skipped.reason


# -- stale tokens ---------------------------------------------------------------------------

def test_stale_tokens_are_found_and_a_deactivated_one_stops_messages(
        aud: Audience, store: SQLStore) -> None:
    old = contact(aud, "old", ("apns", APNS), seen=NOW - 300 * DAY)
    contact(aud, "delivered", ("apns", APNS2), seen=NOW - 300 * DAY)
    message(store, "apns", APNS2, state="delivered", at=NOW - 10 * DAY)
    contact(aud, "recent", ("apns", APNS3), seen=NOW - 100 * DAY)
    contact(aud, "email-only", ("email", "e@example.com"), seen=NOW - 900 * DAY)
    (f,) = of_kind(aud, "stale_token")
    assert f.contacts == [{"id": old, "external_id": "old"}]
    assert "last seen" in f.evidence and "(300 days ago)" in f.evidence
    assert send(store, "apns", APNS).state is State.QUEUED

    (done,) = apply_fixes(Doctor(aud), ids_of_kinds(Doctor(aud), ["stale_token"]),
                          actor="tester")
    assert done.audit[0]["detail"]["reason"] == "stale_token"
    row = address(store, f.addresses[0]["id"])
    assert (row.status, row.status_reason) == ("deactivated", "stale_token")
    assert "300 days ago" in row.status_evidence
    view = send(store, "apns", APNS)
    assert view.state is State.SUPPRESSED and view.failure.rule == "address"
    assert of_kind(aud, "stale_token") == []


# -- soft bounces ---------------------------------------------------------------------------

def bounce(store: SQLStore, to: str, *days_ago: float) -> None:
    for d in days_ago:
        message(store, "email", to, state="dead", cause="RECIPIENT_TEMPORARY",
                at=NOW - d * DAY)


def test_soft_bouncing_addresses(aud: Audience, store: SQLStore) -> None:
    full = contact(aud, "full", ("email", "full@example.com"))
    contact(aud, "recovered", ("email", "ok@example.com"))
    contact(aud, "twice", ("email", "twice@example.com"))
    contact(aud, "long-ago", ("email", "old@example.com"))
    contact(aud, "again", ("email", "again@example.com"))
    bounce(store, "full@example.com", 9, 6, 3)
    bounce(store, "ok@example.com", 9, 6, 3)
    message(store, "email", "ok@example.com", state="delivered", at=NOW - DAY)
    bounce(store, "twice@example.com", 6, 3)
    bounce(store, "old@example.com", 45, 40, 35)
    message(store, "email", "again@example.com", state="delivered", at=NOW - 20 * DAY)
    bounce(store, "again@example.com", 9, 6, 3)  # delivered once, then bouncing since
    bounce(store, "nobody@example.com", 5, 4, 3)
    found = {f.addresses[0]["address"]: f for f in of_kind(aud, "soft_bouncing")}
    assert sorted(found) == ["again@example.com", "full@example.com", "nobody@example.com"]
    f = found["full@example.com"]
    assert f.action == "deactivate" and f.contacts[0]["external_id"] == "full"
    assert "3 messages to full@example.com (email) in the last 30 days ended with " \
           "RECIPIENT_TEMPORARY" in f.evidence
    assert found["nobody@example.com"].action == "suppress"

    done = apply_fixes(Doctor(aud), [f.id, found["nobody@example.com"].id], actor="tester")
    assert [d.audit[0]["action"] for d in done] == ["address.deactivated",
                                                   "suppression.added"]
    row = address(store, address_id(aud, full, "email"))
    assert (row.status, row.status_reason) == ("deactivated", "soft_bounce")
    view = send(store, "email", "full@example.com")
    assert view.state is State.SUPPRESSED and view.failure.rule == "address"
    view = send(store, "email", "nobody@example.com")
    assert view.state is State.SUPPRESSED and view.failure.rule == "suppression"
    assert sorted(f.addresses[0]["address"] for f in of_kind(aud, "soft_bouncing")) == [
        "again@example.com"]


# -- consent --------------------------------------------------------------------------------

def test_consent_without_proof_is_withdrawn_only_when_asked(aud: Audience) -> None:
    no_proof = contact(aud, "no-proof")
    with_proof = contact(aud, "with-proof")
    imported = contact(aud, "imported")
    confirmed = contact(aud, "confirmed")
    withdrawn = contact(aud, "withdrawn")
    grant(aud, no_proof, "news", "email", proof=None, source="api")
    grant(aud, with_proof, "news", "email", proof="form 7")
    grant(aud, imported, "promo", "email", source="import", proof="import a.csv line 2")
    grant(aud, confirmed, "promo", "email", source="double_opt_in", proof="cnf_1")
    grant(aud, withdrawn, "news", "email", status="withdrawn", proof=None)
    found = {f.contacts[0]["external_id"]: f for f in of_kind(aud, "consent_without_proof")}
    assert sorted(found) == ["imported", "no-proof"]
    assert all(f.explicit and f.action == "withdraw_consent" for f in found.values())
    assert "with no proof in the consent ledger" in found["no-proof"].evidence
    assert "needs confirmed opt-in and this grant came from import" in \
        found["imported"].evidence

    (done,) = apply_fixes(Doctor(aud), [found["no-proof"].id], actor="tester")
    assert done.audit[0]["action"] == "consent.withdrawn"
    last = aud.ledger(no_proof)[-1]
    assert (last["status"], last["source"], last["actor"]) == ("withdrawn", "admin", "tester")
    assert found["no-proof"].id in last["proof"]
    assert aud.contact(no_proof)["consent"][0]["status"] == "withdrawn"
    assert [f.contacts[0]["external_id"] for f in of_kind(aud, "consent_without_proof")] == [
        "imported"]


# -- applying -------------------------------------------------------------------------------

def test_an_unknown_id_is_refused_by_its_index_before_anything_changes(
        aud: Audience) -> None:
    contact(aud, "p", ("sms", "+14155550100"))
    contact(aud, "q", ("sms", "+14155550100"))
    (dup,) = of_kind(aud, "duplicate_contacts")
    with pytest.raises(InputError) as e:
        apply_fixes(Doctor(aud), [dup.id, "dup-000000000000"], actor="tester")
    assert e.value.field == "ids[1]" and "dup-000000000000" in e.value.problem
    assert of_kind(aud, "duplicate_contacts") == [dup]
    with pytest.raises(InputError) as e:
        ids_of_kinds(Doctor(aud), ["stale_token", "typo"])
    assert e.value.field == "kinds[1]"


def test_finding_ids_are_stable_between_runs(aud: Audience, store: SQLStore) -> None:
    contact(aud, "old", ("apns", APNS), seen=NOW - 300 * DAY)
    contact(aud, "p", ("sms", "+14155550100"))
    contact(aud, "q", ("sms", "+14155550100"))
    first = [f.id for f in Doctor(aud).findings()]
    assert len(first) == 3
    assert [f.id for f in Doctor(aud).findings()] == first
    assert [f.kind for f in Doctor(aud, stale_days=400).findings()] == [
        "duplicate_contacts", "conflicting_address"]


def test_links_of_a_merged_contact_act_on_the_contact_it_became(
        aud: Audience, store: SQLStore) -> None:
    from pushguard import config as config_mod
    from pushguard.app import App
    from pushguard.audience import optin
    from pushguard.settings import Settings

    app = App(settings=Settings(secret_key="k"), store=store,
              config=config_mod.default_config(Settings()))
    a = contact(aud, "ana-crm", ("email", "ana@example.com"), created=NOW - 10 * DAY)
    b = contact(aud, "ana-shop", ("email", "ana@example.com"), created=NOW - DAY)
    grant(aud, b, "news", "email", at=NOW - DAY)
    token = app.links.unsubscribe_url(b, "news", "email").rsplit("/", 1)[1]
    prefs = app.links.preferences_url(b).rsplit("/", 1)[1]
    (f,) = of_kind(aud, "duplicate_contacts")
    apply_fixes(Doctor(aud), [f.id], actor="tester")  # b is merged into a
    assert aud.contact(a)["consent"][0]["status"] == "granted"
    got = optin.unsubscribe(app, token, optin.Requester("203.0.113.1", "Mail"),
                            "one-click (RFC 8058)")
    assert got["changed"]
    assert aud.contact(a)["consent"][0]["status"] == "withdrawn"
    assert optin.preferences_contact(app, prefs) == a
