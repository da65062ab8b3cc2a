"""``pushguard.toml``: providers per channel in failover order, retry, breaker and worker limits.

Example::

    [channels.sms]
    providers = ["gateway-a", "gateway-b"]     # failover order

    [providers.gateway-a]
    type = "http"
    url = "https://sms.example.com/send"
    headers = { Authorization = "env:GATEWAY_A_TOKEN" }   # credentials by env reference
    timeout = 10
    rate = 50            # messages per second
    concurrency = 100

    [retry]
    base = 1.0           # seconds; full-jitter exponential back-off
    cap = 3600
    retry_after_cap = 3600

With no file, the ``webhook`` channel is served by one ``webhook`` provider whose secret comes
from ``PUSHGUARD_WEBHOOK_SECRET``. :func:`check` reports every problem with its location
instead of stopping at the first.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pushguard.audience.rules import AudiencePolicy, Cap, QuietHours, check_timezone
from pushguard.exceptions import ConfigError, InputError
from pushguard.settings import Settings, secret_from_env


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    type: str
    options: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 15.0
    rate: float | None = None
    concurrency: int = 100


@dataclass(frozen=True)
class RetryConfig:
    base: float = 1.0
    cap: float = 3600.0
    retry_after_cap: float = 3600.0


@dataclass(frozen=True)
class BreakerConfig:
    window: int = 20
    min_calls: int = 5
    failure_ratio: float = 0.5
    consecutive: int = 5
    open_seconds: float = 5.0
    max_open_seconds: float = 120.0


@dataclass(frozen=True)
class Config:
    channels: Mapping[str, tuple[str, ...]]
    providers: Mapping[str, ProviderConfig]
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    audience: AudiencePolicy = AudiencePolicy()
    source: str = "<defaults>"

    def providers_for(self, channel: str) -> list[ProviderConfig]:
        return [self.providers[name] for name in self.channels.get(channel, ())]


def default_config(settings: Settings) -> Config:
    return Config(
        channels={"webhook": ("webhook",)},
        providers={
            "webhook": ProviderConfig(
                name="webhook", type="webhook", options={"secret": "env:PUSHGUARD_WEBHOOK_SECRET"}
            )
        },
    )


def load(settings: Settings) -> Config:
    """The configuration in force: the file named by settings, or the defaults."""
    config, problems = _load(settings)
    if problems:
        raise problems[0]
    return config


def check(settings: Settings) -> tuple[Config | None, list[ConfigError]]:
    """Every problem of the configuration, each with its location."""
    config, problems = _load(settings)
    if config is not None:
        problems.extend(_check_references(config, settings))
    return (config if not problems else None), problems


def resolve(value: Any, *, location: str) -> Any:
    """Replace an ``env:NAME`` reference with the variable's value."""
    if isinstance(value, str) and value.startswith("env:"):
        name = value[4:]
        found = secret_from_env(name)
        if found is None:
            raise ConfigError(f"environment variable {name} is not set", location=location)
        return found
    if isinstance(value, Mapping):
        return {k: resolve(v, location=f"{location}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, location=f"{location}[{i}]") for i, v in enumerate(value)]
    return value


def _load(settings: Settings) -> tuple[Config, list[ConfigError]]:
    path = settings.config_path
    if path is None:
        return default_config(settings), []
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        return default_config(settings), [ConfigError("file not found", location=str(path))]
    except tomllib.TOMLDecodeError as exc:
        return default_config(settings), [ConfigError(f"not valid TOML: {exc}", location=str(path))]
    return _parse(data, str(path))


_PROVIDER_KEYS = {"type", "timeout", "rate", "concurrency"}


def _parse(data: Mapping[str, Any], source: str) -> tuple[Config, list[ConfigError]]:
    problems: list[ConfigError] = []
    known = {"channels", "providers", "retry", "breaker", "audience"}
    for key in data:
        if key not in known:
            problems.append(ConfigError(f"unknown section [{key}]", location=f"{source}:{key}"))

    providers: dict[str, ProviderConfig] = {}
    for name, raw in dict(data.get("providers", {})).items():
        loc = f"{source}:providers.{name}"
        if not isinstance(raw, Mapping):
            problems.append(ConfigError("must be a table", location=loc))
            continue
        ptype = raw.get("type")
        if not isinstance(ptype, str):
            problems.append(ConfigError("'type' is required (e.g. \"webhook\")", location=loc))
            continue
        try:
            providers[name] = ProviderConfig(
                name=name,
                type=ptype,
                options={k: v for k, v in raw.items() if k not in _PROVIDER_KEYS},
                timeout=_num(raw, "timeout", 15.0, loc, minimum=0.1),
                rate=_number(raw, "rate", None, loc, minimum=0.001),
                concurrency=int(_num(raw, "concurrency", 100, loc, minimum=1)),
            )
        except ConfigError as exc:
            problems.append(exc)

    channels: dict[str, tuple[str, ...]] = {}
    for channel, raw in dict(data.get("channels", {})).items():
        loc = f"{source}:channels.{channel}"
        names = raw.get("providers") if isinstance(raw, Mapping) else None
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            problems.append(
                ConfigError("'providers' must be a non-empty list of provider names", location=loc)
            )
            continue
        channels[channel] = tuple(names)
    if not channels and not problems:
        channels = {"webhook": ("webhook",)}
        providers.setdefault(
            "webhook",
            ProviderConfig("webhook", "webhook", {"secret": "env:PUSHGUARD_WEBHOOK_SECRET"}),
        )

    retry = RetryConfig()
    if "retry" in data:
        loc = f"{source}:retry"
        try:
            r = data["retry"]
            retry = RetryConfig(
                base=_num(r, "base", 1.0, loc, minimum=0.0),
                cap=_num(r, "cap", 3600.0, loc, minimum=0.0),
                retry_after_cap=_num(r, "retry_after_cap", 3600.0, loc, minimum=0.0),
            )
        except ConfigError as exc:
            problems.append(exc)
    breaker = BreakerConfig()
    if "breaker" in data:
        loc = f"{source}:breaker"
        try:
            b = data["breaker"]
            breaker = BreakerConfig(
                window=int(_num(b, "window", 20, loc, minimum=1)),
                min_calls=int(_num(b, "min_calls", 5, loc, minimum=1)),
                failure_ratio=_num(b, "failure_ratio", 0.5, loc, minimum=0.0),
                consecutive=int(_num(b, "consecutive", 5, loc, minimum=1)),
                open_seconds=_num(b, "open_seconds", 5.0, loc, minimum=0.0),
                max_open_seconds=_num(b, "max_open_seconds", 120.0, loc, minimum=0.0),
            )
        except ConfigError as exc:
            problems.append(exc)
    audience = AudiencePolicy()
    if "audience" in data:
        audience = _audience(data["audience"], f"{source}:audience", problems)
    return Config(channels, providers, retry, breaker, audience, source), problems


_AUDIENCE_KEYS = {"quiet_hours", "default_timezone", "marketing_cap", "confirm_ttl",
                  "policy_version", "organisation"}


def _audience(raw: Any, loc: str, problems: list[ConfigError]) -> AudiencePolicy:
    if not isinstance(raw, Mapping):
        problems.append(ConfigError("must be a table", location=loc))
        return AudiencePolicy()
    for key in raw:
        if key not in _AUDIENCE_KEYS:
            problems.append(ConfigError(f"unknown key {key!r}; known: "
                                        f"{', '.join(sorted(_AUDIENCE_KEYS))}",
                                        location=f"{loc}.{key}"))
    values: dict[str, Any] = {}
    for key, parse in (("quiet_hours", QuietHours.parse), ("marketing_cap", Cap.parse),
                       ("default_timezone", check_timezone)):
        if key in raw:
            try:
                if not isinstance(raw[key], str):
                    raise InputError(key, "must be a string")
                values[key] = parse(raw[key], field=key)
            except InputError as exc:
                problems.append(ConfigError(exc.problem, location=f"{loc}.{key}"))
    try:
        values["confirm_ttl"] = int(_num(raw, "confirm_ttl", 2 * 86400, loc, minimum=60))
    except ConfigError as exc:
        problems.append(exc)
    for key in ("policy_version", "organisation"):
        if key in raw:
            if not isinstance(raw[key], str) or not raw[key].strip() \
                    or any(c in raw[key] for c in "\r\n\x00"):
                problems.append(ConfigError("must be a one-line string",
                                            location=f"{loc}.{key}"))
            else:
                values[key] = raw[key].strip()
    return AudiencePolicy(**values)


def _num(table: Any, key: str, default: float, loc: str, *, minimum: float) -> float:
    """Like :func:`_number` for settings that always have a value."""
    value = _number(table, key, default, loc, minimum=minimum)
    return default if value is None else value


def _number(
    table: Any, key: str, default: float | None, loc: str, *, minimum: float
) -> float | None:
    if not isinstance(table, Mapping) or key not in table:
        return default
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"'{key}' must be a number, got {value!r}", location=f"{loc}.{key}")
    if value < minimum:
        raise ConfigError(f"'{key}' must be at least {minimum}", location=f"{loc}.{key}")
    return float(value)


def _check_references(config: Config, settings: Settings) -> list[ConfigError]:
    from pushguard.addresses import CHANNELS
    from pushguard.providers.registry import known_types

    problems: list[ConfigError] = []
    types = known_types()
    for channel, names in config.channels.items():
        loc = f"{config.source}:channels.{channel}"
        if channel not in CHANNELS:
            problems.append(ConfigError(
                f"unknown channel {channel!r}; one of: {', '.join(sorted(CHANNELS))}",
                location=loc))
        for name in names:
            p = config.providers.get(name)
            if p is None:
                problems.append(
                    ConfigError(f"provider {name!r} is not defined in [providers]", location=loc)
                )
            elif p.type in types and channel not in types[p.type].meta.channels:
                problems.append(ConfigError(
                    f"provider {name!r} (type {p.type}) cannot send on {channel!r}; it serves "
                    f"{', '.join(sorted(types[p.type].meta.channels))}", location=loc))
            elif p.timeout * 2 > settings.lease_seconds:
                problems.append(ConfigError(
                    f"provider {name!r} timeout {p.timeout:g} s is more than half the lease "
                    f"(PUSHGUARD_LEASE_SECONDS={settings.lease_seconds:g}); a slow call could "
                    "outlive its lease and be sent twice", location=loc))
    for name, p in config.providers.items():
        loc = f"{config.source}:providers.{name}"
        if p.type not in types:
            problems.append(
                ConfigError(
                    f"unknown provider type {p.type!r}; known: {', '.join(sorted(types))}",
                    location=f"{loc}.type",
                )
            )
            continue
        try:
            resolve(dict(p.options), location=loc)
        except ConfigError as exc:
            problems.append(exc)
        problems.extend(types[p.type].check_options(p, location=loc))
    return problems
