"""A campaign world: a store (SQLite or PostgreSQL), real SMTP relays on loopback playing a
primary and a backup provider, a link server for the templates' links, and helpers to add
topics, contacts, consent and templates. ``deliver()`` runs a real worker (with its campaign
duty) until the campaign stops moving."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pushguard.app import App, run_worker
from pushguard.audience.models import ContactIn, TopicIn
from pushguard.audience.service import ConsentRecord, normalise_contact
from pushguard.campaigns.models import CampaignIn
from pushguard.sandbox.profiles import Profiles
from pushguard.sandbox.recorder import Recorder
from pushguard.sandbox.smtp import SmtpServer
from pushguard.settings import Settings
from pushguard.store.sql import SQLStore
from pushguard.templates.models import TemplateIn, VersionIn
from tests.conftest import _truncate
from tests.templates.linkserver import LinkServer, link_server

SENDER = "Shop <news@shop.example>"


def config_text(ports: dict[str, int], order: list[str],
                retry: tuple[float, float] = (0.01, 0.05),
                rates: dict[str, float] | None = None) -> str:
    out = f'[channels.email]\nproviders = {order!r}\n'.replace("'", '"')
    for name, port in ports.items():
        out += f"""
[providers.{name}]
type = "smtp"
host = "127.0.0.1"
port = {port}
security = "none"
from = "{SENDER}"
timeout = 5
cost = {0.001 if name == "primary" else 0.002}
"""
        if rates and name in rates:
            out += f"rate = {rates[name]}\n"
    out += f"""
[retry]
base = {retry[0]}
cap = {retry[1]}

[breaker]
consecutive = 1000
min_calls = 1000

