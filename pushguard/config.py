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
    cost = 0.0075        # per message, for campaign dry-run estimates (optional)

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
    #: what one message costs through this provider (any currency), for dry-run estimates
    cost: float | None = None


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
class AlertRule:
    """One alert rule: thresholds (a rate as a fraction, a count, or seconds), the sliding
    window in seconds, and the smallest sample worth judging (pushguard/diagnosis/rules.py)."""

    name: str
    warn: float
    critical: float
    window: float = 300.0
    min_sample: int = 20
    enabled: bool = True
    #: also fire when the rate is this many times its own baseline (0: off)
    baseline_factor: float = 0.0
    baseline_window: float = 86400.0
    #: automatic actions at action_severity: pause_campaign, failover (off by default)
    actions: tuple[str, ...] = ()
    #: how long a failover action holds the provider
    hold_for: float = 600.0
    #: seconds between two evaluations of this rule in one worker (costly windows run less)
    every: float = 0.0


#: the rules and their defaults; ``[alerts.<rule>]`` overrides any field
ALERT_RULES: dict[str, AlertRule] = {r.name: r for r in (
    AlertRule("failure_rate", 0.10, 0.25, baseline_factor=3.0),
    AlertRule("circuit_open", 1, 5, min_sample=1),
    AlertRule("complaint_rate", 0.001, 0.003, window=86400, min_sample=500, every=300),
    AlertRule("bounce_rate", 0.02, 0.05, window=86400, min_sample=200, every=300),
    AlertRule("queue_depth", 10_000, 100_000, min_sample=0),
    AlertRule("queue_age", 60, 600, min_sample=0),
    AlertRule("unknown_cause", 1, 20, window=900, min_sample=1),
    AlertRule("credentials", 1, 3, min_sample=1),
)}
ALERT_ACTIONS = ("pause_campaign", "failover")
SEVERITIES = ("warn", "critical")


@dataclass(frozen=True)
class NotifyTarget:
    channel: str
    to: str


@dataclass(frozen=True)
class AlertsConfig:
    enabled: bool = True
    #: seconds between evaluations in each worker
    every: float = 15.0
    #: the condition must stay clear this long before an alert resolves (hysteresis)
    resolve_after: float = 120.0
    #: ...and a rate must fall below warn x clear_ratio to count as clear
    clear_ratio: float = 0.8
    incident_severity: str = "warn"
    action_severity: str = "critical"
    notify_resolved: bool = True
    notify: tuple[NotifyTarget, ...] = ()
    rules: Mapping[str, AlertRule] = field(default_factory=lambda: dict(ALERT_RULES))


@dataclass(frozen=True)
class Config:
    channels: Mapping[str, tuple[str, ...]]
    providers: Mapping[str, ProviderConfig]
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    audience: AudiencePolicy = AudiencePolicy()
    source: str = "<defaults>"
    alerts: AlertsConfig = field(default_factory=AlertsConfig)

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


_PROVIDER_KEYS = {"type", "timeout", "rate", "concurrency", "cost"}


def _parse(data: Mapping[str, Any], source: str) -> tuple[Config, list[ConfigError]]:
    problems: list[ConfigError] = []
    known = {"channels", "providers", "retry", "breaker", "audience", "alerts"}
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
                cost=_number(raw, "cost", None, loc, minimum=0.0),
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
    alerts = AlertsConfig()
    if "alerts" in data:
        alerts = _alerts(data["alerts"], f"{source}:alerts", channels, problems)
    return Config(channels, providers, retry, breaker, audience, source, alerts), problems


_ALERTS_KEYS = {"enabled", "every", "resolve_after", "clear_ratio", "incident_severity",
                "action_severity", "notify_resolved", "notify"}
_RULE_KEYS = {"enabled", "warn", "critical", "window", "min_sample", "baseline_factor",
              "baseline_window", "actions", "hold_for", "every"}


