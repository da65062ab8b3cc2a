"""The post-mortem's world: the campaign kit's real SMTP relays (``primary`` in an outage,
``backup`` healthy but not on the email channel) and link server, with the alerts duty set to
judge a small campaign within seconds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pushguard.app import App
from pushguard.settings import Settings
from pushguard.store.sql import SQLStore
from tests.campaigns.kit import Relay, World, config_text
from tests.conftest import _truncate
from tests.templates.linkserver import link_server

#: 421 4.3.0 to every RCPT: PROVIDER_OUTAGE, transient, retried until the attempts run out
OUTAGE: dict[str, Any] = {"rates": {"503": 1.0}}
#: the failure-rate rule judges the last WINDOW seconds
WINDOW = 30
ALERTS = f"""
[alerts]
every = 0.3
resolve_after = 0

[alerts.failure_rate]
warn = 0.10
critical = 0.50
window = {WINDOW}
min_sample = 5
baseline_factor = 0
"""


@dataclass
class Outage:
    world: World
    settings: Settings
    config: Path

    def with_backup(self) -> App:
        """The operator puts the backup relay on the email channel: a new App (as a restarted
        process would be) reading the new configuration. The caller closes it."""
        relays = self.world.relays
        self.config.write_text(config_text({n: r.port for n, r in relays.items()},
                                           ["primary", "backup"]) + ALERTS)
        return App.from_settings(self.settings)


@contextmanager
def outage_world(tmp_path: Path, database_url: str | None = None) -> Iterator[Outage]:
    with link_server() as links:
        relays = {"primary": Relay(OUTAGE).__enter__(), "backup": Relay({}).__enter__()}
        try:
            cfg = tmp_path / "pushguard.toml"
            cfg.write_text(config_text({n: r.port for n, r in relays.items()}, ["primary"])
                           + ALERTS)
            settings = Settings(database_url=database_url or f"sqlite:///{tmp_path}/pm.db",
                                config=str(cfg), public_url="http://127.0.0.1:9",
                                outbound_allow="127.0.0.1", secret_key="postmortem-test-key")
            app = App.from_settings(settings)
            app.store.migrate()
            if database_url:
                assert isinstance(app.store, SQLStore)
                _truncate(app.store)
            try:
                yield Outage(World(app, links, relays, tmp_path), settings, cfg)
            finally:
                app.templates.close()
                app.store.close()
        finally:
            for r in relays.values():
                r.__exit__(None, None, None)