[audience]
policy_version = "2026-01"
"""
    return out


class Relay:
    """An SMTP relay on its own event loop in a thread: the test's provider."""

    def __init__(self, profile: dict[str, Any]) -> None:
        self.server = SmtpServer(Profiles.from_obj({"smtp": profile}), Recorder(),
                                 keep_messages=100_000)
        self.loop = asyncio.new_event_loop()
        self.port = 0

    def __enter__(self) -> Relay:
        import threading

        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.port = self.loop.run_until_complete(self.server.start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def recipients(self) -> list[str]:
        """Who each accepted message was for, in order (To headers)."""
        from email import message_from_bytes, policy

        return [str(message_from_bytes(raw, policy=policy.default)["To"])
                for raw in self.server.handler.messages]


@dataclass
class World:
    app: App
    links: LinkServer
    relays: dict[str, Relay]
    tmp: Path

    def topic(self, name: str, *, double_opt_in: bool = False) -> None:
        self.app.audience.put_topic(TopicIn(name=name, kind="marketing", description=name,
                                            double_opt_in=double_opt_in))

    def contacts(self, n: int, *, prefix: str = "c", consent: str | None = "granted",
                 topic: str = "news", **attributes: Any) -> list[str]:
        items = [normalise_contact(ContactIn.model_validate({
            "external_id": f"{prefix}{i}", "attributes": {"first_name": f"N{i}", **attributes},
            "addresses": [{"channel": "email", "address": f"{prefix}{i}@example.com"}]}),
            self.app.guard) for i in range(n)]
        got = self.app.audience.upsert(items)
        ids = [r.id for r in got]
        if consent is not None:
            self.app.audience.record_consent([ConsentRecord(
                cid, topic, "email", consent, "double_opt_in" if consent == "granted"
                else "form", time.time()) for cid in ids])
        return ids

    def template(self, name: str, html: str, *, topic: str = "news") -> None:
        self.app.templates.create(TemplateIn(
            name=name, channel="email", topic=topic,
            content={"subject": "Hello {{ contact.attributes.first_name }}", "html": html,
                     "text": "Hello {{ contact.attributes.first_name }}\n"
                             "Unsubscribe: {{ unsubscribe_url }}"}), actor="test")

    def version(self, name: str, html: str) -> None:
        self.app.templates.add_version(name, VersionIn(content={
            "subject": "Hello {{ contact.attributes.first_name }}", "html": html,
            "text": "Hello {{ contact.attributes.first_name }}\n"
                    "Unsubscribe: {{ unsubscribe_url }}"}), actor="test")

    def campaign(self, **spec: Any) -> dict[str, Any]:
        body = {"name": "spring", "topic": "news",
                "channels": [{"channel": "email", "template": "newsletter"}], **spec}
        return self.app.campaigns.create(CampaignIn.model_validate(body), actor="test")

    async def deliver(self, campaign: str, *, timeout: float = 60.0,
                      until: tuple[str, ...] = ("completed", "paused", "cancelled")) -> str:
        """Run a worker (and its campaign duty) until the campaign reaches one of ``until``."""
        stop = asyncio.Event()
        task = asyncio.create_task(run_worker(self.app, stop, poll=0.02))
        deadline = time.monotonic() + timeout
        state = ""
        try:
            while time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                state = self.app.campaigns.find(campaign).state
                if state in until:
                    break
        finally:
            stop.set()
            worker = await task
            if worker.store is not self.app.store:  # the worker's own (relaxed) store
                worker.store.close()
        return state


@contextmanager
def world(tmp_path: Path, *, relays: dict[str, dict[str, Any]] | None = None,
          order: list[str] | None = None, database_url: str | None = None,
          retry: tuple[float, float] = (0.01, 0.05),
          rates: dict[str, float] | None = None) -> Iterator[World]:
    profiles = relays or {"primary": {}}
    with link_server() as links:
        opened = {name: Relay(p).__enter__() for name, p in profiles.items()}
        try:
            cfg = tmp_path / "pushguard.toml"
            cfg.write_text(config_text({n: r.port for n, r in opened.items()},
                                       order or list(profiles), retry, rates))
            settings = Settings(database_url=database_url or f"sqlite:///{tmp_path}/c.db",
                                config=str(cfg), public_url="http://127.0.0.1:9",
                                outbound_allow="127.0.0.1",
                                secret_key="campaign-test-key" if database_url else "")
            app = App.from_settings(settings)
            app.store.migrate()
            if database_url:
                assert isinstance(app.store, SQLStore)
                _truncate(app.store)
            try:
                yield World(app, links, opened, tmp_path)
            finally:
                app.templates.close()
                app.store.close()
        finally:
            for r in opened.values():
                r.__exit__(None, None, None)


# -- additions for the campaign test suite ------------------------------------------------------

def make_app(tmp_path: Path, database_url: str | None = None, *, config: str | None = None,
             webhook_secret: str = "", **extra: Any) -> App:
    """A migrated, empty App on SQLite (in ``tmp_path``) or on a PostgreSQL schema, with the
    default configuration (a webhook provider) unless ``config`` gives pushguard.toml."""
    cfg = ""
    if config is not None:
        path = tmp_path / "pushguard.toml"
        path.write_text(config)
        cfg = str(path)
    settings = Settings(database_url=database_url or f"sqlite:///{tmp_path}/c.db", config=cfg,
                        public_url="http://127.0.0.1:9", outbound_allow="127.0.0.1",
                        webhook_secret=webhook_secret,
                        secret_key="campaign-test-key" if database_url else "", **extra)
    app = App.from_settings(settings)
    app.store.migrate()
    if database_url:
        assert isinstance(app.store, SQLStore)
        _truncate(app.store)
    return app


def add_contacts(app: App, rows: list[dict[str, Any]]) -> dict[str, str]:
    """Upsert contacts given as ContactIn dicts; returns external id -> contact id."""
    items = [normalise_contact(ContactIn.model_validate(r), app.guard) for r in rows]
    return {r.external_id: r.id for r in app.audience.upsert(items)}


def grant(app: App, ids: list[str], topic: str, channel: str, status: str = "granted") -> None:
    app.audience.record_consent([ConsentRecord(cid, topic, channel, status, "form",
                                               time.time()) for cid in ids])


def webhook_template(app: App, name: str, *, topic: str | None = None,
                     body: dict[str, Any] | None = None) -> None:
    app.templates.create(TemplateIn(
        name=name, channel="webhook", topic=topic,
        content={"json": body or {"hello": "{{ contact.attributes.first_name }}",
                                  "who": "{{ contact.external_id }}"}}), actor="test")


def campaign_messages(app: App, campaign_id: str) -> list[Any]:
    """Every message row of a campaign (fallback legs included), oldest first."""
    from sqlalchemy import select

    from pushguard.store.schema import messages

    with app.store._read() as conn:  # type: ignore[attr-defined]
        return list(conn.execute(select(messages).where(
            messages.c.campaign_id == campaign_id).order_by(messages.c.created_at)).all())


def recipients_of(app: App, campaign_id: str) -> list[Any]:
    from sqlalchemy import select

    from pushguard.store.schema import campaign_recipients as r

    with app.store._read() as conn:  # type: ignore[attr-defined]
        return list(conn.execute(select(r).where(r.c.campaign_id == campaign_id)
                                 .order_by(r.c.seq)).all())


def audit_actions(app: App, campaign_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(action, detail) of the campaign's audit entries, oldest first."""
    entries = app.audience.audit(subject=f"campaign:{campaign_id}", limit=1000)
    return [(e["action"], e["detail"]) for e in reversed(entries)]


async def work_until(app: App, done: Any, *, timeout: float = 30.0) -> bool:
    """Run a worker (with its duties) until ``done()`` is true; returns whether it became
    true before ``timeout``."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(app, stop, poll=0.02))
    deadline = time.monotonic() + timeout
    ok = False
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if done():
                ok = True
                break
    finally:
        stop.set()
        worker = await task
        if worker.store is not app.store:
            worker.store.close()
    return ok


class Clock:
    """A stand-in for a module's ``time``: frozen at its first reading, plus an offset the test
    moves (a slow machine must not refill a throttle's bucket between two ticks)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.start: float | None = None

    def time(self) -> float:
        if self.start is None:
            self.start = time.time()
        return self.start + self.offset

    def perf_counter(self) -> float:
        return time.perf_counter()

    def monotonic(self) -> float:
        return time.monotonic()
