"""The figures alert rules judge, read from the store in a few grouped queries.

Every query is bounded by time so it stays cheap however large the history is: messages by
``created_at`` (indexed) within a look-back, then filtered on ``updated_at`` or the attempt's
time; suppressions by ``created_at``; breaker transitions by ``at``. Messages enqueued by the
alerts themselves (idempotency scope :data:`NOTIFY_SCOPE`) never count: an alert about failing
webhooks must not feed on its own failing notification.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, case, func, or_, select

from pushguard.store.schema import attempts, circuit_events, messages, suppressions
from pushguard.store.sql import SQLStore

#: the idempotency scope of alert notifications
NOTIFY_SCOPE = "alerts"
#: attempts and outcomes of messages created this long before a window still count in it
LOOKBACK = 3600.0
FAILED_STATES = ("failed", "dead", "expired")
#: attempt causes that say something about the provider, not about one recipient
PROVIDER_FAULTS = ("NETWORK_TIMEOUT", "PROVIDER_OUTAGE", "RATE_LIMITED", "AUTH_CREDENTIALS",
                   "SENDER_CONFIG", "UNKNOWN", "INTERNAL_CRASH")
COMPLAINT_REASONS = ("NO_CONSENT",)
BOUNCE_REASONS = ("INVALID_RECIPIENT",)
_IN = 500


def not_alerts() -> Any:
    """Messages that are not alert notifications."""
    return or_(messages.c.idem_scope.is_(None), messages.c.idem_scope != NOTIFY_SCOPE)


@dataclass
class Tally:
    """Failures out of a sample, with the causes (and provider codes) behind them."""

    sample: int = 0
    failed: int = 0
    causes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    codes: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def rate(self) -> float:
        return self.failed / self.sample if self.sample else 0.0

    def top(self, n: int = 5) -> list[dict[str, Any]]:
        return [{"cause": c, "count": k}
                for c, k in sorted(self.causes.items(), key=lambda x: -x[1])[:n]]


def provider_attempts(store: SQLStore, since: float, until: float) -> dict[str, Tally]:
    """Per provider: its attempts in [since, until), failed = a provider-side cause."""
    fault = case((attempts.c.cause.in_(PROVIDER_FAULTS), 1), else_=0)
    q = (select(attempts.c.provider, attempts.c.cause, attempts.c.provider_code,
                func.count(), func.sum(fault))
         .select_from(messages.join(attempts, attempts.c.message_id == messages.c.id))
         .where(messages.c.created_at >= since - LOOKBACK, attempts.c.at >= since,
                attempts.c.at < until, attempts.c.outcome != "lost", not_alerts())
         .group_by(attempts.c.provider, attempts.c.cause, attempts.c.provider_code))
    out: dict[str, Tally] = defaultdict(Tally)
    with store._read() as conn:
        for provider, cause, code, n, failed in conn.execute(q):
            t = out[provider]
            t.sample += n
            t.failed += int(failed or 0)
            if cause:
                t.causes[cause] += n
                if code:
                    t.codes[f"{cause} {code}"] += n
    return dict(out)


def finished_messages(store: SQLStore, since: float, until: float
                      ) -> tuple[dict[str, Tally], dict[str, Tally]]:
    """Per channel and per campaign: messages that ended in [since, until), failed or not
    (policy stops, ``suppressed``, are not failures and are left out)."""
    bad = case((messages.c.state.in_(FAILED_STATES), 1), else_=0)
    q = (select(messages.c.channel, messages.c.campaign_id, messages.c.last_cause,
                func.count(), func.sum(bad))
         .where(messages.c.created_at >= since - LOOKBACK, messages.c.updated_at >= since,
                messages.c.updated_at < until,
                messages.c.state.in_(("delivered", *FAILED_STATES)), not_alerts())
         .group_by(messages.c.channel, messages.c.campaign_id, messages.c.last_cause))
    channels: dict[str, Tally] = defaultdict(Tally)
    campaigns: dict[str, Tally] = defaultdict(Tally)
    with store._read() as conn:
        rows = conn.execute(q).all()
    for channel, campaign, cause, n, failed in rows:
        for t in (channels[channel], *([campaigns[campaign]] if campaign else [])):
            t.sample += n
            t.failed += int(failed or 0)
            if failed and cause:
                t.causes[cause] += int(failed)
    return dict(channels), dict(campaigns)


def sent_messages(store: SQLStore, since: float, states: tuple[str, ...]
                  ) -> dict[tuple[str, str | None], int]:
    """Messages created since ``since`` now in ``states``, per (channel, campaign)."""
    q = (select(messages.c.channel, messages.c.campaign_id, func.count())
         .where(messages.c.created_at >= since, messages.c.state.in_(states), not_alerts())
         .group_by(messages.c.channel, messages.c.campaign_id))
    with store._read() as conn:
        return {(ch, cp): n for ch, cp, n in conn.execute(q)}


def reported(store: SQLStore, since: float, reasons: tuple[str, ...]
             ) -> dict[tuple[str, str | None], int]:
    """Addresses suppressed since ``since`` for ``reasons`` by a message's outcome or receipt
    (complaints, hard bounces), per (channel, campaign of that message)."""
    q = (select(suppressions.c.channel, suppressions.c.source)
         .where(suppressions.c.created_at >= since, suppressions.c.reason.in_(reasons),
                or_(suppressions.c.source.like("receipt for %"),
                    suppressions.c.source.like("message %"))))
    with store._read() as conn:
        found = [(ch, src.rsplit(" ", 1)[-1]) for ch, src in conn.execute(q)]
        ids = sorted({mid for _, mid in found})
        campaign: dict[str, str | None] = {}
        for i in range(0, len(ids), _IN):
            for mid, cp in conn.execute(
                    select(messages.c.id, messages.c.campaign_id)
                    .where(messages.c.id.in_(ids[i:i + _IN]), not_alerts())):
                campaign[mid] = cp
    out: dict[tuple[str, str | None], int] = defaultdict(int)
    for ch, mid in found:
        if mid in campaign:  # not a notification's address, and the message exists
            out[(ch, campaign[mid])] += 1
    return dict(out)


@dataclass
class Circuit:
    """One provider's breakers as the worker processes last reported them."""

    opened: int = 0
    #: breaker keys some process still has open or half-open
    open_keys: set[str] = field(default_factory=set)


