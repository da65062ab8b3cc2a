"""The delivery pipeline: one claimed message in, one :class:`Outcome` out.

It routes the message to a provider, calls it, and turns the answer into the next state using
only the failure's cause (taxonomy), the retry policy and the router's view of provider health.
It writes nothing itself: the worker records outcomes in batches.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from pushguard import taxonomy, tracing
from pushguard.audience.gate import stop_failure
from pushguard.audience.links import Links, with_unsubscribe
from pushguard.circuit import Breaker
from pushguard.exceptions import DeliveryError
from pushguard.metrics import Metrics
from pushguard.models import Attempt, Failure, Job, Outcome, next_leg
from pushguard.providers.base import Delivery, Provider
from pushguard.ratelimit import TokenBucket
from pushguard.retry import RetryPolicy, Verdict
from pushguard.routing import PREFER, Router
from pushguard.states import State, can_move
from pushguard.taxonomy import Action

NOT_SUPPRESSED_FIX = (
    "Check the address: this answer can be temporary, so the address was not suppressed; "
    "send again once it is fixed."
)

#: longest a message waits for its provider's rate limit while its worker holds the lease;
#: beyond that it goes back to the queue for later (no attempt is counted).
MAX_PACE_WAIT = 2.0

#: a message ending in one of these states starts its next fallback leg, if it has one.
FALLBACK_STATES = frozenset({State.FAILED, State.DEAD, State.EXPIRED, State.SUPPRESSED})

#: rate limits at these scopes concern one recipient, not the provider's health.
RECIPIENT_SCOPES = frozenset({"recipient", "device", "topic", "domain"})

_VERDICT_STATE = {
    Verdict.RETRY: State.RETRY_SCHEDULED,
    Verdict.FAIL: State.FAILED,
    Verdict.SUPPRESS: State.FAILED,
    Verdict.SKIP: State.SUPPRESSED,
    Verdict.DEAD: State.DEAD,
    Verdict.EXPIRE: State.EXPIRED,
}


def _scope_key(scope: str | None, job: Job) -> str | None:
    """What a scoped rate limit is about for this message: its device or recipient, its
    recipient's mail domain, or its topic."""
    if scope in ("device", "recipient"):
        return job.to
    if scope == "domain":
        return job.to.rpartition("@")[2].lower() if "@" in job.to else None
    if scope == "topic":
        return job.topic
    return None


def _seconds(ms: object) -> float | None:
    return ms / 1000.0 if isinstance(ms, int | float) and not isinstance(ms, bool) else None


def failure_of(
    cause: taxonomy.Cause, *, provider: str | None, detail: str, code: str | None = None
) -> Failure:
    explanation, fix = taxonomy.describe(cause, provider=provider or "", detail=detail)
    return Failure(cause.name, cause.transient, code, explanation, fix, provider)


