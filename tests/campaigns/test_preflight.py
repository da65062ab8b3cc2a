"""Starting checks the campaign: a fresh pre-flight report of an unchanged campaign is reused
(links are not fetched again), but one about templates that changed since is not; an override
is recorded with the findings it overrode, and only when something blocked. Editing a draft
keeps names unique."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pushguard.campaigns.models import CampaignIn
from pushguard.campaigns.preflight import Preflight
from pushguard.exceptions import Blocked, InputError
from tests.campaigns.kit import World, audit_actions, world

pytestmark = pytest.mark.timeout(60)


def html(base: str, link: str) -> str:
    return (f'<p>Hi {{{{ contact.attributes.first_name }}}}</p><a href="{base}{link}">Sale</a>'
            f'<a href="{{{{ unsubscribe_url }}}}">Unsubscribe</a>')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def w(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_schema_url")
    with world(tmp_path, database_url=url) as got:
        got.topic("news")
        got.contacts(5)
        yield got


def test_a_fresh_report_is_reused_by_start(w: World) -> None:
    w.template("newsletter", html(w.links.url, "/ok"))
    c = w.campaign()
    report = Preflight(w.app.campaigns).run(c["id"])
    assert report["blocking"] == 0
    hits = w.links.hits["/ok"]
    assert w.app.campaigns.start(c["id"], actor="t")["state"] == "sending"
    assert w.links.hits["/ok"] == hits  # not checked again
    assert w.app.campaigns.get(c["id"])["override"] is None
    assert "campaign.override" not in [a for a, _ in audit_actions(w.app, c["id"])]


def test_a_report_about_a_template_that_changed_is_not_reused(w: World) -> None:
    w.template("newsletter", html(w.links.url, "/missing"))
    c = w.campaign()
    assert Preflight(w.app.campaigns).run(c["id"])["blocking"] >= 1
    w.version("newsletter", html(w.links.url, "/ok"))  # the fix
    got = w.app.campaigns.start(c["id"], actor="t")
    assert got["state"] == "sending" and got["override"] is None


def test_a_clean_report_does_not_let_a_broken_template_through(w: World) -> None:
    w.template("newsletter", html(w.links.url, "/ok"))
    c = w.campaign()
    assert Preflight(w.app.campaigns).run(c["id"])["blocking"] == 0
    w.version("newsletter", html(w.links.url, "/missing"))  # broken after the check
    with pytest.raises(Blocked) as refused:
        w.app.campaigns.start(c["id"], actor="t")
    assert any(f["code"].startswith("template.link") for f in refused.value.findings)
    assert w.app.campaigns.find(c["id"]).state == "draft"


def test_an_override_is_recorded_with_what_it_overrode(w: World) -> None:
    w.template("newsletter", html(w.links.url, "/missing"))
    c = w.campaign()
    got = w.app.campaigns.start(c["id"], actor="alice", override="page goes live at nine")
    assert got["state"] == "sending"
    o = got["override"]
    assert o["by"] == "alice" and o["reason"] == "page goes live at nine"
    codes = {f["code"] for f in o["findings"]}
    assert any(code.startswith("template.link") for code in codes)
    assert all(set(f) == {"code", "problem", "count"} for f in o["findings"])
    entry = [d for a, d in audit_actions(w.app, c["id"]) if a == "campaign.override"]
    assert entry == [{"reason": "page goes live at nine", "codes": [f["code"] for f in
                                                                     o["findings"]]}]


def test_a_draft_cannot_be_renamed_onto_another_campaign(w: World) -> None:
    w.template("newsletter", html(w.links.url, "/ok"))
    w.campaign(name="one")
    two = w.campaign(name="two")
    body = CampaignIn.model_validate({"name": "one", "topic": "news", "channels": [
        {"channel": "email", "template": "newsletter"}]})
    with pytest.raises(InputError) as taken:
        w.app.campaigns.update(two["id"], body, actor="t")
    assert taken.value.field == "name"
    assert w.app.campaigns.find(two["id"]).name == "two"
    renamed = w.app.campaigns.update(two["id"], body.model_copy(update={"name": "three"}),
                                     actor="t")
    assert renamed["name"] == "three" and w.app.campaigns.find("three").id == two["id"]


def test_a_survey_split_over_processes_adds_up_to_the_same_report(w: World) -> None:
    """A large audience is surveyed by several processes, each over a range of contact ids;
    forced here on a small one, the counts, examples' number and samples match one process."""
    w.contacts(6, prefix="pend", consent="pending")
    w.contacts(4, prefix="none", consent=None)
    w.template("newsletter", html(w.links.url, "/ok"))
    c = w.campaign(min_predicted_rate=0.1)
    one = Preflight(w.app.campaigns).run(c["id"], links=False, processes=1)
    three = Preflight(w.app.campaigns).run(c["id"], links=False, processes=3)
    assert one["recipients"] == three["recipients"] == 15
    assert one["predicted"] == three["predicted"]
    assert one["predicted"]["delivered"] == 5

    def counts(report: dict[str, object]) -> dict[str, tuple[int, int]]:
        return {f["code"]: (f["count"], len(f["examples"]))  # type: ignore[index]
                for f in report["findings"]}  # type: ignore[attr-defined]

    assert counts(one) == counts(three)
    assert counts(three)["unverified"] == (6, 5) and counts(three)["no_consent"] == (4, 4)