def circuits(store: SQLStore, since: float, providers: Iterable[str],
             ignore: Iterable[str] = ()) -> dict[str, Circuit]:
    """Per provider: how often its breakers opened since ``since`` and which are still open
    in some process (the last transition each process recorded for it)."""
    names = sorted(providers, key=len, reverse=True)
    skip = tuple(ignore)
    q = (select(circuit_events.c.owner, circuit_events.c.breaker, circuit_events.c.dst)
         .where(circuit_events.c.at >= since).order_by(circuit_events.c.id))
    last: dict[tuple[str, str], str] = {}
    out: dict[str, Circuit] = defaultdict(Circuit)
    with store._read() as conn:
        rows = conn.execute(q).all()
    for owner, key, dst in rows:
        provider = next((n for n in names if key == n or key.startswith(n + ":")), None)
        if provider is None or any(key.endswith(":" + s) for s in skip):
            continue
        last[(owner, key)] = dst
        if dst == "open":
            out[provider].opened += 1
    for (_, key), dst in last.items():
        provider = next(n for n in names if key == n or key.startswith(n + ":"))
        if dst != "closed":
            out[provider].open_keys.add(key)
    return dict(out)


def window_filter(since: float, until: float) -> Any:
    """Messages that ended in [since, until) (for the incident's blast radius)."""
    return and_(messages.c.created_at >= since - LOOKBACK, messages.c.updated_at >= since,
                messages.c.updated_at < until, messages.c.state.in_(FAILED_STATES),
                not_alerts())
