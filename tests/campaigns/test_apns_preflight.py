"""The pre-flight's live check of an APNs provider, through the real CLI: APNs has no
credentials endpoint, so the check posts a silent push to a device token no device has, and
the sandbox's APNs answers as Apple does: ``BadDeviceToken`` once the provider token and the
topic passed, a 403 when they did not. Nothing reaches the campaign's devices either way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pushguard.app import App
from pushguard.audience.models import TopicIn
from pushguard.providers.apns import PROBE_TOKEN
from pushguard.sandbox.thread import SandboxThread
from pushguard.templates.models import TemplateIn
from tests.campaigns.kit import add_contacts, grant, make_app
from tests.providers.keys import pem

pytestmark = pytest.mark.timeout(120)

DEVICES = [f"{i:02x}" * 32 for i in range(1, 4)]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[App, SandboxThread, dict[str, str]]]:
    with SandboxThread() as sb:
        key = tmp_path / "AuthKey.p8"
        key.write_text(pem(ec.generate_private_key(ec.SECP256R1())))
        config = f"""
[channels.apns]
providers = ["ios"]

[providers.ios]
type = "apns"
team_id = "TEAM123456"
key_id = "KEY1234567"
private_key = "{key}"
topic = "com.example.app"
environment = "sandbox"
base_url = "{sb.sandbox.apns_url}"
"""
        app = make_app(tmp_path, config=config)
        try:
            app.audience.put_topic(TopicIn(name="news", kind="marketing", description="news"))
            ids = add_contacts(app, [{"external_id": f"d{i}", "addresses": [
                {"channel": "apns", "address": d}]} for i, d in enumerate(DEVICES)])
            grant(app, list(ids.values()), "news", "push")
            app.templates.create(TemplateIn(name="promo", channel="push", topic="news",
                                            content={"title": "Sale", "body": "50 % off"}),
                                 actor="test")
            env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGUARD_")}
            env.update(PUSHGUARD_DATABASE_URL=app.settings.database_url,
                       PUSHGUARD_CONFIG=str(tmp_path / "pushguard.toml"),
                       PUSHGUARD_OUTBOUND_ALLOW="127.0.0.1",
                       PUSHGUARD_PUBLIC_URL="http://127.0.0.1:9", COLUMNS="200")
            yield app, sb, env
        finally:
            app.templates.close()
            app.store.close()


def preflight(env: dict[str, str], cwd: Path, rc: int) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-m", "pushguard", "campaign", "preflight", "spring",
                           "--json"], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == rc, proc.stdout + proc.stderr
    report: dict[str, object] = json.loads(proc.stdout)
    return report


def live_findings(report: dict[str, object]) -> list[dict[str, object]]:
    findings = report["findings"]
    assert isinstance(findings, list)
    return [f for f in findings if f["code"] == "provider_live_check"]


def test_the_preflight_checks_apns_credentials_and_no_device_gets_a_push(
    setup: tuple[App, SandboxThread, dict[str, str]], tmp_path: Path,
) -> None:
    app, sb, env = setup
    subprocess.run([sys.executable, "-m", "pushguard", "campaign", "create", "-f", "-"],
                   input=json.dumps({"name": "spring", "topic": "news", "channels": [
                       {"channel": "apns", "template": "promo"}]}),
                   env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                   check=True)
    ok = preflight(env, tmp_path, rc=0)
    assert live_findings(ok) == [], ok["findings"]
    [probe] = sb.sandbox.recorder.records("apns")
    assert (probe.address, probe.outcome) == (PROBE_TOKEN, "400")
    assert probe.meta["apns-push-type"] == "background"

    sb.sandbox.set_profile({"rates": {"403": 1.0}}, "apns")  # the key was revoked, say
    started = time.time()
    dead = preflight(env, tmp_path, rc=1)
    [found] = live_findings(dead)
    assert found["severity"] == "block" and found["provider"] == "ios"
    assert found["provider_code"] == "InvalidProviderToken"
    assert "AUTH_CREDENTIALS" in str(found["problem"]) and found["fix"]
    assert found["count"] == len(DEVICES)
    assert time.time() - started < 60
    records = sb.sandbox.recorder.records("apns")
    assert {r.address for r in records} == {PROBE_TOKEN}  # never a campaign device
