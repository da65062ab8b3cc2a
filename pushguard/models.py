"""Plain data passed between the edges, the pipeline and the store."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pushguard.states import State

if TYPE_CHECKING:
    from pushguard.audience.gate import Stop
    from pushguard.exceptions import IdempotencyConflict

PRIORITIES = {"high": 0, "normal": 1, "bulk": 2}
PRIORITY_NAMES = {v: k for k, v in PRIORITIES.items()}


def new_id(prefix: str = "msg") -> str:
    """A time-ordered id: 12 hex digits of milliseconds, then 16 random hex digits."""
    return f"{prefix}_{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


@dataclass(slots=True)
class NewMessage:
    """A validated message, ready to be committed by :meth:`Store.enqueue`."""

    channel: str
    to: str
    content: dict[str, Any]
    topic: str | None = None
    priority: int = 1
    send_at: float | None = None
    ttl: int = 86400
    idempotency_key: str | None = None
    request_hash: str | None = None
    #: legs to try, in order, when this message fails for good: {"channel", "to", "content"}
    fallback: list[dict[str, Any]] = field(default_factory=list)
    #: the message this one is a fallback leg of
    parent_id: str | None = None
    #: the contact it is for, when known
    contact_id: str | None = None
    #: the same message to the contact's other devices (fan-out), committed with this one
    fanout: list[NewMessage] = field(default_factory=list)
    #: once delivered, seconds a receipt has to confirm it before the fallback starts
    confirm_within: int | None = None
    #: the message this one is a device copy of (fan-out)
    fanout_of: str | None = None
    #: the campaign that sent it and the template it was rendered from
    campaign_id: str | None = None
    template: str | None = None
    #: a provider to try last (a retry after it failed), or ``+name``: one to try first
    avoid_provider: str | None = None
    id: str = field(default_factory=new_id)
    #: ``content`` as stored (compact JSON), when intake already encoded it to check its size
    content_json: str | None = field(default=None, repr=False, compare=False)


def next_leg(parent_id: str, legs: list[dict[str, Any]], *, topic: str | None, priority: int,
             ttl: int, contact_id: str | None) -> NewMessage:
    """The first of ``legs`` as a new message; the rest stay its own fallback chain."""
    leg, rest = legs[0], legs[1:]
    return NewMessage(
        channel=leg["channel"], to=leg["to"], content=dict(leg["content"]), topic=topic,
        priority=priority, ttl=max(60, ttl), fallback=rest, parent_id=parent_id,
        contact_id=contact_id, campaign_id=leg.get("campaign"), template=leg.get("template"),
    )


@dataclass(frozen=True, slots=True)
class Accepted:
    """The result of enqueueing one message: the stored id and state."""

    id: str
    state: State
    replayed: bool = False
    #: the results of the message's fan-out to the contact's other devices
    fanout: tuple[Accepted | IdempotencyConflict, ...] = ()


@dataclass(slots=True)
class Job:
    """A claimed message: the worker owns it until ``lease_until``."""

    id: str
    channel: str
    to: str
    content: dict[str, Any]
    topic: str | None
    priority: int
    attempts: int
    created_at: float
    expires_at: float
    avoid_provider: str | None = None
    last_cause: str | None = None
    fallback: list[dict[str, Any]] = field(default_factory=list)
    contact_id: str | None = None
    #: the message this one is a device copy of: caps count a push to all devices once
    fanout_of: str | None = None
    #: the campaign that sent it (logs and traces carry it)
    campaign_id: str | None = None
    #: the topic is a marketing topic (unsubscribe links, caps, quiet hours apply)
    marketing: bool = False
    #: why the pre-send gate stops this message now, if it does
    stop: Stop | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    cause: str
    transient: bool
    provider_code: str | None
    explanation: str
    fix: str
    provider: str | None = None
    #: the gate's rule that stopped the message (consent, quiet_hours, frequency_cap...)
    rule: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {
            "cause": self.cause,
            "transient": self.transient,
            "provider_code": self.provider_code,
            "explanation": self.explanation,
            "fix": self.fix,
            "provider": self.provider,
        }
        if self.rule is not None:
            out["rule"] = self.rule
        return out


@dataclass(frozen=True, slots=True)
class Attempt:
    """One call to one provider and what came of it."""

    number: int
    at: float
    provider: str
    outcome: str  # delivered | failed | retry | lost
    latency_ms: float | None = None
    status: int | None = None
    provider_code: str | None = None
    cause: str | None = None
    maybe_sent: bool = False
    detail: str = ""
    raw: str | None = None


@dataclass(slots=True)
class Outcome:
    """What the pipeline decided for one claimed message, written by :meth:`Store.record`."""

    id: str
    state: State
    reason: str
    attempt: Attempt | None = None
    next_at: float | None = None
    failure: Failure | None = None
    provider: str | None = None
    avoid_provider: str | None = None
    provider_message_id: str | None = None
    #: (channel, address, reason) to put on the suppression list.
    suppress: tuple[str, str, str] | None = None
    #: APNs's 410 timestamp (UNIX seconds): suppress only if the token was not registered
    #: again after it
    unregistered_at: float | None = None
    counts_attempt: bool = True
    #: the next leg of the fallback chain, created in the same transaction as this outcome.
    fallback_leg: NewMessage | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    at: float
    src: str | None
    dst: str
    reason: str
    cause: str | None = None


@dataclass(slots=True)
class MessageView:
    """Everything known about one message."""

    id: str
    channel: str
    to: str
    content: dict[str, Any]
    topic: str | None
    priority: int
    state: State
    created_at: float
    updated_at: float
    next_at: float
    expires_at: float
    attempts_count: int
    idempotency_key: str | None
    last_provider: str | None
    provider_message_id: str | None
    delivered_at: float | None
    failure: Failure | None
    parent_id: str | None = None
    contact_id: str | None = None
    confirm_within: int | None = None
    confirmed_at: float | None = None
    fallback: list[dict[str, Any]] = field(default_factory=list)
    #: the fallback leg created when this message failed, if any
    next_leg_id: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    history: list[Transition] = field(default_factory=list)
