"""The application object: settings, store, configuration and metrics wired together once.

Edges (HTTP API, CLI, demo) build one :class:`App` and ask it for what they need; tests build
one with their own store or configuration. Nothing here is global.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from pushguard import config as config_mod
from pushguard import tracing
from pushguard.audience.links import Links, link_keys
from pushguard.circuit import BreakerState
from pushguard.config import Config
from pushguard.duties import run_duties

if TYPE_CHECKING:
    from pushguard.audience.service import Audience
    from pushguard.campaigns.service import Campaigns
    from pushguard.intake import Intake
    from pushguard.templates.service import Templates
from pushguard.exceptions import ConfigError
from pushguard.metrics import Metrics
from pushguard.pipeline import Pipeline
from pushguard.providers.base import Provider, ProviderContext
from pushguard.providers.registry import build_providers
from pushguard.retry import RetryPolicy
from pushguard.routing import Router
from pushguard.settings import Settings
from pushguard.ssrf import OutboundGuard
from pushguard.store.base import Store
from pushguard.store.sql import SQLStore, normalize_url
from pushguard.worker import Worker


@dataclass
class App:
    settings: Settings
    store: Store
    config: Config
    metrics: Metrics = field(default_factory=Metrics)
    guard: OutboundGuard = field(init=False)
    #: breaker transitions not yet written down: (at, key, old, new); the alerts duty
    #: writes them to circuit_events so every process sees them
    circuit_log: deque[tuple[float, str, str, str]] = field(
        default_factory=lambda: deque(maxlen=10_000), init=False, repr=False)
    #: the routers this app built: the holds duty applies provider holds to them
    routers: list[Router] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self.guard = OutboundGuard.from_env(self.settings.outbound_allow)
        if isinstance(self.store, SQLStore):
            self.store.configure_audience(self.config.audience)
        self._audience: Audience | None = None
        self._intake: Intake | None = None
        self._links: Links | None = None
        self._templates: Templates | None = None
        self._campaigns: Campaigns | None = None

    # Built on first use: a worker that runs no campaign never needs them, and their imports
    # (pydantic models, phonenumbers, email-validator) were a third of its start-up.

    @property
    def audience(self) -> Audience:
        """Contacts, addresses, topics and consent."""
        if self._audience is None:
            from pushguard.audience.service import Audience

            self._audience = Audience(self.store, self.guard)  # type: ignore[arg-type]
        return self._audience

    @property
    def intake(self) -> Intake:
        """Validates and accepts messages (the API, the CLI, campaign fan-out)."""
        if self._intake is None:
            from pushguard.intake import Intake

            intake = Intake(self.store, self.config, self.guard, self.settings,
                            audience=self.audience)
            intake.templates = lambda: self.templates
            self._intake = intake  # only once whole: API threads may look at the same time
        return self._intake

    @property
    def templates(self) -> Templates:
        """The template service (its render processes start on first use)."""
        if self._templates is None:
            from pushguard.templates.service import Templates

            self._templates = Templates.over(self.store, self.guard)
        return self._templates

    @property
    def campaigns(self) -> Campaigns:
        """The campaign service (NotFound without the SQL store)."""
        if self._campaigns is None:
            from pushguard.campaigns.service import Campaigns

            self._campaigns = Campaigns(self)
        return self._campaigns

    @property
    def links(self) -> Links:
        """Signs and verifies the links in messages; raises ConfigError without a key."""
        if self._links is None:
            url = self.store.url if isinstance(self.store, SQLStore) else None
            self._links = Links(link_keys(self.settings, url), self.settings.public_url)
        return self._links

    def links_or_none(self) -> Links | None:
        try:
            return self.links
        except ConfigError:
            return None

    @classmethod
    def from_settings(cls, settings: Settings, *, store: Store | None = None) -> App:
        return cls(
            settings=settings,
            store=store or SQLStore(settings.database_url),
            config=config_mod.load(settings),
        )

    def build_providers(self) -> dict[str, Provider]:
        """One instance per configured provider (raises ConfigError on bad options)."""
        return build_providers(self.config, ProviderContext(self.settings, self.guard))

    def build_pipeline(self, providers: dict[str, Provider]) -> Pipeline:
        log = structlog.get_logger("pushguard.circuit")

        def on_change(key: str, old: BreakerState, new: BreakerState) -> None:
            self.metrics.breaker.labels(key).set(0 if new is BreakerState.CLOSED else 1)
            log.warning("circuit_changed", key=key, old=old.value, new=new.value)
            self.circuit_log.append((time.time(), key, old.value, new.value))

        router = Router(
            {ch: [providers[n] for n in names] for ch, names in self.config.channels.items()},
            self.config.breaker,
            on_change=on_change,
        )
        self.routers.append(router)
        r = self.config.retry
        policy = RetryPolicy(base=r.base, cap=r.cap, retry_after_cap=r.retry_after_cap)
        return Pipeline(router, policy, metrics=self.metrics, links=self.links_or_none(),
                        tracer=tracing.tracer_for(self.settings))

    def worker_store(self) -> Store:
        """The store a worker writes through: relaxed commits unless configured otherwise,
        or the injected store (tests)."""
        if not isinstance(self.store, SQLStore) or self.settings.worker_commits == "full":
            return self.store
        if self.store.url != normalize_url(self.settings.database_url):
            return self.store  # built with a store of its own: respect it
        store = SQLStore(self.settings.database_url, relaxed_commits=True)
        store.configure_audience(self.config.audience)
        return store

    def build_worker(self, providers: dict[str, Provider], **overrides: float) -> Worker:
        s = self.settings
        return Worker(
            self.worker_store(),
            self.build_pipeline(providers),
            concurrency=int(overrides.get("concurrency", s.worker_concurrency)),
            batch=int(overrides.get("batch", s.worker_batch)),
            lease=float(overrides.get("lease", s.lease_seconds)),
            poll=float(overrides.get("poll", s.poll_interval)),
        )


async def run_worker(app: App, stop: asyncio.Event,
                     providers: dict[str, Provider] | None = None, /,
                     **overrides: float) -> Worker:
    """Open the providers (built here unless given), deliver until ``stop`` is set, drain,
    close them."""
    if providers is None:
        providers = app.build_providers()
    for p in providers.values():
        await p.start()
    worker = app.build_worker(providers, **overrides)
    duties = asyncio.create_task(run_duties(app, stop))
    try:
        await worker.run(stop)
        await duties
    finally:
        duties.cancel()
        for p in providers.values():
            await p.close()
    return worker
