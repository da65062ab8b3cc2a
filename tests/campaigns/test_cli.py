"""``pushguard segments`` and ``pushguard campaign`` as a person runs them: the real CLI in a
subprocess against a database the test prepared (contacts, a topic, a template whose link is
broken). The pre-flight exits 1 on a blocking finding and prints the fix; start refuses
without ``--override``; the dry run writes its plan as JSON lines and sends nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pushguard.campaigns.runner import Runner
from tests.campaigns.kit import World, audit_actions, campaign_messages, world

pytestmark = pytest.mark.timeout(150)


class CLI:
    def __init__(self, w: World) -> None:
        self.cwd = w.tmp
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGUARD_")}
        self.env.update(
            PUSHGUARD_DATABASE_URL=w.app.settings.database_url,
            PUSHGUARD_CONFIG=str(w.tmp / "pushguard.toml"),
            PUSHGUARD_OUTBOUND_ALLOW="127.0.0.1", PUSHGUARD_PUBLIC_URL="http://127.0.0.1:9",
            PUSHGUARD_LOG_FORMAT="json", COLUMNS="200", USER="carol")

    def __call__(self, *args: str, rc: int = 0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "pushguard", *args], env=self.env,
                              cwd=self.cwd, capture_output=True, text=True, timeout=60)
        assert proc.returncode == rc, (f"pushguard {' '.join(args)} -> {proc.returncode}\n"
                                       f"{proc.stdout}\n{proc.stderr}")
        return proc


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[World, CLI]]:
    with world(tmp_path) as w:
        w.topic("news")
        base = w.links.url
        w.template("newsletter", f'<p>Hi {{{{ contact.attributes.first_name }}}}</p>'
                                 f'<a href="{base}/missing">Sale</a>'
                                 f'<a href="{{{{ unsubscribe_url }}}}">Unsubscribe</a>')
        w.contacts(8, plan="pro")
        w.contacts(4, prefix="free", plan="free")
        yield w, CLI(w)


def test_segments_from_the_command_line(env: tuple[World, CLI]) -> None:
    w, cli = env
    got = cli("segments", "add", "pros", "--filter", '{"attribute": "plan", "value": "pro"}',
              "--description", "the pro plan")
    assert got.stdout.startswith("segment pros (seg_") and "8 contacts now" in got.stdout
    bad = cli("segments", "add", "bad", "--filter", json.dumps({"all": [
        {"attribute": "plan", "op": "exists"}, {"attribute": "plan", "op": "like"}]}), rc=1)
    assert "filter.all[1].op" in bad.stderr and "unknown operator 'like'" in bad.stderr
    assert "--filter" in cli("segments", "add", "bad", "--filter", "plan=pro", rc=1).stderr

    preview = json.loads(cli("segments", "preview", "pros", "--sample", "2").stdout)
    assert preview["count"] == 8 and len(preview["sample"]) == 2
    (w.tmp / "free.json").write_text('{"attribute": "plan", "value": "free"}')
    assert json.loads(cli("segments", "preview", "--filter", "@free.json").stdout)["count"] == 4
    listed = cli("segments", "list").stdout
    assert "pros" in listed and "8 contacts" in listed and "the pro plan" in listed


def test_a_campaign_from_the_command_line(env: tuple[World, CLI]) -> None:
    w, cli = env
    cli("segments", "add", "pros", "--filter", '{"attribute": "plan", "value": "pro"}')
    spec = {"name": "spring", "topic": "news", "segment": "pros",
            "channels": [{"channel": "email", "template": "newsletter"}]}
    (w.tmp / "spec.json").write_text(json.dumps(spec))
    (w.tmp / "bad.json").write_text(json.dumps({**spec, "name": "bad", "throttle": 0}))
    created = cli("campaign", "create", "-f", "spec.json")
    assert "campaign spring (cmp_" in created.stdout and "created as a draft" in created.stdout
    assert "throttle" in cli("campaign", "create", "-f", "bad.json", rc=1).stderr

    report = cli("campaign", "preflight", "spring", rc=1).stdout
    assert "block" in report and "/missing" in report and "fix:" in report
    assert "newsletter [default]" in report  # data in the text is not taken for markup
    assert "8 recipients" in report and "random sample" not in report
    exact = json.loads(cli("campaign", "preflight", "spring", "--exact", "--json",
                           rc=1).stdout)
    assert exact["recipients"] == 8 and exact["sample"] is None

    refused = cli("campaign", "start", "spring", rc=1)
    assert "fix:" in refused.stderr and "--override" in refused.stderr
    assert "/missing" in refused.stderr
    assert w.app.campaigns.find("spring").state == "draft"

    plan = json.loads(cli("campaign", "dry-run", "spring", "--out", "plan.jsonl",
                          "--limit", "2").stdout)
    assert plan["outcomes"] == {"send": 8} and len(plan["plan"]) == 2
    rows = [json.loads(line) for line in (w.tmp / "plan.jsonl").read_text().splitlines()]
    assert sorted(r["contact"] for r in rows) == sorted(f"c{i}" for i in range(8))
    assert {r["provider"] for r in rows} == {"primary"}
    assert campaign_messages(w.app, w.app.campaigns.find("spring").id) == []

    why = "the sale page goes live at nine"
    started = cli("campaign", "start", "spring", "--override", why)
    assert "campaign spring is sending" in started.stdout
    shown = json.loads(cli("campaign", "show", "spring").stdout)
    assert shown["override"]["reason"] == why and shown["override"]["by"]
    cid = shown["id"]
    override = [d for a, d in audit_actions(w.app, cid) if a == "campaign.override"]
    assert override and override[0]["reason"] == why

    Runner(w.app.campaigns).tick()  # a worker's duty: snapshot and fan out
    progress = json.loads(cli("campaign", "progress", "spring").stdout)
    assert progress["state"] == "sending" and progress["messages"] == {"queued": 8}
    assert "8 waiting messages held" in cli("campaign", "pause", "spring", "--reason",
                                            "typo").stdout
    assert "is sending; 8 messages released" in cli("campaign", "resume", "spring").stdout
    cancelled = cli("campaign", "cancel", "spring").stdout
    assert "8 waiting messages not sent" in cancelled and "0 recipients skipped" in cancelled
    assert "is already cancelled" in cli("campaign", "cancel", "spring", rc=1).stderr
    listed = cli("campaign", "list").stdout
    assert cid in listed and "cancelled" in listed


def test_a_scheduled_start_says_when_it_sends(env: tuple[World, CLI]) -> None:
    """A start with a schedule said "campaign X is sending" and nothing of when."""
    from datetime import UTC, datetime, timedelta

    w, cli = env
    day = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    base = {"topic": "news", "filter": {"attribute": "plan", "value": "pro"},
            "channels": [{"channel": "email", "template": "newsletter"}]}
    (w.tmp / "at.json").write_text(json.dumps({**base, "name": "later", "schedule": {
        "at": f"{day}T09:30:00Z"}}))
    (w.tmp / "local.json").write_text(json.dumps({**base, "name": "local", "schedule": {
        "local_time": "09:30", "date": day}}))
    for name in ("at", "local"):
        cli("campaign", "create", "-f", f"{name}.json")
    later = cli("campaign", "start", "later", "--override", "the link goes live first")
    assert f"campaign later is scheduled: it sends at {day}T09:30:00" in later.stdout
    local = cli("campaign", "start", "local", "--override", "the link goes live first")
    assert ("campaign local is sending: each recipient gets it at 09:30 in their own time "
            f"zone, on {day}") in local.stdout
