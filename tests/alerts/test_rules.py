"""Alert rules against real stores (SQLite and PostgreSQL): outcomes are written through the
store's own claim/record path, then the book evaluates."""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from pushguard.app import App
from pushguard.config import ALERT_RULES, AlertsConfig, Config, ProviderConfig, _parse
from pushguard.diagnosis.alerts import AlertBook
from pushguard.diagnosis.holds import flush_circuits
from pushguard.diagnosis.incidents import Incidents
from pushguard.models import NewMessage
from pushguard.settings import Settings
from pushguard.store.sql import SQLStore
from tests.alerts.conftest import finish, sms


def make_app(store: SQLStore, **rules: dict[str, Any]) -> App:
    changed = {name: dataclasses.replace(ALERT_RULES[name], **kw) for name, kw in rules.items()}
    alerts = AlertsConfig(resolve_after=0, rules={**ALERT_RULES, **changed})
    config = Config(
        channels={"sms": ("p1",), "email": ("p1",)},
        providers={"p1": ProviderConfig("p1", "http", {"url": "http://127.0.0.1:9/x"})},
        alerts=alerts)
    return App(settings=Settings(outbound_allow="127.0.0.1"), store=store, config=config)


def open_alerts(book: AlertBook) -> dict[str, tuple[str, str]]:
    return {f"{a['rule']} {a['scope']}": (a["severity"], a["peak"]) for a in book.recent("open")}


def test_failure_rate_fires_escalates_holds_and_resolves(store: SQLStore) -> None:
    book = AlertBook(make_app(store, failure_rate={"warn": 0.1, "critical": 0.3}))
    finish(store, [(sms(i), None) for i in range(20)] +
           [(sms(i), "PROVIDER_OUTAGE") for i in range(20, 23)])
    report = book.evaluate(force=True)
    assert open_alerts(book) == {"failure_rate provider:p1": ("warn", "warn"),
                                 "failure_rate channel:sms": ("warn", "warn")}, report
    finish(store, [(sms(i), "PROVIDER_OUTAGE") for i in range(30, 40)])  # 13 of 33
    report = book.evaluate(force=True)
    assert len(report["escalated"]) == 2 and not report["fired"]
    assert book.evaluate(force=True)["escalated"] == []  # once
    # 13 of 133: under warn but above warn x 0.8 -> still open (hysteresis)
    finish(store, [(sms(i), None) for i in range(100, 200)])
    assert not book.evaluate(force=True)["resolved"]
    assert set(open_alerts(book)) == {"failure_rate provider:p1", "failure_rate channel:sms"}
    finish(store, [(sms(i), None) for i in range(200, 300)])  # 13 of 233: clear
    assert len(book.evaluate(force=True)["resolved"]) == 2
    assert open_alerts(book) == {}
    incident = Incidents(book.app).recent()
    assert {i["scope"] for i in incident} == {"provider:p1", "channel:sms"}
    assert all(i["severity"] == "critical" for i in incident)


def test_notifications_never_count_in_the_rates(store: SQLStore) -> None:
    book = AlertBook(make_app(store, failure_rate={"min_sample": 2}))

    def failing(scope: str) -> None:
        finish(store, [(NewMessage("sms", f"+1415555{i:04d}", {"text": "x"},
                                   idempotency_key=f"{scope}{i}"), "PROVIDER_OUTAGE")
                       for i in range(5)], scope=scope)

    failing("alerts")
    assert book.evaluate(force=True)["fired"] == []
    failing("someone")  # the same failures from anyone else do count
    book.evaluate(force=True)
    assert "failure_rate provider:p1" in open_alerts(book)


def test_concurrent_evaluations_open_one_alert_and_one_incident(store: SQLStore) -> None:
    finish(store, [(sms(i), "AUTH_CREDENTIALS") for i in range(5)])
    stores = [SQLStore(store.url) for _ in range(4)]
    books = [AlertBook(make_app(s)) for s in stores]
    try:
        with ThreadPoolExecutor(4) as pool:
            reports = list(pool.map(lambda b: b.evaluate(force=True), books * 2))
    finally:
        for s in stores:
            s.close()
    fired = [a for r in reports for a in r["fired"]]
    book = AlertBook(make_app(store))
    now = book.recent(None)
    assert len(fired) == 1 and fired == [a["id"] for a in now], reports
    assert [f"{a['rule']} {a['scope']}" for a in now] == ["credentials provider:p1"]
    (incident,) = Incidents(book.app).recent()
    timeline = Incidents(book.app).show(incident["id"])["timeline"]
    assert [e["kind"] for e in timeline] == ["alert_fired"], timeline


