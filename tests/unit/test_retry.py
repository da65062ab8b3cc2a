from __future__ import annotations

import random

import pytest

from pushguard import taxonomy
from pushguard.retry import RetryPolicy, Verdict

NOW = 1_000_000.0


def policy(**kw: float) -> RetryPolicy:
    return RetryPolicy(rng=random.Random(7), **kw)


def test_full_jitter_stays_under_the_exponential_ceiling_and_cap() -> None:
    p = policy(base=1.0, cap=30.0)
    for attempt in range(1, 12):
        ceiling = min(30.0, 2 ** (attempt - 1))
        delays = [p.backoff(attempt) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.7  # jitter spreads over the whole range


def test_retry_after_is_honoured_and_capped() -> None:
    p = policy(base=0.01, retry_after_cap=120)
    d = p.decide(taxonomy.RATE_LIMITED, attempts=1, now=NOW, expires_at=NOW + 3600,
                 retry_after=42)
    assert d.verdict is Verdict.RETRY and d.delay >= 42
    d = p.decide(taxonomy.RATE_LIMITED, attempts=1, now=NOW, expires_at=NOW + 3600,
                 retry_after=10_000)
    assert d.verdict is Verdict.RETRY and 120 <= d.delay < 121


@pytest.mark.parametrize("cause,verdict", [
    (taxonomy.INVALID_RECIPIENT, Verdict.SUPPRESS),
    (taxonomy.UNREGISTERED_TOKEN, Verdict.SUPPRESS),
    (taxonomy.CONTENT_REJECTED, Verdict.FAIL),
    (taxonomy.TEMPLATE_ERROR, Verdict.FAIL),
    (taxonomy.NO_CONSENT, Verdict.SKIP),
    (taxonomy.PROVIDER_OUTAGE, Verdict.RETRY),
    (taxonomy.AUTH_CREDENTIALS, Verdict.RETRY),  # held, never failed before the TTL
])
def test_first_failure_verdict_follows_the_taxonomy(cause: taxonomy.Cause,
                                                    verdict: Verdict) -> None:
    d = policy().decide(cause, attempts=1, now=NOW, expires_at=NOW + 86400)
    assert d.verdict is verdict


def test_per_cause_attempt_limit_gives_up_as_dead() -> None:
    p = policy()
    limit = taxonomy.UNKNOWN.max_attempts
    assert p.decide(taxonomy.UNKNOWN, attempts=limit - 1, now=NOW,
                    expires_at=NOW + 86400).verdict is Verdict.RETRY
    assert p.decide(taxonomy.UNKNOWN, attempts=limit, now=NOW,
                    expires_at=NOW + 86400).verdict is Verdict.DEAD


def test_a_retry_past_the_ttl_expires_now() -> None:
    d = policy().decide(taxonomy.RATE_LIMITED, attempts=1, now=NOW, expires_at=NOW + 5,
                        retry_after=60)
    assert d.verdict is Verdict.EXPIRE and "RATE_LIMITED" in d.reason


def test_failover_retries_at_once_for_provider_scoped_causes_only() -> None:
    p = policy(base=10)
    d = p.decide(taxonomy.PROVIDER_OUTAGE, attempts=1, now=NOW, expires_at=NOW + 3600,
                 failover=True)
    assert d.verdict is Verdict.RETRY and d.delay == 0
    d = p.decide(taxonomy.RECIPIENT_TEMPORARY, attempts=1, now=NOW, expires_at=NOW + 86400,
                 failover=True)
    assert d.delay >= taxonomy.RECIPIENT_TEMPORARY.min_delay


def test_suppress_false_fails_without_suppressing() -> None:
    d = policy().decide(taxonomy.INVALID_RECIPIENT, attempts=1, now=NOW, expires_at=NOW + 60,
                        suppress=False)
    assert d.verdict is Verdict.FAIL