def test_a_large_audience_is_estimated_from_a_random_sample_unless_exact(
    w: World, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From SAMPLE_FROM recipients on (lowered here), the tallies come from a uniform random
    sample, scaled up, with the margin of the predicted rate; ``exact`` walks everyone."""
    from pushguard.campaigns import survey

    w.contacts(95, prefix="ok")  # 100 granted with the fixture's 5
    w.contacts(100, prefix="pend", consent="pending")
    w.template("newsletter", html(w.links.url, "/ok"))
    c = w.campaign(min_predicted_rate=0.1)
    monkeypatch.setattr(survey, "SAMPLE_FROM", 150)
    monkeypatch.setattr(survey, "SAMPLE", 80)
    exact = Preflight(w.app.campaigns).run(c["id"], links=False, exact=True)
    assert exact["sample"] is None
    assert exact["recipients"] == 200 and exact["predicted"]["delivered"] == 100
    for _ in range(2):  # a fresh sample each time
        est = Preflight(w.app.campaigns).run(c["id"], links=False)
        sample = est["sample"]
        assert sample["surveyed"] == 80 and sample["recipients"] == 200
        assert est["recipients"] == 200
        rate = est["predicted"]["delivery_rate"]
        # p = 0.5, k = 80 of 200: the margin is 1.96 * sqrt(.25 / 80 * .6) = 0.085
        assert sample["delivery_rate_margin"] == pytest.approx(
            1.96 * (rate * (1 - rate) / 80 * 0.6) ** 0.5, abs=1e-3)
        assert abs(rate - 0.5) <= 2 * 0.085  # about 4 standard errors: effectively never
        unverified = {f["code"]: f["count"] for f in est["findings"]}["unverified"]
        assert unverified + est["predicted"]["delivered"] == 200
    # below the threshold, the exact walk
    monkeypatch.setattr(survey, "SAMPLE_FROM", 201)
    assert Preflight(w.app.campaigns).run(c["id"], links=False)["sample"] is None


def test_the_live_check_logs_in_to_each_provider_and_blocks_on_a_dead_one(w: World) -> None:
    """The pre-flight connects to each provider of the campaign's channels as a send would
    (SMTP: connect, EHLO, QUIT; nothing sent): a relay that answers passes, a relay that is
    gone blocks with the cause and the fix."""
    import asyncio

    w.template("newsletter", html(w.links.url, "/ok"))
    c = w.campaign()
    relay = w.relays["primary"]
    before = relay.server.connections
    ok = Preflight(w.app.campaigns).run(c["id"])
    assert "provider_live_check" not in {f["code"] for f in ok["findings"]}
    assert relay.server.connections == before + 1 and not relay.server.handler.messages
    asyncio.run_coroutine_threadsafe(relay.server.stop(), relay.loop).result(10)
    dead = Preflight(w.app.campaigns).run(c["id"])
    found = [f for f in dead["findings"] if f["code"] == "provider_live_check"]
    assert len(found) == 1 and found[0]["severity"] == "block", dead["findings"]
    assert found[0]["provider"] == "primary" and "failed a live check" in found[0]["problem"]
    assert found[0]["fix"]
    skipped = Preflight(w.app.campaigns).run(c["id"], links=False)
    assert "provider_live_check" not in {f["code"] for f in skipped["findings"]}


def test_provider_failing_counts_the_providers_own_failures_not_bad_addresses(w: World) -> None:
    """A relay that refused 30 bad addresses is healthy; one whose calls timed out or met an
    outage is not. Both failed the same share of their calls."""
    import time

    from pushguard.store.schema import attempts

    w.template("newsletter", html(w.links.url, "/ok"))
    c = w.campaign()
    now = time.time()

    def calls(provider: str, cause: str | None, n: int) -> None:
        with w.app.store._write() as conn:
            conn.execute(attempts.insert(), [
                {"message_id": f"msg_{provider}_{cause}_{i}", "number": 1, "at": now - 60,
                 "provider": provider, "outcome": "delivered" if cause is None else "failed",
                 "cause": cause} for i in range(n)])

    calls("primary", "INVALID_RECIPIENT", 30)
    calls("primary", None, 10)
    report = Preflight(w.app.campaigns).run(c["id"], links=False)
    assert "provider_failing" not in {f["code"] for f in report["findings"]}
    calls("primary", "PROVIDER_OUTAGE", 12)
    calls("primary", "NETWORK_TIMEOUT", 3)
    report = Preflight(w.app.campaigns).run(c["id"], links=False)
    (found,) = [f for f in report["findings"] if f["code"] == "provider_failing"]
    assert found["count"] == 15 and found["provider"] == "primary"
    assert "failed 15 of its 55 calls" in found["problem"]
    assert "PROVIDER_OUTAGE 12, NETWORK_TIMEOUT 3" in found["problem"]
