"""The HTTP API and the CLI over alerts, incidents and provider holds: answers, errors naming
the field or option, holds honoured by a real worker, and the pause action."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from pushguard.app import App, run_worker
from pushguard.config import Config, ProviderConfig
from pushguard.diagnosis.alerts import AlertBook
from pushguard.diagnosis.holds import Holds
from pushguard.diagnosis.incidents import Incidents
from pushguard.models import NewMessage
from pushguard.sandbox import SandboxThread
from pushguard.settings import Settings
from pushguard.store.schema import campaigns
from pushguard.store.sql import SQLStore
from tests.acceptance.conftest import CLI, LiveAPI
from tests.alerts.conftest import finish


def _incident(app: App) -> str:
    assert isinstance(app.store, SQLStore)
    finish(app.store, [(NewMessage("webhook", f"http://127.0.0.1:9/h{i}", {"n": i}),
                        "AUTH_CREDENTIALS") for i in range(3)], provider="webhook")
    report = AlertBook(app).evaluate(force=True)
    assert report["fired"], report
    return str(AlertBook(app).get(report["fired"][0])["incident_id"])


def test_api_reads_acts_and_refuses_bad_input(live_api: LiveAPI) -> None:
    iid = _incident(live_api.app)
    with live_api.client() as c:
        found = c.get("/v1/alerts").json()["alerts"]
        assert [a["rule"] for a in found] == ["credentials"]
        assert c.get(f"/v1/alerts/{found[0]['id']}").json()["incident_id"] == iid
        assert c.get("/v1/alerts", params={"state": "shut"}).json()["error"]["fields"][0][
            "field"] == "state"
        assert c.get("/v1/alerts/alr_nope").status_code == 404
        assert c.get("/v1/incidents/inc_nope").status_code == 404
        shown = c.get(f"/v1/incidents/{iid}").json()
        assert shown["blast_radius"]["messages"] == 3
        assert shown["top_causes"][0]["cause"] == "AUTH_CREDENTIALS"
        r = c.post(f"/v1/incidents/{iid}/replay", json={"via": "webhook", "channel": "sms"})
        assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "via"
        r = c.post(f"/v1/incidents/{iid}/replay", json={"via": "nobody"})
        assert r.status_code == 422 and "unknown provider" in r.text
        r = c.post(f"/v1/incidents/{iid}/actions", json={"action": "reboot"})
        assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "action"
        r = c.post(f"/v1/incidents/{iid}/actions", json={"action": "failover", "for": "2x"})
        assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "for"
        r = c.post(f"/v1/incidents/{iid}/actions", json={"action": "failover", "for": "5m"})
        assert r.status_code == 200 and r.json()["result"]["provider"] == "webhook"
        assert [h["provider"] for h in c.get("/v1/providers/holds").json()["holds"]] == [
            "webhook"]
        assert c.delete("/v1/providers/webhook/hold").status_code == 204
        assert c.delete("/v1/providers/webhook/hold").status_code == 404
        assert c.post("/v1/providers/nobody/hold",
                      json={"for": "1m", "reason": "x"}).status_code == 404
        r = c.post("/v1/providers/webhook/hold", json={"for": 0, "reason": "x"})
        assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "for"
        assert c.post(f"/v1/incidents/{iid}/notes", json={"note": "paged Bob"}
                      ).status_code == 201
        assert c.post(f"/v1/incidents/{iid}/close", json={"note": ""}).status_code == 422
        closed = c.post(f"/v1/incidents/{iid}/close", json={"note": "keys rotated"}).json()
        assert closed["state"] == "closed"
        assert [e["kind"] for e in closed["timeline"]] == ["alert_fired", "action", "note",
                                                          "closed"]
        assert c.post(f"/v1/incidents/{iid}/close", json={"note": "x"}).status_code == 422
        metrics = httpx.get(f"{live_api.url}/metrics").text
    assert 'pushguard_alerts_open{rule="credentials",severity="critical"} 1.0' in metrics
    assert "pushguard_incidents_open 0.0" in metrics


def test_cli_names_the_option_it_refuses(cli: CLI) -> None:
    cli("db", "upgrade")
    for args, option in ((["incidents", "replay", "inc_x"], "--via"),
                         (["incidents", "replay", "inc_x", "--via", "nobody"], "--via"),
                         (["providers", "hold", "webhook", "--for", "10x", "--reason", "r"],
                          "--for"),
                         (["alerts", "list", "--state", "shut"], "--state")):
        proc = cli(*args, check=False)
        assert proc.returncode == 1 and proc.stderr.startswith(f"error: {option}:"), \
            (args, proc.stderr)
    assert "no incident" in cli("incidents", "show", "inc_x", check=False).stderr
    held = cli("providers", "hold", "webhook", "--for", "10m", "--reason", "vendor outage")
    assert "held webhook until" in held.stdout
    assert json.loads(cli("providers", "holds", "--json").stdout)["holds"][0]["reason"] == \
        "vendor outage"
    assert cli("providers", "release", "webhook").returncode == 0
    assert json.loads(cli("alerts", "rules", "--json").stdout)["rules"][0]["rule"] == \
        "failure_rate"


async def test_workers_honour_a_provider_hold(tmp_path: Path) -> None:
    with SandboxThread(profiles={}) as primary, SandboxThread(profiles={}) as backup:
        config = Config(channels={"sms": ("primary", "backup")}, providers={
            name: ProviderConfig(name, "http", {"url": f"{sb.http_url}/sms/{name}/send"},
                                 timeout=2)
            for name, sb in (("primary", primary), ("backup", backup))})
        store = SQLStore(f"sqlite:///{tmp_path}/holds.db")
        store.migrate()
        app = App(settings=Settings(outbound_allow="127.0.0.1"), store=store, config=config)
        Holds(store, config.providers).hold("primary", 600, reason="failover drill",
                                            actor="test")
        stop = asyncio.Event()
        task = asyncio.create_task(run_worker(app, stop, poll=0.02))
        deadline = time.monotonic() + 10
        while not (app.routers and app.routers[0].holds):  # the holds duty ran
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        ids = [r.id for r in store.enqueue(  # type: ignore[union-attr]
            [NewMessage("sms", f"+1415555{i:04d}", {"text": "x"}) for i in range(20)],
            scope="t")]
        deadline = time.monotonic() + 30
        while sum(store.stats().by_state.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await task
        assert not sum(store.stats().by_state.values()), store.stats()
        assert Counter(v.last_provider for i in ids if (v := store.get(i))) == {"backup": 20}
        assert primary.recorder.records("sms") == []
        store.close()


def _has_campaign_service() -> bool:
    try:
        from pushguard.campaigns.service import Campaigns  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.xfail(not _has_campaign_service(), strict=False,
                   reason="the campaign service (App.campaigns) is not in this build yet")
def test_critical_campaign_alert_pauses_the_campaign(store: SQLStore) -> None:
    import dataclasses

    from pushguard.campaigns.models import CampaignIn
    from pushguard.config import ALERT_RULES, AlertsConfig

    spec = CampaignIn.model_validate({"name": "spring", "topic": "news",
                                      "channels": [{"channel": "sms", "template": "t"}]})
    now = time.time()
    with store._write() as conn:
        conn.execute(campaigns.insert().values(
            id="cmp_spring", name="spring", state="sending", created_at=now, updated_at=now,
            created_by="test", spec=json.dumps({"campaign": spec.model_dump(mode="json"),
                                                "retries": []}),
            recipients=30, round=0, started_at=now))
    rule = dataclasses.replace(ALERT_RULES["failure_rate"], actions=("pause_campaign",))
    app = App(settings=Settings(), store=store, config=Config(
        channels={"sms": ("p1",)}, providers={"p1": ProviderConfig("p1", "http", {})},
        alerts=AlertsConfig(rules={**ALERT_RULES, "failure_rate": rule})))
    finish(store, [(NewMessage("sms", f"+1415555{i:04d}", {"text": "x"},
                               campaign_id="cmp_spring"), "CONTENT_REJECTED")
                   for i in range(30)])
    report = AlertBook(app).evaluate(force=True)
    (alert,) = [a for a in report["open"] if a["scope"] == "campaign:cmp_spring"]
    assert app.campaigns.get("cmp_spring")["state"] == "paused"
    timeline = Incidents(app).show(alert["incident_id"])["timeline"]
    assert [e["kind"] for e in timeline] == ["alert_fired", "action"], timeline
    assert timeline[1]["actor"] == f"alert:{alert['id']}"
