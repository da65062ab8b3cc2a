"""Contacts, topics, consent and suppressions through the real HTTP API and the real CLI."""

from __future__ import annotations

from typing import Any

import pytest

from tests.acceptance.conftest import CLI, LiveAPI

HOOK = "https://127.0.0.1:9/hook"


def _nested(depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(depth):
        out = {"a": out}
    return out


def contact_body(ext: str = "u1", **kw: Any) -> dict[str, Any]:
    return {"external_id": ext, "timezone": "Europe/Paris", "locale": "fr-FR",
            "attributes": {"plan": "pro"},
            "addresses": [{"channel": "webhook", "address": HOOK, "verified": True}], **kw}


def setup(c: Any) -> str:
    assert c.post("/v1/topics", json={"name": "news", "kind": "marketing"}).status_code == 201
    assert c.post("/v1/topics", json={"name": "vip", "kind": "marketing",
                                      "double_opt_in": True}).status_code == 201
    r = c.post("/v1/contacts", json=contact_body())
    assert r.status_code == 200, r.text
    assert r.json()["created"] is True
    return str(r.json()["id"])


def test_contact_lifecycle_and_the_gate_through_the_api(live_api: LiveAPI) -> None:
    with live_api.client() as c:
        cid = setup(c)
        got = c.get("/v1/contacts/u1").json()  # by external id
        assert got["id"] == cid and got["attributes"] == {"plan": "pro"}
        assert got["addresses"][0]["status"] == "active" and got["consent"] == []
        # no consent yet: a marketing message to the contact is recorded as suppressed
        r = c.post("/v1/messages", json={"channel": "webhook", "contact": "u1",
                                         "topic": "news", "content": {"e": 1}})
        assert r.status_code == 202 and r.json()["state"] == "suppressed"
        msg = c.get(f"/v1/messages/{r.json()['id']}").json()
        assert msg["failure"]["cause"] == "NO_CONSENT" and msg["failure"]["rule"] == "consent"
        assert msg["to"] == HOOK and msg["contact_id"] == cid
        story = c.get(f"/v1/messages/{r.json()['id']}/explain").json()
        assert story["rule"] == "consent" and "never consented" in story["summary"]
        # consent with proof, then the same message is queued
        r = c.post(f"/v1/contacts/{cid}/consent", json={
            "topic": "news", "channel": "webhook", "status": "granted", "source": "form",
            "ip": "203.0.113.9", "user_agent": "Firefox", "proof": "signup form v3",
            "policy_version": "2026-01"})
        assert r.status_code == 201, r.text
        r = c.post("/v1/messages", json={"channel": "webhook", "contact": "u1",
                                         "topic": "news", "content": {"e": 2}})
        assert r.json()["state"] == "queued"
        # the ledger keeps who, when, how and the proof
        ledger = c.get(f"/v1/contacts/{cid}/consent").json()
        assert ledger["current"][0]["status"] == "granted"
        row = ledger["ledger"][0]
        assert (row["source"], row["ip"], row["proof"], row["policy_version"]) == (
            "form", "203.0.113.9", "signup form v3", "2026-01")
        assert row["actor"].startswith("key:")
        # export holds everything; erase keeps only hashes
        export = c.get(f"/v1/contacts/{cid}/export").json()
        assert len(export["messages"]) == 2 and export["consent_ledger"][0]["proof"]
        r = c.delete(f"/v1/contacts/{cid}")
        assert r.status_code == 200 and r.json()["addresses_suppressed"] == 1
        assert c.get(f"/v1/contacts/{cid}").status_code == 404
        sup = c.get("/v1/suppressions").json()["suppressions"]
        assert [s["reason"] for s in sup] == ["erased"] and sup[0]["address"].startswith(
            "sha256:")
        r = c.post("/v1/messages", json={"channel": "webhook", "to": HOOK,
                                         "content": {"e": 3}})
        assert r.json()["state"] == "suppressed"


@pytest.mark.parametrize(("body", "field", "words"), [
    (contact_body(consent={"news": "granted"}), "consent", "cannot be set here"),
    (contact_body(suppressed=False), "suppressed", "cannot be set here"),
    (contact_body(id="ctc_x"), "id", "cannot be set here"),
    (contact_body(timezone="Mars/Olympus"), "timezone", "unknown IANA timezone"),
    (contact_body(quiet_hours="late"), "quiet_hours", "not a window"),
    (contact_body(addresses=[{"channel": "sms", "address": "12"}]), "addresses[0].address",
     ""),
    (contact_body(addresses=[{"channel": "email", "address": "a@@b"}]),
     "addresses[0].address", ""),
    (contact_body(plan="x"), "plan", "unknown field"),
    (contact_body(attributes=_nested(300)), "attributes", "nested deeper"),
    (contact_body(attributes={"x": "y" * 20_000}), "attributes", "larger than"),
    (contact_body(addresses=[{"channel": "email", "address": "a@example.com",
                              "last_seen": 1e308}]), "addresses[0].last_seen", "future"),
    ({"addresses": []}, "external_id", "required"),
])
def test_bad_contacts_get_a_4xx_naming_the_field(live_api: LiveAPI, body: dict[str, Any],
                                                  field: str, words: str) -> None:
    with live_api.client() as c:
        r = c.post("/v1/contacts", json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]["fields"][0]
    assert err["field"] == field and words in err["problem"]


def test_bulk_upsert_reports_each_row(live_api: LiveAPI) -> None:
    with live_api.client() as c:
        r = c.post("/v1/contacts/bulk", json={"contacts": [
            contact_body("a"), {"external_id": "b", "consent": {}}, contact_body("c"),
            contact_body("a", attributes={"plan": None, "seats": 3}),
        ]})
        assert r.status_code == 200, r.text
        data = r.json()
        assert (data["accepted"], data["rejected"]) == (3, 1)
        assert data["results"][1]["error"]["fields"][0]["field"] == "contacts[1].consent"
        a = c.get("/v1/contacts/a").json()
        assert a["attributes"] == {"seats": 3} and len(a["addresses"]) == 1
        assert c.post("/v1/contacts/bulk", json={"contacts": []}).status_code == 422


def test_confirmed_opt_in_topic_needs_proof(live_api: LiveAPI) -> None:
    with live_api.client() as c:
        cid = setup(c)
        grant = {"topic": "vip", "channel": "webhook", "status": "granted"}
        r = c.post(f"/v1/contacts/{cid}/consent", json=grant)
        assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "proof"
        r = c.post(f"/v1/contacts/{cid}/consent", json={**grant, "proof": "I promise"})
        assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "proof"
        r = c.post(f"/v1/contacts/{cid}/consent", json={**grant, "topic": "nope"})
        assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "topic"
        r = c.post(f"/v1/contacts/{cid}/consent", json={**grant, "source": "double_opt_in"})
        assert r.status_code == 422  # only pushguard itself records confirmations


def test_suppressions_are_reversible_with_an_audit_trail(live_api: LiveAPI) -> None:
    with live_api.client() as c:
        r = c.post("/v1/suppressions", json={"channel": "sms", "address": "+1 415 555 0100",
                                             "reason": "manual", "note": "asked by phone"})
        assert r.status_code == 201 and r.json()["address"] == "+14155550100"
        r = c.delete("/v1/suppressions/sms", params={"address": "+14155550100",
                                                     "note": "mistake"})
        assert r.status_code == 200
        assert c.delete("/v1/suppressions/sms",
                        params={"address": "+14155550100"}).status_code == 404
        entries = c.get("/v1/audit", params={"subject": "sms:+14155550100"}).json()["entries"]
    assert [e["action"] for e in entries] == ["suppression.removed", "suppression.added"]
    assert entries[0]["detail"]["note"] == "mistake" and entries[0]["actor"].startswith("key:")


def test_cli_contacts_topics_consent_and_why(cli: CLI) -> None:
    cli("db", "upgrade")
    cli("topics", "add", "news", "--kind", "marketing", "--cap", "2/1d")
    out = cli("contacts", "add", "u1", "--email", "Ann@Example.COM", "--phone",
              "+44 20 7946 0958", "--timezone", "Europe/London").stdout
    assert "created" in out
    shown = cli("contacts", "show", "u1", "--json").stdout
    assert "Ann@example.com" in shown and "+442079460958" in shown
    bad = cli("contacts", "add", "u2", "--phone", "555", check=False)
    assert bad.returncode == 1 and "addresses[0].address" in bad.stderr
    sent = cli("send", "--channel", "webhook", "--to", HOOK, "--topic", "news",
               "--content", "{}").stdout.split()
    assert sent[1] == "suppressed"
    why = cli("why", sent[0]).stdout
    assert "no contact holds" in why and "opt in" in why
    cli("consent", "grant", "u1", "news", "email", "--proof", "paper form 12")
    history = cli("consent", "history", "u1").stdout
    assert "granted" in history and "paper form" in history
    unknown = cli("send", "--channel", "webhook", "--to", HOOK, "--topic", "nope",
                  "--content", "{}", check=False)
    assert unknown.returncode == 1 and "unknown topic 'nope'" in unknown.stderr
    erase = cli("contacts", "erase", "u1", check=False)
    assert erase.returncode == 1 and "--yes" in erase.stderr
    assert "erased" in cli("contacts", "erase", "u1", "--yes").stdout


def test_a_push_to_a_contact_goes_to_each_of_its_devices(live_api: LiveAPI) -> None:
    tokens = ["a" * 64, "b" * 64, "c" * 64]
    live_api.app.config = _with_apns(live_api)
    with live_api.client() as c:
        c.post("/v1/topics", json={"name": "alerts", "kind": "transactional"})
        r = c.post("/v1/contacts", json={"external_id": "p1", "addresses": [
            {"channel": "apns", "address": t, "environment": "production"} for t in tokens]})
        assert r.status_code == 200, r.text
        aid = next(a["id"] for a in r.json()["addresses"] if a["address"] == tokens[2])
        c.post(f"/v1/contacts/p1/addresses/{aid}/status",
               json={"status": "deactivated", "reason": "unregistered"})
        r = c.post("/v1/messages", json={
            "channel": "apns", "contact": "p1", "topic": "alerts",
            "content": {"title": "Sign-in", "body": "New sign-in"}},
            headers={"Idempotency-Key": "k1"})
        assert r.status_code == 202, r.text
        data = r.json()
        assert data["state"] == "queued" and len(data["fanout"]) == 1  # 2 active devices
        sent = {c.get(f"/v1/messages/{m['id']}").json()["to"]
                for m in [data, *data["fanout"]]}
        assert sent == {tokens[0], tokens[1]}
        again = c.post("/v1/messages", json={
            "channel": "apns", "contact": "p1", "topic": "alerts",
            "content": {"title": "Sign-in", "body": "New sign-in"}},
            headers={"Idempotency-Key": "k1"})
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert again.json()["fanout"][0]["id"] == data["fanout"][0]["id"]
        none = c.post("/v1/messages", json={"channel": "apns", "contact": "nobody",
                                            "content": {"title": "x", "body": "y"}})
        assert none.status_code == 422
        assert none.json()["error"]["fields"][0]["field"] == "contact"


def _with_apns(live_api: LiveAPI) -> Any:
    import dataclasses

    from pushguard.config import ProviderConfig

    cfg = live_api.app.config
    fake = ProviderConfig("fakepush", "fake", {})
    cfg = dataclasses.replace(cfg, channels={**cfg.channels, "apns": ("fakepush",)},
                              providers={**cfg.providers, "fakepush": fake})
    live_api.app.intake.config = cfg
    return cfg


def test_a_message_can_be_a_template_rendered_for_its_contact(live_api: LiveAPI) -> None:
    with live_api.client() as c:
        setup(c)
        c.post("/v1/topics", json={"name": "orders", "kind": "transactional"})
        r = c.post("/v1/templates", json={
            "name": "shipped", "channel": "webhook", "topic": "orders",
            "content": {"json": {"text": "Hi {{ contact.attributes.plan }}, order "
                                         "{{ data.order }} shipped"}},
            "data": {"order": 1}})
        assert r.status_code == 201, r.text
        sent = c.post("/v1/messages", json={
            "channel": "webhook", "contact": "u1", "topic": "orders",
            "template": {"name": "shipped", "data": {"order": 1001}}})
        assert sent.status_code == 202, sent.text
        msg = c.get(f"/v1/messages/{sent.json()['id']}").json()
        assert msg["content"] == {"text": "Hi pro, order 1001 shipped"}
        missing = c.post("/v1/messages", json={
            "channel": "webhook", "contact": "u1", "topic": "orders",
            "template": {"name": "shipped"}})
        assert missing.status_code == 422
        err = missing.json()["error"]["fields"][0]
        assert err["field"] == "template" and "order" in err["problem"]
        both = c.post("/v1/messages", json={
            "channel": "webhook", "contact": "u1", "content": {},
            "template": {"name": "shipped", "data": {"order": 1}}})
        assert both.status_code == 422
        assert both.json()["error"]["fields"][0]["field"] == "content"
        other = c.post("/v1/messages", json={
            "channel": "sms", "to": "+14155550100", "template": {"name": "nope"}})
        assert other.status_code == 422


def test_cli_send_with_a_template(cli: CLI) -> None:
    cli("db", "upgrade")
    (cli.cwd / "hook.json").write_text('{"json": {"text": "order {{ data.order }} shipped"}}')
    cli("template", "add", "shipped", "--channel", "webhook", "--file", "hook.json",
        "--data", '{"order": 1}')
    out = cli("send", "--channel", "webhook", "--to", HOOK, "--template", "shipped",
              "--data", '{"order": 7}').stdout.split()
    assert out[1] == "queued"
    shown = cli("status", out[0], "--json").stdout
    assert "order 7 shipped" in shown
    bad = cli("send", "--channel", "webhook", "--to", HOOK, "--template", "shipped",
              check=False)
    assert bad.returncode == 1 and "template" in bad.stderr and "order" in bad.stderr
