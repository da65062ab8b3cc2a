"""The issue's story, end to end, in the sandbox: a campaign whose template links to a page
that answers 404 is refused by the pre-flight and started anyway with a reason; its only
email provider (a real SMTP relay) answers 421 to everything. A real worker, with its alerts
duty, fails every message, and the failure-rate alert fires within its window and opens an
incident whose blast radius is the campaign's recipients on email through ``primary``. The
operator puts the ``backup`` relay on the channel and replays the incident: the backup
relay receives each affected recipient exactly once, even when the replay is asked twice.

The post-mortems of the campaign and of the incident name both causes (the outage and the
broken link sent despite the pre-flight) with their counts, and the HTML report, opened in a
real headless Chromium, shows its three charts. The screenshot is written to the directory
named by ``PUSHGUARD_TEST_ARTIFACTS`` (read when the module is imported: the test
environment is cleared of ``PUSHGUARD_*`` before each test), or else to the test's tmp_path.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from pushguard.app import App
from pushguard.diagnosis.incidents import Incidents
from pushguard.diagnosis.postmortem import campaign_postmortem, incident_postmortem
from pushguard.diagnosis.replay import replay
from pushguard.diagnosis.report_html import as_html
from pushguard.diagnosis.report_md import as_markdown
from pushguard.exceptions import Blocked
from pushguard.store.schema import alerts, attempts, messages
from tests.campaigns.kit import work_until
from tests.diagnosis.pm_world import WINDOW, outage_world

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

ARTIFACTS = os.environ.get("PUSHGUARD_TEST_ARTIFACTS")
N = 12
REASON = "the spring landing page goes live at 09:00, before anyone opens this"
CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_binary() -> str | None:
    """As tests/acceptance/test_pages_browser.py finds it (the system Chromium)."""
    explicit = os.environ.get("PUSHGUARD_TEST_CHROMIUM")
    if explicit:
        return explicit
    found = next((p for p in map(shutil.which, CHROMIUM) if p), None)
    return found or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def html(base: str) -> str:
    return (f'<p>Hello {{{{ contact.attributes.first_name }}}}</p>'
            f'<a href="{base}/missing">Our spring sale</a>'
            f'<a href="{{{{ unsubscribe_url }}}}">Unsubscribe</a>')


def provider_alert(app: App) -> Any:
    with app.store._read() as conn:  # type: ignore[attr-defined]
        return conn.execute(select(alerts).where(alerts.c.scope == "provider:primary",
                                                 alerts.c.rule == "failure_rate")).first()


def first_failure(app: App) -> float:
    with app.store._read() as conn:  # type: ignore[attr-defined]
        return float(conn.execute(select(func.min(attempts.c.at)).select_from(
            attempts.join(messages, messages.c.id == attempts.c.message_id)).where(
            attempts.c.outcome != "delivered")).scalar_one())


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_schema_url")
    return url


@pytest.fixture
def page() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test "
                                   "dependency (pip install -e '.[test]')")
    exe = chromium_binary()
    if exe is None:
        pytest.skip("no Chromium binary on PATH (apt-get install chromium, or set "
                    "PUSHGUARD_TEST_CHROMIUM)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        p = context.new_page()
        p.set_default_timeout(15_000)
        problems: list[str] = []
        p.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        p.on("request", lambda r: problems.append(f"fetched {r.url}")
             if not r.url.startswith(("file:", "data:", "about:")) else None)
        p.problems = problems
        yield p
        context.close()
        browser.close()


def test_outage_and_broken_link_alert_incident_replay_and_post_mortem(
        tmp_path: Path, database: str | None, request: pytest.FixtureRequest) -> None:
    with outage_world(tmp_path, database) as o:
        w = o.world
        w.topic("news")
        w.contacts(N)
        w.template("newsletter", html(w.links.url))
        cid = w.campaign()["id"]
        with pytest.raises(Blocked) as refused:
            w.app.campaigns.start(cid, actor="ops")
        assert [f["code"] for f in refused.value.findings] == ["template.link_http_error"]
        w.app.campaigns.start(cid, actor="ops", override=REASON)

        # a real worker with its duties: the campaign fans out, every try meets the outage
        def failed_and_alerted() -> bool:
            a = provider_alert(w.app)
            return w.app.campaigns.find(cid).state == "completed" and a is not None \
                and a.incident_id is not None
        assert asyncio.run(work_until(w.app, failed_and_alerted, timeout=60))
        progress = w.app.campaigns.progress(cid)
        assert (progress["failed"], progress["delivered"]) == (N, 0), progress
        assert w.relays["primary"].recipients == [] == w.relays["backup"].recipients

        alert = provider_alert(w.app)
        assert (alert.severity, alert.peak) == ("critical", "critical")
        assert 0 <= alert.opened_at - first_failure(w.app) <= WINDOW
        incident = Incidents(w.app).show(alert.incident_id)
        radius = incident["blast_radius"]
        assert (incident["scope"], radius["messages"], radius["recipients"]) == \
            ("provider:primary", N, N)
        assert radius["campaigns"] == [{"campaign": cid, "messages": N}]
        assert radius["channels"] == [{"channel": "email", "messages": N}]
        assert radius["providers"] == [{"provider": "primary", "messages": N}]

        # the operator adds the backup to the channel and replays the incident through it
        app = o.with_backup()
        try:
            book = Incidents(app)
            first = replay(app, book, alert.incident_id, via="backup", actor="ops")
            again = replay(app, book, alert.incident_id, via="backup", actor="ops")
            assert (len(first["enqueued"]), first["skipped"]) == (N, []), first
            # the first replay is reaching them: the second finds no one left to replay
            assert (again["enqueued"], again["already"]) == ([], []), again
            assert asyncio.run(work_until(app, lambda: app.campaigns.progress(cid)[
                "delivered"] == N and not app.campaigns.progress(cid)["waiting"],
                timeout=60))
            got = Counter(w.relays["backup"].recipients)
            assert got == Counter(f"c{i}@example.com" for i in range(N)), got
            assert w.relays["primary"].recipients == []

            campaign = campaign_postmortem(app, cid)
            post = incident_postmortem(app, alert.incident_id)
        finally:
            app.templates.close()
            app.store.close()

    for report in (campaign, post):
        causes = {c["cause"]: c for c in report["causes"]}
        assert list(causes) == ["PROVIDER_OUTAGE", "template.link_http_error"], causes
        outage, link = causes["PROVIDER_OUTAGE"], causes["template.link_http_error"]
        assert (outage["failed"], outage["providers"]) == \
            (N, [{"provider": "primary", "count": N}])
        assert outage["codes"][0]["code"].startswith("421")
        assert not outage["checks"]["checks"][0]["flagged"]  # provider_failing: not before
        assert (link["count"], link["counted"], link["template"]) == \
            (N, "messages delivered with it", "newsletter")
        assert (link["reason"], link["overridden_by"]) == (REASON, "ops")
        assert "/missing answers HTTP 404" in link["problem"]
        c = report["comparison"]
        assert (c["a"]["count"], c["a"]["of"], c["b"]["count"], c["b"]["of"]) == (N, N, 0, N)
        assert c["verdict"] == "significant"
        assert report["impact"]["reached"] == N and report["impact"]["unreached"] == 0
        assert report["impact"]["cost"]["total"] == pytest.approx(N * 0.002)  # the backup's
        assert "replay" in [a["kind"] for a in report["actions"]]
    assert campaign["override"]["reason"] == REASON
    assert campaign["impact"]["failed"] == N and campaign["impact"]["delivered"] == N
    assert post["impact"]["blast_radius"]["messages"] == N
    assert post["subject"]["campaigns"][0]["id"] == cid
    assert {"alert_fired", "replay"} <= {e["kind"] for e in post["timeline"]}
    md = as_markdown(campaign)
    assert f"| `PROVIDER_OUTAGE` | failure | {N} messages failed or not sent |" in md
    assert (f"| `template.link_http_error` | pre-flight override | {N} messages delivered "
            "with it |") in md
    assert REASON in md

    if database is None:  # the page once is enough
        shoot(request.getfixturevalue("page"), {"campaign": campaign, "incident": post},
              tmp_path)


def shoot(page: Any, reports: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """Open each HTML report in Chromium: the charts are there and visible, the causes are
    named, nothing was fetched; save a full-page screenshot of each."""
    where = Path(ARTIFACTS) if ARTIFACTS else tmp_path
    where.mkdir(parents=True, exist_ok=True)
    for kind, report in reports.items():
        path = tmp_path / f"postmortem-{kind}.html"
        path.write_text(as_html(report), encoding="utf-8")
        page.goto(path.as_uri())
        for chart in ("outcomes", "rate", "causes"):
            svg = page.locator(f"svg#chart-{chart}")
            assert svg.is_visible(), chart
            box = svg.bounding_box()
            assert box is not None and box["width"] > 100 and box["height"] > 30, (chart, box)
        bars = page.locator("svg#chart-causes g.cause rect")
        assert bars.count() == 2 and all(bars.nth(i).bounding_box()["width"] > 10
                                         for i in range(2))
        assert page.locator("svg#chart-rate g.bucket").count() >= 1
        labels = page.locator("svg#chart-causes").text_content() or ""
        assert "PROVIDER_OUTAGE" in labels and "template.link_http_error" in labels
        text = page.inner_text("body")
        assert "PROVIDER_OUTAGE" in text and "template.link_http_error" in text
        assert REASON in text and "Verdict: recovered" in text
        assert not page.problems, page.problems
        shot = where / ("postmortem.png" if kind == "campaign" else f"postmortem-{kind}.png")
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        print(f"post-mortem screenshot ({kind}): {shot}")