def _alerts(raw: Any, loc: str, channels: Mapping[str, tuple[str, ...]],
            problems: list[ConfigError]) -> AlertsConfig:
    if not isinstance(raw, Mapping):
        problems.append(ConfigError("must be a table", location=loc))
        return AlertsConfig()
    values: dict[str, Any] = {}
    rules = dict(ALERT_RULES)
    for key, value in raw.items():
        at = f"{loc}.{key}"
        if key in ALERT_RULES:
            rules[key] = _alert_rule(ALERT_RULES[key], value, at, problems)
        elif key not in _ALERTS_KEYS:
            problems.append(ConfigError(
                f"unknown key {key!r}; known: {', '.join(sorted(_ALERTS_KEYS))} or a rule: "
                f"{', '.join(ALERT_RULES)}", location=at))
        elif key in ("enabled", "notify_resolved"):
            if not isinstance(value, bool):
                problems.append(ConfigError("must be true or false", location=at))
            values[key] = bool(value)
        elif key in ("incident_severity", "action_severity"):
            if value not in SEVERITIES:
                problems.append(ConfigError(f"must be one of: {', '.join(SEVERITIES)}",
                                            location=at))
            else:
                values[key] = value
        elif key == "notify":
            values[key] = tuple(_notify_targets(value, at, channels, problems))
    try:
        values["every"] = _num(raw, "every", 15.0, loc, minimum=0.1)
        values["resolve_after"] = _num(raw, "resolve_after", 120.0, loc, minimum=0.0)
        values["clear_ratio"] = _num(raw, "clear_ratio", 0.8, loc, minimum=0.0)
    except ConfigError as exc:
        problems.append(exc)
    return AlertsConfig(rules=rules, **values)


def _alert_rule(rule: AlertRule, raw: Any, loc: str, problems: list[ConfigError]) -> AlertRule:
    if not isinstance(raw, Mapping):
        problems.append(ConfigError("must be a table", location=loc))
        return rule
    for key in raw:
        if key not in _RULE_KEYS:
            problems.append(ConfigError(f"unknown key {key!r}; known: "
                                        f"{', '.join(sorted(_RULE_KEYS))}",
                                        location=f"{loc}.{key}"))
    try:
        values: dict[str, Any] = {
            k: _num(raw, k, getattr(rule, k), loc, minimum=0.0)
            for k in ("warn", "critical", "window", "baseline_factor", "baseline_window",
                      "hold_for", "every")}
        values["min_sample"] = int(_num(raw, "min_sample", rule.min_sample, loc, minimum=0))
    except ConfigError as exc:
        problems.append(exc)
        return rule
    if values["critical"] < values["warn"]:
        problems.append(ConfigError("'critical' must be at least 'warn'",
                                    location=f"{loc}.critical"))
    if values["window"] < 1:
        problems.append(ConfigError("'window' must be at least 1 second",
                                    location=f"{loc}.window"))
    enabled = raw.get("enabled", rule.enabled)
    if not isinstance(enabled, bool):
        problems.append(ConfigError("must be true or false", location=f"{loc}.enabled"))
    actions = raw.get("actions", list(rule.actions))
    if not isinstance(actions, list) or not all(a in ALERT_ACTIONS for a in actions):
        problems.append(ConfigError(f"must be a list of: {', '.join(ALERT_ACTIONS)}",
                                    location=f"{loc}.actions"))
        actions = []
    return AlertRule(rule.name, enabled=bool(enabled), actions=tuple(actions), **values)


def _notify_targets(raw: Any, loc: str, channels: Mapping[str, tuple[str, ...]],
                    problems: list[ConfigError]) -> list[NotifyTarget]:
    if not isinstance(raw, list):
        problems.append(ConfigError("must be a list of {channel, to} tables", location=loc))
        return []
    out = []
    for i, item in enumerate(raw):
        at = f"{loc}[{i}]"
        if not isinstance(item, Mapping) or set(item) != {"channel", "to"} \
                or not all(isinstance(v, str) and v.strip() for v in item.values()):
            problems.append(ConfigError("must be {channel = \"...\", to = \"...\"}",
                                        location=at))
        elif item["channel"] not in channels:
            problems.append(ConfigError(
                f"channel {item['channel']!r} has no providers; configured: "
                f"{', '.join(sorted(channels))}", location=f"{at}.channel"))
        else:
            out.append(NotifyTarget(item["channel"], item["to"].strip()))
    return out


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
