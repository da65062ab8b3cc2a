"""Quiet hours and caps as pure rules, including the nights clocks change."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from pushguard.audience.rules import Cap, QuietHours
from pushguard.exceptions import InputError

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def at(tz: ZoneInfo, *args: int) -> float:
    return datetime(*args, tzinfo=tz).timestamp()  # type: ignore[misc]


def local(ts: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M %Z")


@pytest.mark.parametrize(("tz", "start", "expect", "hours"), [
    # the night clocks go forward: 21:00 -> 08:00 local is 10 hours, not 11
    (PARIS, (2026, 3, 28, 21, 0), "2026-03-29 08:00 CEST", 10.0),
    # the night clocks go back: 12 hours
    (PARIS, (2026, 10, 24, 21, 0), "2026-10-25 08:00 CET", 12.0),
    (NEW_YORK, (2026, 3, 7, 23, 30), "2026-03-08 08:00 EDT", 7.5),
    (NEW_YORK, (2026, 10, 31, 23, 30), "2026-11-01 08:00 EST", 9.5),
    # after midnight, inside the window
    (PARIS, (2026, 3, 29, 1, 0), "2026-03-29 08:00 CEST", 6.0),
])
def test_quiet_window_ends_at_local_wall_time_across_dst(
    tz: ZoneInfo, start: tuple[int, ...], expect: str, hours: float
) -> None:
    q = QuietHours.parse("21:00-08:00")
    now = at(tz, *start)
    until = q.next_allowed(now, tz)
    assert until is not None
    assert local(until, tz) == expect
    assert (until - now) / 3600 == pytest.approx(hours)


def test_outside_the_window_nothing_waits() -> None:
    q = QuietHours.parse("21:00-08:00")
    assert q.next_allowed(at(PARIS, 2026, 3, 29, 8, 0), PARIS) is None
    assert q.next_allowed(at(PARIS, 2026, 3, 29, 20, 59), PARIS) is None


def test_window_ending_in_the_skipped_hour_ends_after_the_gap() -> None:
    q = QuietHours.parse("01:00-02:30")  # 02:30 does not exist in Paris on 2026-03-29
    until = q.next_allowed(at(PARIS, 2026, 3, 29, 1, 30), PARIS)
    assert until is not None and local(until, PARIS) == "2026-03-29 03:00 CEST"


def test_inside_the_repeated_hour_the_window_ends_at_its_second_occurrence() -> None:
    q = QuietHours.parse("00:00-01:30")
    # 01:15 EST, the second 01:15 of 2026-11-01 in New York (the first was 01:15 EDT)
    now = datetime(2026, 11, 1, 1, 15, fold=1, tzinfo=NEW_YORK).timestamp()
    until = q.next_allowed(now, NEW_YORK)
    assert until is not None and local(until, NEW_YORK) == "2026-11-01 01:30 EST"
    assert until - now == 15 * 60  # not a one-second spin
    first = datetime(2026, 11, 1, 0, 30, tzinfo=NEW_YORK).timestamp()  # 00:30 EDT
    until = q.next_allowed(first, NEW_YORK)
    assert until is not None and local(until, NEW_YORK) == "2026-11-01 01:30 EDT"


def test_daytime_window() -> None:
    q = QuietHours.parse("12:00-14:00")
    until = q.next_allowed(at(PARIS, 2026, 6, 1, 13, 0), PARIS)
    assert until is not None and local(until, PARIS) == "2026-06-01 14:00 CEST"
    assert q.next_allowed(at(PARIS, 2026, 6, 1, 14, 0), PARIS) is None


@pytest.mark.parametrize("bad", ["21-08", "25:00-08:00", "08:00-08:00", "", "9:00-10:00"])
def test_bad_windows_are_refused(bad: str) -> None:
    with pytest.raises(InputError):
        QuietHours.parse(bad)


def test_caps() -> None:
    cap = Cap.parse("3/1d")
    assert cap.text == "3 per day" and cap.seconds == 86400
    now = 1_000_000.0
    assert not cap.exceeded([now - 10, now - 20], now)
    assert cap.exceeded([now - 10, now - 20, now - 30], now)
    assert not cap.exceeded([now - 86401] * 5, now)  # outside the window
    assert Cap.parse("10/2w").text == "10 per 2 weeks"
    for bad in ("0/1d", "3/0d", "3/1y", "three/1d"):
        with pytest.raises(InputError):
            Cap.parse(bad)


def test_audience_section_of_pushguard_toml(tmp_path: object) -> None:
    from pathlib import Path

    from pushguard import config
    from pushguard.settings import Settings

    path = Path(str(tmp_path)) / "pushguard.toml"
    path.write_text('[audience]\nquiet_hours = "22:00-07:30"\nmarketing_cap = "3/1d"\n'
                    'organisation = "Example Shop"\nconfirm_ttl = 3600\n')
    got = config.load(Settings(config=str(path))).audience
    assert str(got.quiet_hours) == "22:00-07:30" and got.marketing_cap is not None
    assert got.marketing_cap.limit == 3 and got.organisation == "Example Shop"
    assert got.confirm_ttl == 3600
    path.write_text('[audience]\nquiet_hours = "late"\nmarketing_cap = "often"\n'
                    'organisation = "a\\nb"\nbogus = 1\nconfirm_ttl = 5\n')
    _, problems = config.check(Settings(config=str(path)))
    where = sorted(p.location.rsplit(":", 1)[1] for p in problems
                   if ":audience." in p.location)
    assert where == ["audience.bogus", "audience.confirm_ttl", "audience.marketing_cap",
                     "audience.organisation", "audience.quiet_hours"], problems


def test_confirmation_names_the_organisation() -> None:
    from pushguard.audience.optin import confirmation_content

    got = confirmation_content("email", "the newsletter", "email", "https://x/confirm/t",
                               "Example Shop")
    assert "the newsletter from Example Shop" in got["text"]
