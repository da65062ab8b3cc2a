"""Alert rules: from the store's figures (:mod:`.measures`) to findings, one per rule and scope.

A finding grades what it measured: ``warn`` or ``critical`` when the rule fires, ``hold`` when
the value sits between the clear level and the warn threshold (an open alert stays open, a new
one is not raised: that gap is the hysteresis), and nothing at all when it is clear or the
sample is too small to judge. The book (:mod:`.alerts`) turns findings into alerts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pushguard.config import AlertRule, Config
from pushguard.diagnosis import measures as m
from pushguard.store.sql import SQLStore

#: a baseline is worth comparing with only when its sample is this many times min_sample
BASELINE_SAMPLE = 5
#: baselines cover a day: computing them once in a while per process is enough
BASELINE_EVERY = 600.0


@dataclass(frozen=True)
class Finding:
    rule: str
    scope: str
    value: float
    sample: int
    threshold: float
    #: warn | critical (fires), hold (between clear and warn)
    grade: str
    summary: str
    baseline: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def grade(rule: AlertRule, value: float, sample: int, clear_ratio: float,
          baseline: float | None = None) -> str | None:
    """critical, warn, hold or None (clear, or too little evidence)."""
    if sample < rule.min_sample:
        return None
    if value >= rule.critical:
        return "critical"
    if value >= rule.warn:
        return "warn"
    if rule.baseline_factor and baseline is not None and baseline > 0 \
            and value >= baseline * rule.baseline_factor and value >= rule.warn / 2:
        return "warn"
    return "hold" if value >= rule.warn * clear_ratio and value > 0 else None


def _pct(x: float) -> str:
    return f"{x:.1%}" if x < 0.01 else f"{x:.0%}"


class Rules:
    """Evaluates the configured rules against one store; remembers per rule when it last ran
    (costly windows, like a day of complaints, run less often than every tick)."""

    def __init__(self, store: SQLStore, config: Config) -> None:
        self.store = store
        self.config = config
        self.alerts = config.alerts
        self._last: dict[str, float] = {}
        self._baseline: tuple[float, dict[str, m.Tally], dict[str, m.Tally]] | None = None

    def due(self, now: float, force: bool) -> list[AlertRule]:
        rules = [r for r in self.alerts.rules.values() if r.enabled]
        return [r for r in rules if force or now - self._last.get(r.name, 0.0) >= r.every]

    def evaluate(self, now: float | None = None, *, force: bool = False
                 ) -> tuple[set[str], list[Finding]]:
        """(the rules evaluated now, their findings)."""
        now = time.time() if now is None else now
        found: list[Finding] = []
        rules = self.due(now, force)
        for rule in rules:
            self._last[rule.name] = now
            found.extend(getattr(self, f"_{rule.name}")(rule, now))
        return {r.name for r in rules}, [f for f in found if f.grade]

    def _finding(self, rule: AlertRule, scope: str, value: float, sample: int, summary: str,
                 baseline: float | None = None, **detail: Any) -> list[Finding]:
        g = grade(rule, value, sample, self.alerts.clear_ratio, baseline)
        if g is None:
            return []
        threshold = rule.critical if g == "critical" else rule.warn
        return [Finding(rule.name, scope, value, sample, threshold, g, summary, baseline,
                        {"window": rule.window, **detail})]

    def _rate(self, rule: AlertRule, scope: str, t: m.Tally, what: str,
              baseline: m.Tally | None) -> list[Finding]:
        base = baseline.rate if baseline is not None and \
            baseline.sample >= rule.min_sample * BASELINE_SAMPLE else None
        text = (f"{scope}: {_pct(t.rate)} of {t.sample} {what} failed in the last "
                f"{rule.window:g} s (warn {_pct(rule.warn)}, critical {_pct(rule.critical)}"
                + (f"; baseline {_pct(base)}" if base is not None else "") + ")")
        return self._finding(rule, scope, t.rate, t.sample, text, base,
                             top_causes=t.top(), codes=dict(t.codes))

    def _baselines(self, rule: AlertRule, now: float
                   ) -> tuple[dict[str, m.Tally], dict[str, m.Tally]]:
        if not rule.baseline_factor:
            return {}, {}
        if self._baseline is None or now - self._baseline[0] >= BASELINE_EVERY:
            since, until = now - rule.baseline_window, now - rule.window
            providers = m.provider_attempts(self.store, since, until)
            channels, campaigns = m.finished_messages(self.store, since, until)
            self._baseline = (now, providers, {**{f"channel:{k}": v for k, v in
                                                   channels.items()},
                                                **{f"campaign:{k}": v for k, v in
                                                   campaigns.items()}})
        return self._baseline[1], self._baseline[2]

    def _failure_rate(self, rule: AlertRule, now: float) -> list[Finding]:
        since = now - rule.window
        base_p, base_m = self._baselines(rule, now)
        out = []
        for name, t in m.provider_attempts(self.store, since, now).items():
            out += self._rate(rule, f"provider:{name}", t, "attempts", base_p.get(name))
        channels, campaigns = m.finished_messages(self.store, since, now)
        for kind, found in (("channel", channels), ("campaign", campaigns)):
            for name, t in found.items():
                scope = f"{kind}:{name}"
                out += self._rate(rule, scope, t, "messages", base_m.get(scope))
        return out

    def _cause_count(self, rule: AlertRule, now: float, causes: tuple[str, ...],
                     what: str) -> list[Finding]:
        out = []
        for name, t in m.provider_attempts(self.store, now - rule.window, now).items():
            n = sum(k for c, k in t.causes.items() if c in causes)
            codes = {c: k for c, k in t.codes.items() if c.split(" ", 1)[0] in causes}
            if n:
                out += self._finding(rule, f"provider:{name}", n, n,
                                     f"provider:{name}: {n} attempts failed with {what} in "
                                     f"the last {rule.window:g} s", codes=codes)
        return out

    def _unknown_cause(self, rule: AlertRule, now: float) -> list[Finding]:
        return self._cause_count(rule, now, ("UNKNOWN",), "an unrecognised answer (UNKNOWN)")

    def _credentials(self, rule: AlertRule, now: float) -> list[Finding]:
        return self._cause_count(rule, now, ("AUTH_CREDENTIALS",),
                                 "rejected credentials (AUTH_CREDENTIALS)")

    def _circuit_open(self, rule: AlertRule, now: float) -> list[Finding]:
        from urllib.parse import urlsplit

        # the ops webhook's own breaker must not raise an alert that is sent to it
        mine = [urlsplit(t.to).netloc for t in self.alerts.notify if t.channel == "webhook"]
        out = []
        for name, c in m.circuits(self.store, now - rule.window, self.config.providers,
                                  ignore=[n for n in mine if n]).items():
            if not c.open_keys:
                continue  # every process closed it again: clear
            value = float(max(c.opened, 1))
            if name in c.open_keys:  # the provider's own breaker: the provider is down
                out += self._finding(rule, f"provider:{name}", value, int(value),
                                     f"provider:{name}: circuit open; opened {c.opened} times "
                                     f"in the last {rule.window:g} s",
                                     breakers=sorted(c.open_keys))
            dests = sorted(k for k in c.open_keys if k != name)
            if dests:
                # Breakers per destination (a webhook receiver, a chat webhook): one customer's
                # dead endpoint is not the provider's outage, so it is its own scope, which a
                # failover action (provider scopes only) never acts on.
                shown = ", ".join(d.split(":", 1)[1] for d in dests[:5]) + (
                    f" and {len(dests) - 5} more" if len(dests) > 5 else "")
                out += self._finding(rule, f"destinations:{name}", value, int(value),
                                     f"provider:{name}: circuit open for {len(dests)} "
                                     f"destination(s) ({shown}); opened {c.opened} times in "
                                     f"the last {rule.window:g} s", breakers=dests)
        return out

    def _reported(self, rule: AlertRule, now: float, reasons: tuple[str, ...],
                  states: tuple[str, ...], what: str, email_only: bool) -> list[Finding]:
        since = now - rule.window
        sent = m.sent_messages(self.store, since, states)
        bad = m.reported(self.store, since, reasons)
        totals: dict[str, list[int]] = {}
        for source, weight in ((sent, 0), (bad, 1)):
            for (channel, campaign), n in source.items():
                if email_only and channel != "email":
                    continue
                keys = [f"channel:{channel}"] + ([f"campaign:{campaign}"] if campaign else [])
                for key in keys:
                    totals.setdefault(key, [0, 0])[weight] += n
        out = []
        for scope, (n, k) in totals.items():
            rate = k / n if n else 0.0
            out += self._finding(rule, scope, rate, n,
                                 f"{scope}: {k} {what} for {n} messages in the last "
                                 f"{rule.window:g} s ({_pct(rate)}; warn {_pct(rule.warn)}, "
                                 f"critical {_pct(rule.critical)})", count=k)
        return out

    def _complaint_rate(self, rule: AlertRule, now: float) -> list[Finding]:
        return self._reported(rule, now, m.COMPLAINT_REASONS, ("delivered",), "complaints",
                              False)

    def _bounce_rate(self, rule: AlertRule, now: float) -> list[Finding]:
        return self._reported(rule, now, m.BOUNCE_REASONS, ("delivered", "failed"),
                              "hard bounces", True)

    def _queue_depth(self, rule: AlertRule, now: float) -> list[Finding]:
        stats = self.store.stats()
        n = sum(stats.by_state.values())
        return self._finding(rule, "global", n, n, f"{n} messages waiting or in flight "
                             f"(warn {rule.warn:g}, critical {rule.critical:g})",
                             by_state=stats.by_state)

    def _queue_age(self, rule: AlertRule, now: float) -> list[Finding]:
        age = self.store.stats().oldest_due_age
        return self._finding(rule, "global", age, 1, f"the most overdue message has waited "
                             f"{age:.0f} s (warn {rule.warn:g} s, critical {rule.critical:g} s)")