def test_complaint_and_bounce_rates_from_receipts_and_outcomes(store: SQLStore) -> None:
    book = AlertBook(make_app(store, bounce_rate={"min_sample": 100}))

    def mail(i: int) -> NewMessage:
        return NewMessage("email", f"u{i}@example.com", {"subject": "s", "text": "t"},
                          campaign_id="cmp_spring")

    sent = [mail(i) for i in range(1000)]
    finish(store, [(m, None) for m in sent])
    for m in sent[:2]:  # two complaints in a thousand: over 0.1 %
        assert store.add_receipt(m.id, "p1", "SES complaint (abuse)", cause="NO_CONSENT",
                                 suppress=("email", "NO_CONSENT"), by_provider=True)
    book.evaluate(force=True)
    assert open_alerts(book)["complaint_rate campaign:cmp_spring"] == ("warn", "warn")
    for m in sent[2:4]:  # four: over 0.3 %
        store.add_receipt(m.id, "p1", "complaint", cause="NO_CONSENT",
                          suppress=("email", "NO_CONSENT"), by_provider=True)
    book.evaluate(force=True)
    assert open_alerts(book)["complaint_rate channel:email"] == ("critical", "critical")
    assert not [k for k in open_alerts(book) if k.startswith("bounce_rate")]
    bounced = [mail(i) for i in range(2000, 2030)]  # 30 hard bounces of 1030: 2.9 %
    finish(store, [(m, "INVALID_RECIPIENT") for m in bounced])
    assert len(store.suppressions(100)) == 34
    book.evaluate(force=True)
    assert open_alerts(book)["bounce_rate channel:email"] == ("warn", "warn")


def test_credentials_unknown_causes_and_queue(store: SQLStore) -> None:
    book = AlertBook(make_app(store, queue_depth={"warn": 5, "critical": 50}))
    finish(store, [(sms(i), "AUTH_CREDENTIALS") for i in range(3)] +
           [(sms(9), "UNKNOWN")] + [(sms(i), None) for i in range(10, 30)])
    store.enqueue([sms(i) for i in range(100, 106)], scope="t")
    book.evaluate(force=True)
    found = open_alerts(book)
    assert found["credentials provider:p1"] == ("critical", "critical")
    assert found["unknown_cause provider:p1"] == ("warn", "warn")
    assert found["queue_depth global"] == ("warn", "warn")


def test_circuit_transitions_from_a_real_breaker_raise_and_clear(store: SQLStore) -> None:
    app = make_app(store)
    router = app.build_pipeline(app.build_providers()).router
    breaker = router.breaker("p1")
    for _ in range(5):
        breaker.failure()
    assert flush_circuits(app, store) == 1
    book = AlertBook(app)
    book.evaluate(force=True)
    assert open_alerts(book) == {"circuit_open provider:p1": ("warn", "warn")}
    breaker.open_for = 0.0
    assert breaker.allow()  # half-open probe
    breaker.success()
    assert flush_circuits(app, store) == 2
    assert len(book.evaluate(force=True)["resolved"]) == 1


def test_a_destination_breaker_is_its_own_scope_and_never_fails_the_provider_over(
    store: SQLStore,
) -> None:
    """A per-destination breaker (one receiver of a webhook provider) opening is an alert on
    ``destinations:<provider>``: the failover action, which holds a whole provider, applies
    to provider scopes only; the provider's own breaker still grades the provider."""
    app = make_app(store)
    router = app.build_pipeline(app.build_providers()).router
    for key in ("p1:hooks.customer-a.example", "p1:hooks.customer-b.example"):
        for _ in range(5):
            router.breaker(key).failure()
    assert flush_circuits(app, store) == 2
    book = AlertBook(app)
    book.evaluate(force=True)
    found = open_alerts(book)
    assert set(found) == {"circuit_open destinations:p1"}
    (row,) = [a for a in book.recent("open") if a["scope"] == "destinations:p1"]
    assert "2 destination(s)" in row["summary"] and "hooks.customer-a.example" in row["summary"]
    for _ in range(5):
        router.breaker("p1").failure()
    flush_circuits(app, store)
    book.evaluate(force=True)
    assert set(open_alerts(book)) == {"circuit_open destinations:p1", "circuit_open provider:p1"}


def test_alerts_section_is_validated_with_locations() -> None:
    _, problems = _parse({"channels": {"webhook": {"providers": ["w"]}},
                          "providers": {"w": {"type": "webhook"}},
                          "alerts": {"every": "often", "nope": 1,
                                     "failure_rate": {"warn": 0.5, "critical": 0.2,
                                                      "actions": ["reboot"]},
                                     "notify": [{"channel": "sms", "to": "+14155550100"},
                                                {"channel": "webhook"}]}}, "t.toml")
    where = sorted(p.location for p in problems)
    assert where == ["t.toml:alerts.every", "t.toml:alerts.failure_rate.actions",
                     "t.toml:alerts.failure_rate.critical", "t.toml:alerts.nope",
                     "t.toml:alerts.notify[0].channel", "t.toml:alerts.notify[1]"], \
        json.dumps([str(p) for p in problems])


@pytest.mark.parametrize("level", ["warn", "critical"])
def test_grade_thresholds_and_baseline(level: str) -> None:
    from pushguard.diagnosis.rules import grade

    rule = dataclasses.replace(ALERT_RULES["failure_rate"], baseline_factor=3.0)
    value = 0.12 if level == "warn" else 0.3
    assert grade(rule, value, 100, 0.8) == level
    assert grade(rule, value, 5, 0.8) is None  # too small a sample
    assert grade(rule, 0.06, 100, 0.8, baseline=0.01) == "warn"  # 6x its baseline
    assert grade(rule, 0.06, 100, 0.8, baseline=0.05) is None
