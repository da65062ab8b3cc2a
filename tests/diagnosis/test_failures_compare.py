"""``pushguard failures compare``: two windows or two campaigns, and whether the difference in
their failure rates is more than noise. The statistics first, then the whole path."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pushguard.diagnosis.compare import compare_report, side, two_proportions, wording
from pushguard.diagnosis.timespan import instant, span, window
from pushguard.exceptions import InputError
from pushguard.states import State
from pushguard.store.sql import SQLStore
from tests.diagnosis.test_why_contact import Desk, cli_for

DAY = 86400
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC).timestamp()


# -- the test statistic ------------------------------------------------------------------------

def test_two_proportions_against_a_worked_example() -> None:
    # 45 of 100 against 56 of 100: pooled 0.505, standard error 0.070711, z = 1.5556,
    # two-sided p = 0.1198 (normal table)
    t = two_proportions(45, 100, 56, 100)
    assert t["z"] == pytest.approx(1.5556, abs=1e-4)
    assert t["p_value"] == pytest.approx(0.1198, abs=1e-4)
    assert t["verdict"] == "noise" and t["difference"] == pytest.approx(0.11)
    assert "within noise (p = 0.120)" in wording(t)


def test_a_real_drop_is_significant() -> None:
    t = two_proportions(100, 1000, 20, 1000)
    assert t["verdict"] == "significant" and t["z"] == pytest.approx(-7.532, abs=1e-3)
    assert t["p_value"] < 1e-12 and math.isfinite(t["p_value"])
    assert wording(t).endswith("down 8.0 points; significant at 95% (p < 0.001)")


@pytest.mark.parametrize(("x1", "n1", "x2", "n2", "verdict", "words"), [
    (1, 10, 0, 10, "too_small", "too small a sample to tell"),
    (3, 1000, 0, 1000, "too_small", "too small a sample to tell"),
    (0, 0, 5, 100, "no_data", "no finished message in A"),
    (4, 100, 0, 0, "no_data", "no finished message in B"),
    (0, 500, 0, 800, "none", "none in both, no difference"),
    (500, 500, 800, 800, "all", "all in both, no difference"),
])
def test_zero_counts_and_tiny_samples_say_so(x1: int, n1: int, x2: int, n2: int,
                                             verdict: str, words: str) -> None:
    t = two_proportions(x1, n1, x2, n2)
    assert t["verdict"] == verdict and t["p_value"] is None
    assert words in wording(t)


# -- windows as people type them ---------------------------------------------------------------

def test_windows_and_spans() -> None:
    assert instant("24h", "since", now=NOW) == NOW - DAY
    assert instant("2w", "since", now=NOW) == NOW - 14 * DAY
    assert instant("2026-11-01", "since") == datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    assert instant("2026-11-01", "until", end=True) == datetime(
        2026, 11, 2, tzinfo=UTC).timestamp()
    assert instant("2026-11-01T10:00:00+02:00", "since") == datetime(
        2026, 11, 1, 8, tzinfo=UTC).timestamp()
    week = span("2026-11-01..2026-11-07", "a")
    assert week.seconds == 7 * DAY
    assert span("2d", "a", now=NOW).until == NOW
    assert window(None, None, now=NOW).since == NOW - DAY
    for text, field, problem in (("2026-11-01T10:00:00", "since", "no timezone"),
                                 ("2026-02-30", "since", "not a calendar date"),
                                 ("last week", "since", "is not a time")):
        with pytest.raises(InputError) as err:
            window(text, None, now=NOW)
        assert err.value.field == field and problem in err.value.problem
    with pytest.raises(InputError) as err:
        span("2026-11-07..2026-11-01", "b")
    assert err.value.field == "b" and "before it starts" in err.value.problem
    with pytest.raises(InputError) as err:
        span("..2026-11-01", "a")
    assert err.value.field == "a"


# -- did the fix work? -------------------------------------------------------------------------

def before_and_after(desk: Desk) -> None:
    """Last week 30 of 60 pushes were rejected; this week 2 of 60."""
    before = desk.send("ok@example.com", n=60, campaign_id=desk.campaign("before"))
    after = desk.send("ok@example.com", n=60, campaign_id=desk.campaign("after"))
    plan = {i: (State.FAILED, "CONTENT_REJECTED", "mailer") for i in before[:30] + after[:2]}
    desk.settle(plan)  # type: ignore[arg-type]
    desk.backdate(before, 7 * DAY)


def test_compare_windows_and_campaigns(store: SQLStore) -> None:
    desk = Desk(store)
    before_and_after(desk)
    a = side(store, "10d..5d", None, fields=("a", "campaign_a"))
    b = side(store, "2d", None, fields=("b", "campaign_b"))
    r = compare_report(store, a, b)
    assert r["overall"]["a"] == {"count": 30, "of": 60, "rate": 0.5}
    assert r["overall"]["b"]["count"] == 2 and r["overall"]["verdict"] == "significant"
    assert r["verdict"].startswith("Failure rate: A 50.0% (30/60) -> B 3.3% (2/60), down "
                                   "46.7 points; significant at 95% (p < 0.001).")
    (cause,) = r["causes"]
    assert (cause["cause"], cause["outcome"], cause["verdict"]) == (
        "CONTENT_REJECTED", "failed", "significant")
    assert cause["p_adjusted"] == cause["p_value"]  # one cause tested: nothing to adjust
    assert r["suppressed"]["verdict"] == "none"
    by_campaign = compare_report(
        store, side(store, None, "before", fields=("a", "campaign_a")),
        side(store, None, "after", fields=("b", "campaign_b")))
    assert by_campaign["overall"]["a"]["count"] == 30
    assert by_campaign["a"]["campaign"] == "cmp_before"
    with pytest.raises(InputError) as err:
        side(store, None, None, fields=("a", "campaign_a"))
    assert err.value.field == "a"
    with pytest.raises(InputError) as err:
        side(store, None, "nope", fields=("b", "campaign_b"))
    assert err.value.field == "campaign_b"


def test_compare_over_http_and_cli(sqlite_url: str, tmp_path: Path) -> None:
    store = SQLStore(sqlite_url)
    store.migrate()
    desk = Desk(store)
    before_and_after(desk)
    with desk.http() as http:
        r = http.get("/v1/failures/compare", params={"a": "10d..5d", "b": "2d"})
        assert r.status_code == 200, r.text
        assert r.json()["overall"]["verdict"] == "significant"
        for params, field in (({"b": "2d"}, "a"), ({"a": "10d..5d", "b": "tomorrow"}, "b"),
                              ({"campaign_a": "before", "campaign_b": "nope"}, "campaign_b")):
            bad = http.get("/v1/failures/compare", params=params)
            assert bad.status_code == 422, bad.text
            assert bad.json()["error"]["fields"][0]["field"] == field
    store.close()
    cli = cli_for(sqlite_url, tmp_path)
    text = cli("failures", "compare", "--campaign-a", "before", "--campaign-b", "after").stdout
    assert "significant at 95% (p < 0.001)" in text and "CONTENT_REJECTED (failed)" in text
    small = json.loads(cli("failures", "compare", "--a", "10d..5d", "--b", "2d",
                           "--channel", "sms", "--json").stdout)
    assert small["overall"]["verdict"] == "no_data"
    bad = cli("failures", "compare", "--b", "2d", check=False)
    assert bad.returncode == 1 and "--a: give a window" in bad.stderr
