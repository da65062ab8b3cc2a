"""Crash and resume mid-campaign: a throttled campaign to a few hundred webhook contacts, real
``pushguard worker`` processes SIGKILLed several times while they fan it out and deliver it,
then a last worker. Afterwards every recipient has exactly one campaign message, every message
is delivered (one terminal transition), the receiver got every message id, and a message
reached it twice only where a worker died holding it (a ``lost`` attempt), with the same
webhook-id both times (the rules of tests/acceptance/test_crash_safety.py)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text

from pushguard.app import App
from pushguard.audience.models import TopicIn
from pushguard.campaigns.models import CampaignIn
from pushguard.sandbox import SandboxThread
from pushguard.states import State
from tests.campaigns.kit import (
    add_contacts,
    campaign_messages,
    grant,
    make_app,
    recipients_of,
    webhook_template,
)

N = 300
#: 3000 a minute: 50 recipients a second, so fanning 300 out takes about six seconds
THROTTLE = 3000
KILLS = 3


def _env(db_url: str, secret: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGUARD_")}
    env.update(
        PUSHGUARD_DATABASE_URL=db_url, PUSHGUARD_WEBHOOK_SECRET=secret,
        PUSHGUARD_OUTBOUND_ALLOW="127.0.0.1", PUSHGUARD_LEASE_SECONDS="2",
        PUSHGUARD_POLL_INTERVAL="0.05", PUSHGUARD_LOG_LEVEL="INFO",
        PUSHGUARD_SECRET_KEY="campaign-test-key",
    )
    return env


def _start(env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "pushguard", "worker", "--concurrency", "25", "--batch", "25"],
            env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)


def _wait_started(log: Path, starts: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while log.read_text().count('"worker_started"') < starts:
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)


def _snapshot(app: App, cid: str) -> tuple[int, int]:
    """(recipients still pending, messages being sent) right now."""
    with app.store._read() as conn:  # type: ignore[attr-defined]
        pending = conn.execute(text(
            "SELECT COUNT(*) FROM campaign_recipients WHERE campaign_id = :c AND "
            "state = 'pending'"), {"c": cid}).scalar_one()
        sending = conn.execute(text(
            "SELECT COUNT(*) FROM messages WHERE campaign_id = :c AND state = 'sending'"),
            {"c": cid}).scalar_one()
    return int(pending), int(sending)


def _expire_lease(app: App, pid: int) -> None:
    """The dead worker's runner held the campaign's lease (30 s): let it expire now instead of
    waiting it out, as if the time had passed. Message leases expire on their own (2 s)."""
    with app.store._write() as conn:  # type: ignore[attr-defined]
        conn.execute(text("UPDATE campaigns SET lease_until = 0 WHERE lease_owner LIKE :o"),
                     {"o": f"%:{pid}:%"})


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_sigkilled_workers_mid_campaign_send_each_recipient_exactly_once(
        db: str, request: pytest.FixtureRequest, tmp_path: Path, webhook_secret: str) -> None:
    url = None if db == "sqlite" else request.getfixturevalue("pg_schema_url")
    app = make_app(tmp_path, url, webhook_secret=webhook_secret)
    db_url = app.settings.database_url
    records = tmp_path / "received.jsonl"
    profile = {"seed": 5, "latency_ms": [100, 300]}  # slow enough to be killed mid-flight
    try:
        with SandboxThread(profiles={"webhook": profile}, webhook_secret=webhook_secret,
                           records_path=str(records)) as sb:
            app.audience.put_topic(TopicIn(name="news", kind="marketing"))
            ids = add_contacts(app, [{
                "external_id": f"w{i}", "attributes": {"first_name": f"N{i}"},
                "addresses": [{"channel": "webhook", "address": f"{sb.http_url}/hooks/w{i}"}]}
                for i in range(N)])
            grant(app, list(ids.values()), "news", "webhook")
            webhook_template(app, "hook")
            c = app.campaigns.create(CampaignIn.model_validate({
                "name": "crashy", "topic": "news", "throttle": THROTTLE,
                "channels": [{"channel": "webhook", "template": "hook"}]}), actor="test")
            cid = c["id"]
            assert app.campaigns.start(cid, actor="test")["state"] == "sending"

            env = _env(db_url, webhook_secret)
            rng = random.Random(int(os.environ.get("CRASH_SEED", "20261122")))
            log = tmp_path / "worker.log"
            log.touch()
            at_kill = []
            for k in range(KILLS):
                proc = _start(env, tmp_path, log)
                _wait_started(log, k + 1)
                time.sleep(rng.uniform(1.2, 2.0))
                # then at the next moment it holds messages: a kill mid-delivery too
                until = time.monotonic() + 3
                while _snapshot(app, cid)[1] == 0 and time.monotonic() < until:
                    time.sleep(0.01)
                at_kill.append(_snapshot(app, cid))
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                _expire_lease(app, proc.pid)
            assert any(p > 0 for p, _ in at_kill), f"no kill came mid-fan-out: {at_kill}"
            assert any(s > 0 for _, s in at_kill), f"no kill came mid-delivery: {at_kill}"

            final = _start(env, tmp_path, log)
            try:
                _wait_started(log, KILLS + 1)
                deadline = time.monotonic() + 90
                while (row := app.campaigns.find(cid)).state != "completed":
                    assert row.state == "sending", (row.state, row.paused_reason)
                    assert time.monotonic() < deadline, (app.campaigns.progress(cid),
                                                         log.read_text()[-3000:])
                    time.sleep(0.2)
            finally:
                final.send_signal(signal.SIGTERM)
                assert final.wait(30) == 0, log.read_text()[-3000:]

        # every recipient: one message, delivered
        recs = recipients_of(app, cid)
        assert len(recs) == N and {r.state for r in recs} == {"enqueued"}
        rows = campaign_messages(app, cid)
        per_contact = Counter(r.contact_id for r in rows)
        assert set(per_contact) == set(ids.values())
        twice = {k: n for k, n in per_contact.items() if n > 1}
        assert twice == {}, f"{len(twice)} contacts got more than one message"
        assert {r.message_id for r in recs} == {r.id for r in rows}
        assert Counter(r.state for r in rows) == {"delivered": N}
        views = {r.id: app.store.get(r.id) for r in rows}
        for v in views.values():
            assert v is not None
            assert sum(1 for t in v.history if State(t.dst).terminal) == 1, v.history
        progress = app.campaigns.progress(cid)
        assert progress["delivered"] == N and progress["waiting"] == 0

        # the receiver: every id, and a second copy only where a worker died holding it
        received: Counter[str] = Counter()
        for line in records.read_text().splitlines():
            rec = json.loads(line)
            if rec["service"] == "webhook" and rec["outcome"] == "200":
                received[rec["headers"]["webhook-id"]] += 1
        assert set(received) == set(views), "some message never reached the receiver"
        for mid, n in received.items():
            if n > 1:
                view = views[mid]
                assert view is not None
                lost = [a for a in view.attempts if a.outcome == "lost"]
                assert lost, f"{mid} was delivered {n} times without a crash"
                assert n <= len(lost) + 1
        # and each body was rendered for its own contact
        bodies = {json.loads(r.content)["who"] for r in rows}
        assert bodies == {f"w{i}" for i in range(N)}
    finally:
        app.templates.close()
        app.store.close()
