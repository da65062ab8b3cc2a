"""Outcome summaries: how a set of messages ended, and what to do about the failures."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from pushguard import taxonomy
from pushguard.audience.gate import RULE_FIX
from pushguard.store.base import OutcomeRow


@dataclass
class Summary:
    total: int = 0
    first_try: int = 0
    after_retry: int = 0
    failed_over: int = 0
    pending: int = 0
    #: of the pending, those the gate deferred (quiet hours)
    deferred: int = 0
    #: never sent: stopped by the pre-send gate (consent, suppression, caps)
    gated: int = 0
    #: terminal non-delivered messages by (state, cause); a cause the gate gave carries its
    #: rule: ``POLICY_SUPPRESSED/frequency_cap``
    failed: Counter[tuple[str, str]] = field(default_factory=Counter)
    by_provider: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, int]]:
        return [
            ("delivered on the first try", self.first_try),
            ("delivered after retries", self.after_retry),
            ("delivered after failing over to a backup provider", self.failed_over),
            ("not sent (stopped by the gate)", self.gated),
            ("not delivered (see causes)", sum(self.failed.values()) - self.gated),
            ("still pending", self.pending),
        ] + ([("  of which deferred by the gate (quiet hours)", self.deferred)]
             if self.deferred else [])

    def causes(self) -> list[tuple[str, str, int, str]]:
        """(state, cause, count, fix), largest first."""
        out = []
        for (state, cause), n in self.failed.most_common():
            name, _, rule = cause.partition("/")
            _, fix = taxonomy.describe(taxonomy.get(name), provider="the provider")
            fix = RULE_FIX.get(rule, fix)
            out.append((state, cause, n, fix))
        return out


def summarize(rows: list[OutcomeRow], primaries: Mapping[str, str] | None = None) -> Summary:
    """Classify messages; ``primaries`` names each channel's first provider, so a message
    delivered by any other provider counts as failed over (whether it first tried the primary
    or was routed past an open circuit)."""
    primaries = primaries or {}
    s = Summary(total=len(rows))
    for r in rows:
        if r.state == "delivered":
            s.by_provider[r.last_provider or "?"] += 1
            primary = primaries.get(r.channel, r.first_provider)
            if primary and r.last_provider != primary:
                s.failed_over += 1
                s.examples.setdefault("failed_over", r.id)
            elif r.attempts > 1:
                s.after_retry += 1
                s.examples.setdefault("after_retry", r.id)
            else:
                s.first_try += 1
        elif r.state in ("failed", "dead", "expired", "suppressed"):
            cause = r.cause or "UNKNOWN"
            if r.rule:
                cause = f"{cause}/{r.rule}"
                s.gated += 1
            s.failed[(r.state, cause)] += 1
            s.examples.setdefault(cause, r.id)
        else:
            s.pending += 1
            if r.state == "deferred":
                s.deferred += 1
    return s
