"""The unified failure taxonomy, as data (FAILURES.md §1.8).

Every failure pushguard records names exactly one :class:`Cause`. The cause alone decides what
the pipeline does next (retry, hold, fail, suppress), whether the provider's circuit breaker
counts it, and what a person is told to do about it. Providers translate their own codes into
causes at their boundary; nothing downstream looks at raw provider codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    """What the pipeline does with a message after a failure of this cause."""

    RETRY = "retry"  # back off and try again, bounded by attempts and TTL
    HOLD = "hold"  # keep the message queued until a human fixes something or the TTL ends
    FAIL = "fail"  # permanent for this message: terminal `failed`
    SUPPRESS = "suppress"  # permanent, and the address is suppressed for the channel
    SKIP = "skip"  # not an error: stopped by policy (`suppressed` or `deferred`)


@dataclass(frozen=True, slots=True)
class Cause:
    """One row of the taxonomy."""

    name: str
    transient: bool
    action: Action
    explanation: str
    fix: str
    #: network, outage and rate-limit failures open a provider's circuit; a burst of bad
    #: recipients must not.
    trips_breaker: bool = False
    #: the failure belongs to the provider, so another provider for the channel may succeed.
    provider_scoped: bool = False
    #: attempts allowed for this cause before the message is given up (`dead`).
    max_attempts: int = 10
    #: smallest back-off for this cause, in seconds.
    min_delay: float = 0.0

    def __str__(self) -> str:
        return self.name


NETWORK_TIMEOUT = Cause(
    "NETWORK_TIMEOUT",
    transient=True,
    action=Action.RETRY,
    explanation="Could not reach {provider} ({detail}).",
    fix="Retrying automatically; if this persists check network, DNS and the egress firewall "
    "towards {provider}.",
    trips_breaker=True,
    provider_scoped=True,
    max_attempts=12,
)
PROVIDER_OUTAGE = Cause(
    "PROVIDER_OUTAGE",
    transient=True,
    action=Action.RETRY,
    explanation="{provider} is having problems ({detail}).",
    fix="Messages stay queued and are retried or failed over; no action needed unless this "
    "lasts more than a few minutes, then check {provider}'s status page.",
    trips_breaker=True,
    provider_scoped=True,
    max_attempts=12,
)
RATE_LIMITED = Cause(
    "RATE_LIMITED",
    transient=True,
    action=Action.RETRY,
    explanation="{provider} is rate-limiting us ({detail}).",
    fix="Sending was slowed automatically. If this is frequent, lower the send rate for "
    "{provider} or ask it for a higher quota.",
    trips_breaker=True,
    provider_scoped=False,
    max_attempts=15,
    min_delay=1.0,
)
AUTH_CREDENTIALS = Cause(
    "AUTH_CREDENTIALS",
    transient=False,
    action=Action.HOLD,
    explanation="Credentials for {provider} were rejected ({detail}).",
    fix="Install valid credentials for {provider} (API key, token, certificate or signing "
    "secret). Messages are held, not failed, until they expire.",
    provider_scoped=True,
    max_attempts=1000,
    min_delay=30.0,
)
SENDER_CONFIG = Cause(
    "SENDER_CONFIG",
    transient=False,
    action=Action.HOLD,
    explanation="Sending setup problem at {provider} ({detail}).",
    fix="Fix the sending account or configuration for {provider} (sender id, region "
    "permission, DNS alignment). Messages are held until they expire.",
    provider_scoped=True,
    max_attempts=1000,
    min_delay=30.0,
)
INVALID_RECIPIENT = Cause(
    "INVALID_RECIPIENT",
    transient=False,
    action=Action.SUPPRESS,
    explanation="The recipient address is invalid or does not exist ({detail}).",
    fix="The address has been suppressed for this channel; ask the user for a new address.",
    max_attempts=1,
)
UNREGISTERED_TOKEN = Cause(
    "UNREGISTERED_TOKEN",
    transient=False,
    action=Action.SUPPRESS,
    explanation="The endpoint or device token is no longer valid ({detail}).",
    fix="The token, subscription or endpoint was deactivated; the user's other addresses "
    "still receive messages. Register a new one to resume.",
    max_attempts=1,
)
NO_CONSENT = Cause(
    "NO_CONSENT",
    transient=False,
    action=Action.SKIP,
    explanation="Not sent: the recipient has not consented, unsubscribed or complained "
    "({detail}).",
    fix="Nothing to retry. The recipient must opt in again before messages are sent.",
    max_attempts=1,
)
CONTENT_REJECTED = Cause(
    "CONTENT_REJECTED",
    transient=False,
    action=Action.FAIL,
    explanation="{provider} rejected the message content ({detail}).",
    fix="Shorten or change the content (size limits, filtered words or links, reserved keys); "
    "the recipient was not suppressed.",
    max_attempts=1,
)
RECIPIENT_TEMPORARY = Cause(
    "RECIPIENT_TEMPORARY",
    transient=True,
    action=Action.RETRY,
    explanation="The recipient is temporarily unreachable ({detail}).",
    fix="Retrying with long back-off; after repeated soft failures the address is suppressed.",
    max_attempts=5,
    min_delay=60.0,
)
TEMPLATE_ERROR = Cause(
    "TEMPLATE_ERROR",
    transient=False,
    action=Action.FAIL,
    explanation="The template failed to render ({detail}).",
    fix="Fix the template or supply the missing variable, then resend.",
    max_attempts=1,
)
VALIDATION_ERROR = Cause(
    "VALIDATION_ERROR",
    transient=False,
    action=Action.FAIL,
    explanation="The request was invalid ({detail}).",
    fix="Correct the field named in the error and send again.",
    max_attempts=1,
)
POLICY_SUPPRESSED = Cause(
    "POLICY_SUPPRESSED",
    transient=False,
    action=Action.SKIP,
    explanation="Skipped by policy ({detail}).",
    fix="No action needed; the policy (suppression list, frequency cap, quiet hours) worked "
    "as configured.",
    max_attempts=1,
)
INTERNAL_CRASH = Cause(
    "INTERNAL_CRASH",
    transient=True,
    action=Action.RETRY,
    explanation="pushguard failed while processing this message ({detail}).",
    fix="Retried automatically after the lease expired; if it repeats, the message is "
    "dead-lettered and the logs name the error.",
    max_attempts=5,
    min_delay=1.0,
)
EXPIRED = Cause(
    "EXPIRED",
    transient=False,
    action=Action.FAIL,
    explanation="Gave up when the message's time to live ran out ({detail}).",
    fix="Raise the message's ttl, or fix the last underlying cause named in the history.",
    max_attempts=1,
)
UNKNOWN = Cause(
    "UNKNOWN",
    transient=True,
    action=Action.RETRY,
    explanation="Unrecognised response from {provider} ({detail}).",
    fix="Retried a few times; the raw response is stored. Report it so the mapping is added.",
    max_attempts=3,
)

CAUSES: dict[str, Cause] = {
    c.name: c
    for c in (
        NETWORK_TIMEOUT,
        PROVIDER_OUTAGE,
        RATE_LIMITED,
        AUTH_CREDENTIALS,
        SENDER_CONFIG,
        INVALID_RECIPIENT,
        UNREGISTERED_TOKEN,
        NO_CONSENT,
        CONTENT_REJECTED,
        RECIPIENT_TEMPORARY,
        TEMPLATE_ERROR,
        VALIDATION_ERROR,
        POLICY_SUPPRESSED,
        INTERNAL_CRASH,
        EXPIRED,
        UNKNOWN,
    )
}


def get(name: str) -> Cause:
    """The cause called ``name``; an unknown name is :data:`UNKNOWN`, never an error."""
    return CAUSES.get(name, UNKNOWN)


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return f"{{{key}}}"


def describe(cause: Cause, *, provider: str = "the provider", detail: str = "") -> tuple[str, str]:
    """The explanation and fix of ``cause`` filled in for one failure."""
    values = _Blank(provider=provider or "the provider", detail=detail or "no detail")
    return cause.explanation.format_map(values), cause.fix.format_map(values)


def classify_http_status(status: int) -> Cause:
    """The default cause of a bare HTTP status, used when a provider says nothing better."""
    if status in (408, 504):
        return NETWORK_TIMEOUT
    if status == 429:
        return RATE_LIMITED
    if status in (401, 403):
        return AUTH_CREDENTIALS
    if status in (404, 410):
        return UNREGISTERED_TOKEN
    if status == 413:
        return CONTENT_REJECTED
    if status >= 500:
        return PROVIDER_OUTAGE
    if 300 <= status < 400:
        return SENDER_CONFIG
    if status >= 400:
        return CONTENT_REJECTED
    return UNKNOWN