class Pipeline:
    def __init__(
        self,
        router: Router,
        policy: RetryPolicy,
        *,
        metrics: Metrics | None = None,
        log: Any = None,
        links: Links | None = None,
        tracer: Any = None,
    ) -> None:
        self.router = router
        #: an OpenTelemetry tracer when traces are on (pushguard.tracing), else None
        self.tracer = tracer
        self.links = links
        self.policy = policy
        self.metrics = metrics or Metrics()
        self.log = log or structlog.get_logger("pushguard.pipeline")
        self._buckets: dict[str, TokenBucket] = {}
        #: (provider, scope, key) -> time before which that scope must not be sent to: a 429
        #: about one device, recipient, domain or topic slows down only that.
        self._scoped: dict[tuple[str, str, str], float] = {}
        #: prometheus label lookups cost a lock and a dict per call: keep the hot children.
        self._children: dict[tuple[str, ...], Any] = {}

    async def process(self, job: Job) -> Outcome:
        started = time.time_ns() if self.tracer is not None else 0
        outcome = await self._process(job)
        if self.tracer is not None:
            tracing.record(self.tracer, job, outcome, started)
        if job.fallback and outcome.state in FALLBACK_STATES:
            self._fall_back(job, outcome)
        if not can_move(State.SENDING, outcome.state):  # pragma: no cover - a bug, not input
            raise AssertionError(f"illegal transition sending -> {outcome.state}")
        self._count(job, outcome)
        return outcome

    async def _process(self, job: Job) -> Outcome:
        now = time.time()
        stop = job.stop
        if stop is not None:
            if stop.next_at is not None and stop.next_at >= job.expires_at:
                out = self._expired(job, stop.cause, detail=f"{stop.rule}: {stop.detail}")
                out.reason += " (the wait would outlast the message's TTL)"
                return out
            return Outcome(
                job.id, stop.state, f"{stop.state.value} by {stop.rule}: {stop.detail}",
                next_at=stop.next_at, failure=stop_failure(stop), counts_attempt=False,
            )
        if now >= job.expires_at:
            return self._expired(job, job.last_cause)
        content = job.content
        if job.marketing and job.contact_id and job.channel == "email":
            if self.links is None:
                return self._hold(job, now, taxonomy.SENDER_CONFIG,
                                  "no PUSHGUARD_SECRET_KEY to sign the unsubscribe link a "
                                  "marketing email must carry")
            content = with_unsubscribe(content, self.links, job.contact_id, job.topic or "")
        delivery = Delivery(
            message_id=job.id, channel=job.channel, to=job.to, content=content,
            topic=job.topic, attempt=job.attempts + 1, priority=job.priority,
            expires_at=job.expires_at,
        )
        if not self.router.providers(job.channel):
            return self._hold_unrouted(job, now)
        chosen = self.router.choose(delivery, avoid=job.avoid_provider)
        if chosen is None:
            wait = self.router.wait_seconds(delivery)
            if now + wait >= job.expires_at:
                return self._expired(job, job.last_cause)
            return Outcome(
                job.id, State.RETRY_SCHEDULED,
                f"every provider for {job.channel} has an open circuit; waiting {wait:.1f} s",
                next_at=now + wait, avoid_provider=job.avoid_provider,
            )
        provider, breaker = chosen
        held = self._scoped_wait(provider.name, job, now)
        if held is not None:
            breaker.release()
            (scope, key), until = held
            return Outcome(
                job.id, State.RETRY_SCHEDULED,
                f"paced: {provider.name} rate-limited {scope} {key} until "
                f"{time.strftime('%H:%M:%S', time.gmtime(until))}Z",
                next_at=until, avoid_provider=job.avoid_provider,
            )
        paced = await self._pace(provider)
        if paced:
            breaker.release()
            return Outcome(
                job.id, State.RETRY_SCHEDULED,
                f"paced: {provider.name} allows {provider.config.rate:g} messages/s; "
                f"next try in {paced:.1f} s",
                next_at=time.time() + paced, avoid_provider=job.avoid_provider,
            )
        started = time.perf_counter()
        try:
            receipt = await provider.send(delivery)
        except DeliveryError as exc:
            error = exc
        except Exception as exc:  # a bug in a provider must not lose the message
            self.log.exception("provider_crashed", message_id=job.id, provider=provider.name)
            error = DeliveryError(taxonomy.INTERNAL_CRASH, f"{type(exc).__name__}: {exc}")
        else:
            latency = time.perf_counter() - started
            breaker.success()
            self.router.observe(provider.name, True, latency)
            self._latency(provider.name).observe(latency)
            via = f" via {provider.name}"
            if job.avoid_provider and job.avoid_provider.startswith(PREFER):
                via += " (as asked)" if job.avoid_provider[1:] == provider.name \
                    else f" ({job.avoid_provider[1:]} was asked for but unavailable)"
            elif job.avoid_provider and job.avoid_provider != provider.name:
                via += f" (failed over from {job.avoid_provider})"
            elif provider is not self.router.providers(job.channel)[0]:
                skipped = self.router.passed_over(delivery, provider)
                if skipped:
                    via += f" (passed over {'; '.join(skipped)})"
            return Outcome(
                job.id, State.DELIVERED, f"delivered{via}",
                attempt=Attempt(
                    delivery.attempt, now, provider.name, "delivered", latency * 1000,
                    receipt.status, None, None, False, receipt.detail,
                ),
                provider=provider.name, provider_message_id=receipt.provider_message_id,
            )
        latency = time.perf_counter() - started
        self._latency(provider.name).observe(latency)
        about_provider = error.cause.action is Action.HOLD or (
            error.cause.trips_breaker and error.scope not in RECIPIENT_SCOPES)
        self.router.observe(provider.name, not about_provider, latency)
        return self._failed(job, delivery, provider, breaker, error, now, latency)

    def _scoped_wait(self, provider: str, job: Job, now: float
                     ) -> tuple[tuple[str, str], float] | None:
        """The (scope, key) and end of a rate limit that holds this message back, if any."""
        if not self._scoped:
            return None
        for scope in RECIPIENT_SCOPES:
            key = _scope_key(scope, job)
            until = self._scoped.get((provider, scope, key)) if key else None
            if until is not None:
                if until > now:
                    return (scope, key or ""), until
                del self._scoped[(provider, scope, key or "")]
        return None

    def _hold_scope(self, provider: str, scope: str, key: str, until: float) -> None:
        if len(self._scoped) > 10_000:  # bounded: forget the holds that are over
            now = time.time()
            self._scoped = {k: t for k, t in self._scoped.items() if t > now}
        k = (provider, scope, key)
        self._scoped[k] = max(until, self._scoped.get(k, 0.0))

    async def _pace(self, provider: Provider) -> float:
        """Wait for the provider's token bucket when it has a ``rate``; returns 0, or how long
        the message would still have to wait when that is longer than it may wait while
        holding its lease (it is then rescheduled instead)."""
        bucket = self._buckets.get(provider.name)
        if bucket is None:
            if not provider.config.rate:
                return 0.0
            rate = provider.config.rate
            bucket = self._buckets[provider.name] = TokenBucket(rate, max(1.0, rate))
        waited = 0.0
        while wait := bucket.take():
            if waited + wait > MAX_PACE_WAIT:
                return wait
            await asyncio.sleep(wait)
            waited += wait
        return 0.0

    def _failed(
        self, job: Job, delivery: Delivery, provider: Provider, breaker: Breaker,
        error: DeliveryError, now: float, latency: float,
    ) -> Outcome:
        cause = error.cause
        provider_name = provider.name
        if cause.action is Action.HOLD:
            # Counted, not an instant pause: some providers answer a setup-style error for one
            # recipient or one message (a token from another project, one country's
            # permission), and that must not stop everyone. Broken credentials fail every
            # call, so the breaker still opens after a few in a row.
            breaker.failure()
        elif cause is taxonomy.RATE_LIMITED and error.scope in RECIPIENT_SCOPES:
            # not the provider's health; but the next messages to the same scope wait too
            key = _scope_key(error.scope, job)
            if key:
                wait = error.retry_after if error.retry_after else cause.min_delay or 1.0
                self._hold_scope(provider_name, error.scope, key, now + wait)
            breaker.success()
        elif cause.trips_breaker and error.scope not in RECIPIENT_SCOPES:
            pause = error.retry_after if cause is taxonomy.RATE_LIMITED else None
            breaker.failure(pause=pause)
        elif cause is taxonomy.INTERNAL_CRASH:
            breaker.release()
        else:
            breaker.success()  # the provider answered sensibly about this one message
        can_failover = self.router.can_fail_over(delivery, provider)
        decision = self.policy.decide(
            cause, attempts=delivery.attempt, now=now, expires_at=job.expires_at,
            retry_after=error.retry_after, failover=can_failover, suppress=error.suppress,
        )
        failure = failure_of(cause, provider=provider_name, detail=error.detail,
                             code=error.provider_code)
        if cause.action is Action.SUPPRESS and error.suppress is False:
            failure = Failure(failure.cause, failure.transient, failure.provider_code,
                              failure.explanation, NOT_SUPPRESSED_FIX, provider_name)
        attempt = Attempt(
            delivery.attempt, now, provider_name,
            "retry" if decision.verdict is Verdict.RETRY else "failed",
            latency * 1000, error.status, error.provider_code, cause.name, error.maybe_sent,
            error.detail, (error.raw or "")[:2048] or None,
        )
        self.log.info(
            "attempt_failed", message_id=job.id, provider=provider_name, cause=cause.name,
            code=error.provider_code, verdict=decision.verdict.value,
            contact_id=job.contact_id, campaign_id=job.campaign_id,
        )
        if decision.verdict is Verdict.EXPIRE:
            out = self._expired(job, cause.name, detail=error.detail, code=error.provider_code)
            out.attempt, out.provider = attempt, provider_name
            return out
        failover = decision.verdict is Verdict.RETRY and cause.provider_scoped and can_failover
        return Outcome(
            job.id, _VERDICT_STATE[decision.verdict], decision.reason,
            attempt=attempt, next_at=decision.at, failure=failure, provider=provider_name,
            avoid_provider=provider_name if failover else _preference(job),
            suppress=(job.channel, job.to, cause.name)
            if decision.verdict is Verdict.SUPPRESS
            or (decision.verdict is Verdict.SKIP and error.suppress) else None,
            unregistered_at=_seconds(error.extra.get("unregistered_at_ms")),
        )

    def _fall_back(self, job: Job, outcome: Outcome) -> None:
        """Start the next leg of the chain (the seeds' "compensation when a push fails")."""
        child = next_leg(job.id, job.fallback, topic=job.topic, priority=job.priority,
                         ttl=int(job.expires_at - job.created_at), contact_id=job.contact_id)
        outcome.fallback_leg = child
        outcome.reason += f"; falling back to {child.channel} as {child.id}"
        self.metrics.fallbacks.labels(job.channel, child.channel).inc()

    def _expired(
        self, job: Job, last_cause: str | None, *, detail: str = "", code: str | None = None
    ) -> Outcome:
        last = last_cause or "none recorded"
        text = f"TTL ended; last cause {last}" + (f": {detail}" if detail else "")
        return Outcome(
            job.id, State.EXPIRED, text,
            failure=failure_of(taxonomy.EXPIRED, provider=None, detail=text, code=code),
        )

    def _hold_unrouted(self, job: Job, now: float) -> Outcome:
        return self._hold(job, now, taxonomy.SENDER_CONFIG,
                          f"no provider is configured for channel {job.channel!r}")

    def _hold(self, job: Job, now: float, cause: taxonomy.Cause, detail: str) -> Outcome:
        at = now + cause.min_delay
        if at >= job.expires_at:
            return self._expired(job, cause.name, detail=detail)
        return Outcome(
            job.id, State.RETRY_SCHEDULED, f"held: {detail}", next_at=at,
            failure=failure_of(cause, provider=None, detail=detail), counts_attempt=False,
        )

    def _latency(self, provider: str) -> Any:
        child = self._children.get(("latency", provider))
        if child is None:
            child = self._children[("latency", provider)] = self.metrics.latency.labels(provider)
        return child

    def _count(self, job: Job, outcome: Outcome) -> None:
        m = self.metrics
        provider = outcome.provider or ""
        if outcome.state is State.DELIVERED:
            key = ("delivered", job.channel, provider)
            pair = self._children.get(key)
            if pair is None:
                pair = self._children[key] = (
                    m.delivered.labels(job.channel, provider),
                    m.finished.labels(job.channel, "delivered", ""),
                )
            pair[0].inc()
            pair[1].inc()
            return
        elif outcome.attempt is not None and outcome.attempt.cause:
            m.failures.labels(job.channel, provider, outcome.attempt.cause).inc()
        if outcome.state is State.RETRY_SCHEDULED and outcome.failure is not None:
            m.retries.labels(job.channel, outcome.failure.cause).inc()
        if outcome.attempt is not None and outcome.avoid_provider == outcome.attempt.provider:
            m.failovers.labels(job.channel, outcome.avoid_provider).inc()
        if outcome.state.terminal:
            cause = outcome.failure.cause if outcome.failure else ""
            m.finished.labels(job.channel, outcome.state.value, cause).inc()


def _preference(job: Job) -> str | None:
    """A provider the message asked for first is asked for again on its next attempt."""
    a = job.avoid_provider
    return a if a is not None and a.startswith(PREFER) else None
