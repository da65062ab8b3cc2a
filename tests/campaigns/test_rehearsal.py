"""Rehearsals: the dry run plans every message (recipient x channel x provider, with the
failover, the fallback and the cost from the provider's ``cost`` option) and counts why the
others would not be sent, without writing a message; a test send goes to the seed addresses
only, through the real relay, rendered as the chosen contact."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import func, select

from pushguard.campaigns import rehearsal
from pushguard.exceptions import InputError
from pushguard.store.schema import campaign_recipients, contact_sends, messages
from tests.campaigns.kit import World, add_contacts, audit_actions, work_until, world

pytestmark = pytest.mark.timeout(60)

HTML = ('<p>Hello {{ contact.attributes.first_name }} of {{ contact.attributes.city }}</p>'
        '<a href="{{ unsubscribe_url }}">Unsubscribe</a>')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def w(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_schema_url")
    with world(tmp_path, relays={"primary": {}, "backup": {}},
               order=["primary", "backup"], database_url=url) as got:
        got.topic("news", double_opt_in=True)
        got.template("newsletter", HTML)
        got.contacts(10, city="Paris")
        got.contacts(3, prefix="pending", consent="pending", city="Lyon")  # unconfirmed
        got.contacts(1, prefix="gone", city="Nice")
        got.app.store.suppress("email", "gone0@example.com", "bounce", "test")
        add_contacts(got.app, [{"external_id": f"noaddr{i}", "attributes": {"city": "X"}}
                               for i in range(2)])
        yield got


def _count(w: World, table: object) -> int:
    with w.app.store._read() as conn:  # type: ignore[attr-defined]
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_the_dry_run_plans_every_message_and_writes_none(w: World) -> None:
    c = w.campaign()
    out = io.StringIO()
    got = rehearsal.dry_run(w.app.campaigns, c["id"], limit=5, out=out)

    assert _count(w, messages) == 0
    assert _count(w, campaign_recipients) == 0
    assert _count(w, contact_sends) == 0
    assert w.app.campaigns.find(c["id"]).state == "draft"

    assert got["recipients"] == 16
    assert got["outcomes"] == {"send": 10, "not_sent": 6}
    assert got["not_sent_by"] == {"consent": 3, "no_address": 2, "suppression": 1}
    assert got["routes"] == [{"channel": "email", "provider": "primary", "messages": 10}]
    assert got["estimated_cost"] == pytest.approx(10 * 0.001)
    assert len(got["plan"]) == 5 and got["plan_truncated"] is True

    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rows) == 16
    sends = [r for r in rows if r["outcome"] == "send"]
    assert {r["contact"] for r in sends} == {f"c{i}" for i in range(10)}
    for r in sends:
        assert r["channel"] == "email" and r["to"] == f"{r['contact']}@example.com"
        assert r["provider"] == "primary" and r["failover"] == ["backup"]
        assert r["cost"] == 0.001 and r["bytes"] > 0 and r["template"] == "newsletter"
    reasons = Counter(r["reason"].split(":")[0] for r in rows if r["outcome"] == "not_sent")
    assert reasons == {"consent": 3, "no_address": 2, "suppression": 1}
    pending = next(r for r in rows if r["contact"] == "pending0")
    assert "has not confirmed" in pending["reason"]


def test_the_dry_run_costs_what_the_first_provider_charges(tmp_path: Path) -> None:
    with world(tmp_path, relays={"primary": {}, "backup": {}},
               order=["backup", "primary"]) as w:
        w.topic("news")
        w.template("newsletter", HTML)
        w.contacts(4, city="Paris")
        c = w.campaign()
        got = rehearsal.dry_run(w.app.campaigns, c["id"])
        assert got["routes"] == [{"channel": "email", "provider": "backup", "messages": 4}]
        assert got["estimated_cost"] == pytest.approx(4 * 0.002)
        assert {r["failover"][0] for r in got["plan"]} == {"primary"}


async def test_a_test_send_reaches_the_seeds_only_rendered_as_the_contact(w: World) -> None:
    c = w.campaign(seeds=["qa@example.com", "email:lead@example.com"])
    got = rehearsal.test_send(w.app.campaigns, c["id"], as_contact="c3", actor="alice")
    assert got["rendered_as"] == "c3"
    assert sorted(s["to"] for s in got["sent"]) == ["lead@example.com", "qa@example.com"]
    relay = w.relays["primary"]
    assert await work_until(w.app, lambda: len(relay.server.handler.messages) >= 2)
    assert sorted(relay.recipients) == ["lead@example.com", "qa@example.com"]
    assert w.relays["backup"].recipients == []
    for raw in relay.server.handler.messages:
        mail = message_from_bytes(raw, policy=policy.default)
        assert mail["Subject"] == "Hello N3"
        body = mail.get_body(("html",))
        assert body is not None and "Hello N3 of Paris" in body.get_content()
    # not part of the campaign: no campaign message, the campaign still a draft
    assert w.app.campaigns.progress(c["id"])["messages"] == {}
    assert w.app.campaigns.find(c["id"]).state == "draft"
    assert ("campaign.test_send", {"to": ["qa@example.com", "lead@example.com"], "as": "c3"}) \
        in audit_actions(w.app, c["id"])


async def test_a_test_send_carries_stand_in_unsubscribe_links_that_change_nothing(
    w: World,
) -> None:
    """A marketing email's test send looks like the real one (List-Unsubscribe with RFC 8058
    one-click, the link in the body) but its links stand in for the contact's own: clicking
    them, or the mailbox's one-click POST, shows what the real link does and unsubscribes
    nobody, not even the contact the test was rendered as."""
    import re

    import httpx

    from tests.conftest import serve_api

    c = w.campaign(seeds=["qa@example.com"])
    rehearsal.test_send(w.app.campaigns, c["id"], as_contact="c3", actor="alice")
    relay = w.relays["primary"]
    assert await work_until(w.app, lambda: len(relay.server.handler.messages) >= 1)
    mail = message_from_bytes(relay.server.handler.messages[0], policy=policy.default)
    header = str(mail["List-Unsubscribe"])
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = mail.get_body(("html",))
    assert html is not None
    body = html.get_content()
    assert "{{unsubscribe_url}}" not in body and "/unsubscribe/" not in body + header
    [link] = re.findall(r'<(http[^>]+/test-link/[^>]+)>', header)
    assert f'href="{link}"' in body  # the template's own link, filled with the stand-in

    c3 = w.app.audience.contact("c3")["id"]
    before = w.app.audience.contact("c3")["consent"]
    with serve_api(w.app) as base, httpx.Client(base_url=base, timeout=10) as anon:
        path = link.split("://", 1)[1].split("/", 1)[1]
        shown = anon.get(f"/{path}")
        assert shown.status_code == 200 and "test send" in shown.text
        assert "unsubscribes its recipient from news by email" in shown.text
        clicked = anon.post(f"/{path}", data={"List-Unsubscribe": "One-Click"})
        assert clicked.status_code == 200 and "nothing was changed" in clicked.text
        forged = anon.get(f"/{path[:-3]}xyz")
        assert forged.status_code == 400
        # a real unsubscribe token is no test link, and the other way round
        real = w.app.links.unsubscribe_url(c3, "news", "email").split("/unsubscribe/")[1]
        assert anon.get(f"/test-link/{real}").status_code == 400
        assert anon.get(f"/unsubscribe/{path.split('/')[-1]}").status_code == 400
    assert w.app.audience.contact("c3")["consent"] == before


def test_a_test_send_needs_seeds_and_a_contact_that_renders(w: World) -> None:
    c = w.campaign()
    with pytest.raises(InputError) as none:
        rehearsal.test_send(w.app.campaigns, c["id"], actor="t")
    assert none.value.field == "to"
    with pytest.raises(InputError) as who:
        rehearsal.test_send(w.app.campaigns, c["id"], to=["qa@example.com"], as_contact="nobody",
                            actor="t")
    assert who.value.field == "as"
    with pytest.raises(InputError) as bad:
        rehearsal.test_send(w.app.campaigns, c["id"], to=["qa@example.com", "not an address"],
                            actor="t")
    assert bad.value.field.startswith("to[1]")
    assert _count(w, messages) == 0  # nothing half-sent
    # the default contact is the segment's first member
    got = rehearsal.test_send(w.app.campaigns, c["id"], to=["qa@example.com"], actor="t")
    assert got["rendered_as"] in {f"c{i}" for i in range(10)} | {"pending0", "gone0",
                                                                 "noaddr0"}


def test_preflight_dry_run_and_fan_out_agree_on_who_gets_a_message(w: World) -> None:
    """A contact without the city the template reads unguarded: the pre-flight warns, the
    dry run does not plan a message, the fan-out skips them, all for the same people."""
    from pushguard.campaigns.preflight import Preflight
    from pushguard.campaigns.runner import Runner
    from tests.campaigns.kit import campaign_messages, recipients_of

    w.contacts(2, prefix="nocity")  # granted, an address, no city
    c = w.campaign()
    report = Preflight(w.app.campaigns).run(c["id"], links=False)
    missing = next(f for f in report["findings"] if f["code"] == "missing_variable")
    assert missing["count"] == 2 and sorted(missing["examples"]) == ["nocity0", "nocity1"]
    plan = rehearsal.dry_run(w.app.campaigns, c["id"], limit=100)
    assert plan["outcomes"]["send"] == report["predicted"]["delivered"] == 10
    assert plan["not_sent_by"].get("TEMPLATE_ERROR") == 2
    w.app.campaigns.start(c["id"], actor="t", override="test")
    Runner(w.app.campaigns).tick()
    sent = {m.contact_id for m in campaign_messages(w.app, c["id"]) if m.state == "queued"}
    assert len(sent) == 10
    skipped = [r for r in recipients_of(w.app, c["id"]) if r.state == "skipped"]
    assert len(skipped) == 2 + 2  # no city; no address
    assert sum(1 for r in skipped if r.detail.startswith("TEMPLATE_ERROR")) == 2
