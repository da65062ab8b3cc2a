from __future__ import annotations

import re
from pathlib import Path

import pytest

from pushguard import taxonomy
from pushguard.taxonomy import Action

FAILURES = Path(__file__).resolve().parents[3] / "shared" / "FAILURES.md"


def test_every_cause_has_an_explanation_and_a_fix() -> None:
    for cause in taxonomy.CAUSES.values():
        explanation, fix = taxonomy.describe(cause, provider="acme", detail="HTTP 503")
        assert explanation and fix and "{" not in explanation + fix


@pytest.mark.skipif(not FAILURES.exists(), reason="shared/FAILURES.md not beside the repo")
def test_cause_names_match_the_unified_table() -> None:
    table = FAILURES.read_text().split("## 1.8", 1)[1]
    documented = set(re.findall(r"^\| \d+ \| `([A-Z_]+)`", table, flags=re.M))
    assert documented <= set(taxonomy.CAUSES), documented - set(taxonomy.CAUSES)


def test_only_network_outage_and_rate_limits_trip_breakers() -> None:
    tripping = {c.name for c in taxonomy.CAUSES.values() if c.trips_breaker}
    assert tripping == {"NETWORK_TIMEOUT", "PROVIDER_OUTAGE", "RATE_LIMITED"}


def test_permanent_causes_never_retry() -> None:
    for cause in taxonomy.CAUSES.values():
        if not cause.transient and cause.action is not Action.HOLD:
            assert cause.action in (Action.FAIL, Action.SUPPRESS, Action.SKIP), cause.name


def test_unknown_name_is_unknown_not_an_error() -> None:
    assert taxonomy.get("NOT_A_CAUSE") is taxonomy.UNKNOWN


@pytest.mark.parametrize("status,cause", [
    (408, "NETWORK_TIMEOUT"), (429, "RATE_LIMITED"), (503, "PROVIDER_OUTAGE"),
    (401, "AUTH_CREDENTIALS"), (410, "UNREGISTERED_TOKEN"), (413, "CONTENT_REJECTED"),
    (400, "CONTENT_REJECTED"), (302, "SENDER_CONFIG"), (200, "UNKNOWN"),
])
def test_bare_http_status_defaults(status: int, cause: str) -> None:
    assert taxonomy.classify_http_status(status).name == cause
