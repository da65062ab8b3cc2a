"""The retry policy: given a failure, decide what happens to the message next.

Exponential back-off with full jitter (``uniform(0, min(cap, base * 2**n))``), never sooner
than the cause's minimum or the provider's ``Retry-After`` (capped), bounded per cause, and
never past the message's TTL: a retry that would land after it becomes ``expired`` now, carrying
the last cause.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from pushguard.taxonomy import Action, Cause

#: longest wait between two checks of a held message (credentials or sender setup broken).
HOLD_RECHECK = 300.0


class Verdict(StrEnum):
    RETRY = "retry"
    FAIL = "fail"
    SUPPRESS = "suppress"
    SKIP = "skip"
    DEAD = "dead"
    EXPIRE = "expire"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    at: float | None = None
    delay: float = 0.0
    reason: str = ""


@dataclass
class RetryPolicy:
    base: float = 1.0
    cap: float = 3600.0
    retry_after_cap: float = 3600.0
    rng: random.Random | None = None

    def backoff(self, attempts: int) -> float:
        """Full-jitter delay before retry number ``attempts`` (1 = first retry)."""
        ceiling = min(self.cap, self.base * (2 ** max(0, attempts - 1)))
        return (self.rng or random).uniform(0, ceiling)

    def decide(
        self,
        cause: Cause,
        *,
        attempts: int,
        now: float,
        expires_at: float,
        retry_after: float | None = None,
        failover: bool = False,
        suppress: bool | None = None,
    ) -> Decision:
        """What to do after the ``attempts``-th failed attempt.

        ``failover`` says another provider of the channel can take the message now, so a
        provider-scoped failure is retried there at once instead of waiting out a back-off.
        """
        if cause.action is Action.SKIP:
            return Decision(Verdict.SKIP, reason=f"{cause.name}: not sent")
        if cause.action is Action.SUPPRESS:
            verdict = Verdict.FAIL if suppress is False else Verdict.SUPPRESS
            return Decision(verdict, reason=f"{cause.name}: permanent")
        if cause.action is Action.FAIL:
            return Decision(Verdict.FAIL, reason=f"{cause.name}: permanent")
        if cause.action is Action.RETRY and attempts >= cause.max_attempts:
            return Decision(
                Verdict.DEAD, reason=f"{cause.name}: gave up after {attempts} attempts"
            )
        if failover and cause.provider_scoped:
            delay = 0.0
            reason = f"{cause.name}: failing over to another provider"
        else:
            delay = max(self.backoff(attempts), cause.min_delay)
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.retry_after_cap))
            if cause.action is Action.HOLD:
                # Held messages keep checking whether the fix is in, at most every 5 minutes.
                delay = min(delay, max(cause.min_delay, HOLD_RECHECK))
                reason = f"{cause.name}: held until fixed, next try in {delay:.1f} s"
            else:
                reason = f"{cause.name}: retry {attempts + 1} in {delay:.1f} s"
        at = now + delay
        if at >= expires_at:
            return Decision(Verdict.EXPIRE, reason=f"TTL reached; last cause {cause.name}")
        return Decision(Verdict.RETRY, at=at, delay=delay, reason=reason)
