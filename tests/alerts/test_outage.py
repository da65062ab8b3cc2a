"""The whole story of a provider outage, with real processes: a `pushguard worker` subprocess
sends SMS through a sandbox gateway that starts failing; its alerts duty raises a failure-rate
alert that opens an incident and notifies a real webhook receiver (signatures verified), then
escalates once; the operator adds a backup gateway and replays the affected recipients through
it with the real CLI (twice: nothing is sent twice); the gateway recovers and the alert
resolves itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pushguard.sandbox import SandboxThread
from pushguard.states import State
from pushguard.store.sql import SQLStore
from tests.alerts.conftest import Receiver, sms, wait_for

#: with this seed and a 30 % fault rate, the gateway fails exactly 4 requests before it has
#: answered 10 (each failure is retried): 4 of 34 attempts, between warn and critical
SEED, FAILURES = 9, 4
WINDOW = 10


def config(path: Path, sandbox: str, backup: str, receiver: str, *, with_backup: bool) -> None:
    providers = '["primary", "backup"]' if with_backup else '["primary"]'
    path.write_text(f"""
[channels.sms]
providers = {providers}
[channels.webhook]
providers = ["hooks"]

[providers.primary]
type = "http"
url = "{sandbox}/sms/a/send"
timeout = 2
[providers.backup]
type = "http"
url = "{backup}/sms/b/send"
timeout = 2
[providers.hooks]
type = "webhook"
secret = "env:PUSHGUARD_WEBHOOK_SECRET"
timeout = 2

[retry]
base = 0.05
cap = 0.2
retry_after_cap = 0.2
# no breaker here: every failed attempt is counted, so the figures are exact
[breaker]
consecutive = 10000
min_calls = 10000

