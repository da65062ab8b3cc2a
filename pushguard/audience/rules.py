"""The rules the gate applies, as pure functions: quiet hours and frequency caps.

Times are UNIX seconds; local times are computed with :mod:`zoneinfo`, so a quiet window
that spans a daylight-saving change ends at the right wall-clock time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pushguard.exceptions import InputError

_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")
_CAP = re.compile(r"^(\d{1,6})/(\d{1,4})([mhdw])$")
_UNIT = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_UNIT_NAME = {"m": "minute", "h": "hour", "d": "day", "w": "week"}


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily window, in local time, during which marketing waits. ``start > end`` wraps
    midnight (``21:00-08:00``)."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str, *, field: str = "quiet_hours") -> QuietHours:
        m = _WINDOW.match(text.strip())
        if not m:
            raise InputError(field, f"{text!r} is not a window like 21:00-08:00")
        start = time(int(m[1]), int(m[2]))
        end = time(int(m[3]), int(m[4]))
        if start == end:
            raise InputError(field, "start and end are the same time")
        return cls(start, end)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def _inside(self, t: time) -> bool:
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def next_allowed(self, now: float, tz: ZoneInfo) -> float | None:
        """None when ``now`` is outside the window, else the UNIX time the window ends.

        The end is a wall-clock time in ``tz``: on the night clocks go forward or back, the
        window still ends at e.g. 08:00 local. An end in a skipped hour is the moment the
        clocks jump; an end in a repeated hour is its first occurrence, or its second when
        we are already past the first."""
        local = datetime.fromtimestamp(now, tz)
        if not self._inside(local.time().replace(tzinfo=None)):
            return None
        day = local.date()
        if self.start >= self.end and local.time().replace(tzinfo=None) >= self.start:
            day = day + timedelta(days=1)  # inside the part before midnight
        end = datetime.combine(day, self.end, tzinfo=tz)
        first, second = end.timestamp(), end.replace(fold=1).timestamp()
        if first == second:
            at = first  # an ordinary wall time
        elif second < first:
            # it does not exist (clocks went forward over it): the window ends when the
            # clocks jump, the first instant whose wall time is at or past the end
            at = _jump(second, first, end)
        else:
            # it exists twice (clocks went back): the first occurrence, unless that is
            # already behind us (we are inside the repeated hour)
            at = first if first > now else second
        return max(at, now + 1.0)


def _jump(lo: float, hi: float, end: datetime) -> float:
    """The instant between ``lo`` and ``hi`` where the local wall time reaches ``end``."""
    tz = end.tzinfo
    target = end.replace(tzinfo=None)
    for _ in range(40):  # to well under a second
        mid = (lo + hi) / 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= target:
            hi = mid
        else:
            lo = mid
    return float(round(hi))


@dataclass(frozen=True, slots=True)
class Cap:
    """At most ``limit`` messages per ``seconds``."""

    limit: int
    seconds: int
    text: str

    @classmethod
    def parse(cls, text: str, *, field: str = "cap") -> Cap:
        m = _CAP.match(text.strip())
        if not m or int(m[1]) < 1 or int(m[2]) < 1:
            raise InputError(field, f"{text!r} is not a cap like 3/1d (count/period: m h d w)")
        n = int(m[2])
        period = _UNIT_NAME[m[3]] + ("" if n == 1 else "s")
        return cls(int(m[1]), n * _UNIT[m[3]], f"{m[1]} per {'' if n == 1 else f'{n} '}{period}")

    def exceeded(self, times: Iterable[float], now: float) -> bool:
        since = now - self.seconds
        return sum(1 for t in times if t > since) >= self.limit


@lru_cache(maxsize=4096)
def zone(name: str | None, default: str = "UTC") -> ZoneInfo:
    try:
        return ZoneInfo(name or default)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(default)


def check_timezone(name: str, *, field: str = "timezone") -> str:
    if name not in _zones():
        raise InputError(field, f"unknown IANA timezone {name!r} (e.g. Europe/Paris)")
    return name


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


@dataclass(frozen=True)
class AudiencePolicy:
    """``[audience]`` in pushguard.toml::

        [audience]
        quiet_hours = "21:00-08:00"     # marketing waits in the contact's local night
        default_timezone = "UTC"        # for contacts without one
        marketing_cap = "3/1d"          # across all marketing topics, per contact
        confirm_ttl = 172800            # seconds a confirmation link stays valid
        policy_version = "2026-01"      # recorded with every consent change
        organisation = "Example Shop"   # who asks, named in confirmation messages
    """

    quiet_hours: QuietHours | None = None
    default_timezone: str = "UTC"
    marketing_cap: Cap | None = None
    confirm_ttl: int = 2 * 86400
    policy_version: str | None = None
    organisation: str | None = None
