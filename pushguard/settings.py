"""Settings from the environment: the only module that reads ``PUSHGUARD_*`` variables.

Everything else receives a :class:`Settings` object (constructor injection), so tests build
one with other values instead of patching the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pushguard.exceptions import ConfigError

PREFIX = "PUSHGUARD_"


@dataclass(frozen=True)
class Settings:
    """Process-wide settings. Each field ``x`` is read from ``PUSHGUARD_X``."""

    database_url: str = "sqlite:///./pushguard.db"
    #: path of pushguard.toml; when unset, ``./pushguard.toml`` is used if it exists.
    config: str = ""
    #: the Standard Webhooks signing secret (``whsec_...``) of the ``webhook`` provider.
    webhook_secret: str = field(default="", repr=False)
    #: comma-separated hosts, IPs or CIDRs that the SSRF guard lets through.
    outbound_allow: str = ""
    log_level: str = "INFO"
    #: ``json`` (default, for machines) or ``console`` (for people).
    log_format: str = "json"
    #: requests with larger bodies get 413 before they are parsed.
    max_body_bytes: int = 5 * 1024 * 1024
    #: serialized ``content`` larger than this is refused at intake.
    max_content_bytes: int = 64 * 1024
    #: SNS topics whose SES notifications are accepted (comma-separated ARNs; empty: any topic
    #: with a valid AWS signature, which anyone can send — set it in production).
    ses_topic_arns: str = ""
    #: extra hosts allowed to serve SNS signing certificates (tests, on-prem SNS mirrors).
    sns_cert_hosts: str = ""
    #: requests per second each API key may make (0 turns the limit off), and its burst.
    api_rate: float = 100.0
    api_burst: float = 200.0
    #: keys that sign confirmation, unsubscribe and preference links, comma-separated: the
    #: first signs, all verify (rotation). When empty, a key is generated next to a SQLite
    #: database (``<db>.secret``); PostgreSQL deployments must set it on every process.
    secret_key: str = field(default="", repr=False)
    #: the address people reach the public pages at (links in messages point there).
    public_url: str = "http://127.0.0.1:8000"
    #: ask DNS at intake whether an email address's domain accepts mail (MX / null MX)
    email_dns_check: bool = False
    #: OpenTelemetry: a span per delivery (pip install 'pushguard[otel]'; the exporter is
    #: configured by the standard OTEL_* variables, OTLP over HTTP by default)
    otel_traces: bool = False
    #: ``host[:port]`` of the DNS server for that check; empty: the system's resolver
    dns_server: str = ""
    default_ttl: int = 86400
    max_ttl: int = 30 * 86400
    #: ``relaxed``: a worker's bookkeeping commits survive a crash of the process but not a
    #: power loss, which at worst re-delivers a message; ``full``: they survive both.
    worker_commits: str = "relaxed"
    worker_concurrency: int = 200
    worker_batch: int = 200
    lease_seconds: float = 60.0
    poll_interval: float = 0.2

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``); ``overrides`` win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _coerce(f.name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        if settings.worker_commits not in ("relaxed", "full"):
            raise ConfigError("expected 'relaxed' or 'full'", location=PREFIX + "WORKER_COMMITS")
        return settings

    @property
    def config_path(self) -> Path | None:
        if self.config:
            return Path(self.config)
        default = Path("pushguard.toml")
        return default if default.exists() else None


def _coerce(name: str, type_: Any, raw: str) -> Any:
    kind = type_ if isinstance(type_, str) else getattr(type_, "__name__", "str")
    if kind == "bool":
        if raw.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if raw.strip().lower() in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"expected true or false, got {raw!r}",
                          location=PREFIX + name.upper())
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as exc:
        raise ConfigError(
            f"expected a {kind}, got {raw!r}", location=PREFIX + name.upper()
        ) from exc
    return raw


def secret_from_env(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of the environment variable a config file refers to with ``env:NAME``."""
    env = os.environ if environ is None else environ
    return env.get(name)