[alerts]
every = 0.3
resolve_after = 0
notify = [{{channel = "webhook", to = "{receiver}"}}]
[alerts.failure_rate]
warn = 0.10
critical = 0.40
window = {WINDOW}
# small enough that the notifications' own failures would alert, were they counted
min_sample = 2
baseline_factor = 0
""")


@contextmanager
def worker(env: dict[str, str], cwd: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "pushguard", "worker", "--concurrency",
                             "20", "--batch", "20"], env=env, cwd=cwd, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert proc.returncode == 0, err[-3000:]


def cli(env: dict[str, str], cwd: Path, *args: str) -> Any:
    proc = subprocess.run([sys.executable, "-m", "pushguard", *args, "--json"], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def drained(store: SQLStore) -> bool:
    return not sum(store.stats().by_state.values())


def provider_alert(store: SQLStore) -> dict[str, Any] | None:
    from pushguard.diagnosis.alerts import alert_json
    from pushguard.store.schema import alerts

    with store._read() as conn:
        row = conn.execute(alerts.select().where(alerts.c.scope == "provider:primary",
                                                 alerts.c.rule == "failure_rate")).first()
    return alert_json(row) if row is not None else None


@pytest.mark.slow
def test_outage_alert_incident_replay_and_recovery(store: SQLStore, tmp_path: Path,
                                                   webhook_secret: str,
                                                   receiver: Receiver) -> None:
    toml = tmp_path / "pushguard.toml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGUARD_")}
    env.update(PUSHGUARD_DATABASE_URL=store.url.replace("+psycopg", ""),
               PUSHGUARD_CONFIG=str(toml), PUSHGUARD_WEBHOOK_SECRET=webhook_secret,
               PUSHGUARD_OUTBOUND_ALLOW="127.0.0.1", PUSHGUARD_POLL_INTERVAL="0.02",
               PUSHGUARD_LOG_LEVEL="WARNING")
    with SandboxThread(profiles={}) as primary, SandboxThread(profiles={}) as backup:
        config(toml, primary.http_url, backup.http_url, receiver.url, with_backup=False)
        with worker(env, tmp_path):
            # A: healthy traffic
            store.enqueue([sms(i) for i in range(20)], scope="t")
            wait_for(lambda: drained(store))
            assert provider_alert(store) is None
            # B: the gateway fails some requests: a warning
            primary.set_profile({"seed": SEED, "rates": {"503": 0.3}}, "sms")
            store.enqueue([sms(i) for i in range(20, 30)], scope="t")
            wait_for(lambda: drained(store))
            # (the duty may have looked mid-way: wait until it saw every attempt)
            warn = wait_for(lambda: (a := provider_alert(store)) and
                            a["sample"] == 20 + 10 + FAILURES and a)
            assert warn["severity"] == "warn" and warn["state"] == "open", warn
            assert warn["peak"] == "warn" and warn["value"] == pytest.approx(
                FAILURES / (30 + FAILURES)), warn
            wait_for(lambda: receiver.notifications(warn["id"]))
            # C: the gateway is down and the messages run out of time: critical
            primary.set_profile({"outages": [{"start": 0, "end": 3600, "status": 503}]}, "sms")
            lost = [sms(i, ttl=2) for i in range(100, 120)]
            store.enqueue(lost, scope="t")
            wait_for(lambda: drained(store))
            wait_for(lambda: (a := provider_alert(store)) and a["peak"] ==
                     "critical")
            # another process evaluating at the same time changes nothing
            cli(env, tmp_path, "alerts", "check")
            cli(env, tmp_path, "alerts", "check")
            wait_for(lambda: len(receiver.notifications(warn["id"])) >= 2)
        notes = receiver.notifications(warn["id"])
        assert sorted(level for _, level in notes) == ["critical", "warn"], notes
        assert len({wid for wid, _ in notes}) == 2 and receiver.rejected == 0
        everything = cli(env, tmp_path, "alerts", "list", "--state", "all")["alerts"]
        assert not [a for a in everything if a["scope"] in ("provider:hooks",
                                                            "channel:webhook")], everything

        incident = cli(env, tmp_path, "incidents", "show", warn["incident_id"])
        assert incident["scope"] == "provider:primary" and incident["severity"] == "critical"
        radius = incident["blast_radius"]
        assert radius["messages"] == 20 and radius["recipients"] == 20, radius
        assert radius["channels"] == [{"channel": "sms", "messages": 20}]
        assert radius["providers"] == [{"provider": "primary", "messages": 20}]
        assert incident["top_causes"][0]["fix"]
        kinds = [e["kind"] for e in incident["timeline"]]
        assert kinds.count("alert_fired") == 1 and kinds.count("alert_escalated") == 1, kinds
        assert kinds.count("notified") == 2, kinds

        # the operator adds the backup gateway and replays the affected recipients through it
        config(toml, primary.http_url, backup.http_url, receiver.url, with_backup=True)
        first = cli(env, tmp_path, "incidents", "replay", warn["incident_id"], "--via",
                    "backup")
        again = cli(env, tmp_path, "incidents", "replay", warn["incident_id"], "--via",
                    "backup")
        assert len(first["enqueued"]) == 20 and not first["skipped"], first
        assert not again["enqueued"] and len(again["already"]) == 20, again
        with worker(env, tmp_path):
            wait_for(lambda: drained(store))
            replays = [store.get(r["id"]) for r in first["enqueued"]]
            assert all(v is not None and v.state is State.DELIVERED and
                       v.last_provider == "backup" and v.attempts_count == 1
                       for v in replays), replays
            got = Counter(r.body["to"] for r in backup.recorder.records("sms")
                          if r.outcome == "200")
            assert got == Counter(m.to for m in lost), got
            # D: the gateway recovers; once the failures leave the window the alert resolves
            primary.set_profile({}, "sms")
            n = 1000

            def resolved() -> bool:
                nonlocal n
                store.enqueue([sms(n), sms(n + 1)], scope="t")
                n += 2
                a = provider_alert(store)
                return a is not None and a["state"] == "resolved"

            wait_for(resolved, timeout=WINDOW * 4, every=0.5)
            wait_for(lambda: "resolved" in {lv for _, lv in receiver.notifications(warn["id"])})
    assert sorted(lv for _, lv in receiver.notifications(warn["id"])) == \
        ["critical", "resolved", "warn"]
    timeline = cli(env, tmp_path, "incidents", "show", warn["incident_id"])["timeline"]
    assert [e["kind"] for e in timeline].count("replay") == 2
    assert "alert_resolved" in [e["kind"] for e in timeline]
