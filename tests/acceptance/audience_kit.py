"""A real pushguard API on loopback with email, SMS and webhook channels, for the consent tests.

``world()`` writes a pushguard.toml (SMTP relay on the given port, a Twilio account whose
Auth Token signs inbound webhooks, ``[audience]`` policy), serves the API on a port known
in advance so ``public_url`` (and with it every link in a message) points at it, and offers
the few calls the tests repeat.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from pushguard.app import App
from pushguard.receipts.twilio import compute_signature
from pushguard.settings import Settings
from tests.conftest import _truncate, free_port, serve_api

ACCOUNT = "AC" + "1" * 32
TOKEN = "inbound-test-auth-token"
SENDER = "News <news@shop.example>"


@dataclass
class World:
    url: str
    key: str
    app: App
    http: httpx.Client
    #: a client without API key or cookies: what a person or a mailbox provider uses
    anon: httpx.Client

    def topic(self, name: str, *, kind: str = "marketing", double_opt_in: bool = False,
              description: str = "") -> None:
        r = self.http.post("/v1/topics", json={"name": name, "kind": kind,
                                               "double_opt_in": double_opt_in,
                                               "description": description or name})
        assert r.status_code == 201, r.text

    def contact(self, external_id: str, **addresses: str) -> str:
        addrs = [{"channel": ch, "address": a} for ch, a in addresses.items()]
        r = self.http.post("/v1/contacts", json={"external_id": external_id,
                                                 "addresses": addrs})
        assert r.status_code == 200, r.text
        return str(r.json()["id"])

    def grant(self, ref: str, topic: str, channel: str) -> None:
        r = self.http.post(f"/v1/contacts/{ref}/consent", json={
            "topic": topic, "channel": channel, "status": "granted", "source": "form"})
        assert r.status_code == 201, r.text

    def ledger(self, ref: str) -> list[dict[str, Any]]:
        r = self.http.get(f"/v1/contacts/{ref}/consent")
        assert r.status_code == 200, r.text
        return list(r.json()["ledger"])

    def status(self, ref: str, topic: str, channel: str) -> str | None:
        r = self.http.get(f"/v1/contacts/{ref}/consent")
        for c in r.json()["current"]:
            if (c["topic"], c["channel"]) == (topic, channel):
                return str(c["status"])
        return None

    def send(self, ref: str, channel: str, topic: str | None, **content: Any) -> dict[str, Any]:
        """Enqueue a message to a contact; returns the stored message (state, failure)."""
        if not content:
            content = ({"subject": "Sale", "text": "Spring sale!"} if channel == "email"
                       else {"text": "Spring sale!"})
        body: dict[str, Any] = {"channel": channel, "contact": ref, "content": content}
        if topic:
            body["topic"] = topic
        r = self.http.post("/v1/messages", json=body)
        assert r.status_code == 202, r.text
        got = self.http.get(f"/v1/messages/{r.json()['id']}")
        return dict(got.json())

    def inbound(self, body: str, sid: str, sender: str = "+14155550100",
                token: str = TOKEN) -> httpx.Response:
        """An inbound SMS as Twilio posts it, signed with ``token``."""
        url = f"{self.url}/v1/inbound/twilio"
        form = {"AccountSid": ACCOUNT, "MessageSid": sid, "SmsSid": sid, "From": sender,
                "To": "+15005550006", "Body": body, "NumMedia": "0"}
        return self.anon.post(url, data=form,
                              headers={"X-Twilio-Signature": compute_signature(token, url, form)})


def config_text(smtp_port: int, *, confirm_ttl: int = 3600) -> str:
    return f"""
[channels.email]
providers = ["mail"]
[channels.sms]
providers = ["tw"]

[providers.mail]
type = "smtp"
host = "127.0.0.1"
port = {smtp_port}
security = "none"
from = "{SENDER}"
helo_name = "client.pushguard.test"
timeout = 5

[providers.tw]
type = "twilio"
account_sid = "{ACCOUNT}"
auth_token = "{TOKEN}"
from = "+15005550006"
base_url = "http://127.0.0.1:9"

[retry]
base = 0.01
cap = 0.05

[audience]
confirm_ttl = {confirm_ttl}
policy_version = "2026-01"
"""


def database(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """For a fixture parametrized ``sqlite``/``postgresql``: None (SQLite in ``tmp_path``), or
    the session's PostgreSQL schema (skipped when no server answers)."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("pg_schema_url"))


#: parametrize a fixture with these to run its tests on both databases
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextmanager
def world(tmp_path: Path, *, smtp_port: int = 9, confirm_ttl: int = 3600,
          database_url: str | None = None) -> Iterator[World]:
    """``database_url``: a migrated PostgreSQL schema to empty and use; SQLite by default
    (whose link key is created next to the file; PostgreSQL needs PUSHGUARD_SECRET_KEY)."""
    cfg = tmp_path / "pushguard.toml"
    cfg.write_text(config_text(smtp_port, confirm_ttl=confirm_ttl))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(database_url=database_url or f"sqlite:///{tmp_path}/optin.db",
                        config=str(cfg), public_url=url, outbound_allow="127.0.0.1",
                        secret_key="pg-test-link-key" if database_url else "")
    app = App.from_settings(settings)
    app.store.migrate()
    if database_url:
        _truncate(app.store)  # type: ignore[arg-type]
    _, key = app.store.create_api_key("tests")
    with serve_api(app, port=port) as served, \
            httpx.Client(base_url=served, headers={"Authorization": f"Bearer {key}"},
                         timeout=10) as http, \
            httpx.Client(base_url=served, timeout=10) as anon:
        yield World(served, key, app, http, anon)
    app.store.close()


def path_of(url: str) -> str:
    """``/confirm/<token>`` from a full link."""
    m = re.match(r"https?://[^/]+(/.*)$", url)
    assert m, url
    return m.group(1)
