"""Time windows as people type them, turned into the store's UNIX seconds.

``24h``, ``7d``, ``90m``, ``2w`` count back from now; ``2026-11-01`` is that day's midnight
UTC; an RFC 3339 time must carry its timezone, because a window that silently shifts by the
server's offset answers a different question. A day given as an *end* (``--until``, or after
``..``) means the end of that day, so ``2026-11-01..2026-11-07`` is the whole week people mean.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from pushguard.exceptions import InputError
from pushguard.views import rfc3339

_AGO = re.compile(r"^(\d{1,6})([mhdw])$")
_UNIT = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
#: the longest window anything here looks at: ten years keeps every bucket count bounded
MAX_SPAN = 10 * 366 * 86400

HELP = "24h, 7d, 2026-11-01 or an RFC 3339 time with a timezone"


@dataclass(frozen=True, slots=True)
class Window:
    """``[since, until)`` in UNIX seconds."""

    since: float
    until: float

    def as_dict(self) -> dict[str, str | None]:
        return {"since": rfc3339(self.since), "until": rfc3339(self.until)}

    @property
    def seconds(self) -> float:
        return self.until - self.since


def instant(text: str, field: str, *, end: bool = False, now: float | None = None) -> float:
    """One point in time; ``end``: a bare day means the end of that day."""
    at = _instant(text, field, end=end, now=time.time() if now is None else now)
    try:
        datetime.fromtimestamp(at, UTC)
    except (OverflowError, OSError, ValueError):
        raise InputError(field, f"{text!r} is out of range") from None
    return at


def _instant(text: str, field: str, *, end: bool, now: float) -> float:
    raw = text.strip()
    if raw == "now":
        return now
    m = _AGO.match(raw)
    if m:
        return now - int(m[1]) * _UNIT[m[2]]
    if _DAY.match(raw):
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            raise InputError(field, f"{text!r} is not a calendar date") from None
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        try:
            return (start + timedelta(days=1) if end else start).timestamp()
        except OverflowError:
            raise InputError(field, f"{text!r} is out of range") from None
    try:
        at = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        stamp = at.timestamp()
    except (ValueError, OverflowError):
        raise InputError(field, f"{text!r} is not a time ({HELP})") from None
    if at.tzinfo is None:
        raise InputError(field, f"{text!r} has no timezone; add Z or an offset like +02:00")
    return stamp


def window(since: str | None, until: str | None, *, default: str = "24h",
           now: float | None = None, fields: tuple[str, str] = ("since", "until")) -> Window:
    """The window between ``since`` (default: 24 hours ago) and ``until`` (default: now)."""
    now = time.time() if now is None else now
    lo = instant(since or default, fields[0], now=now)
    hi = instant(until, fields[1], end=True, now=now) if until else now
    return _checked(lo, hi, fields)


def span(text: str, field: str, *, now: float | None = None) -> Window:
    """``A..B`` (either side may be any :func:`instant`); ``A`` alone runs until now."""
    lo_text, sep, hi_text = text.partition("..")
    if not lo_text.strip():
        raise InputError(field, f"{text!r} has no start; write it like 2026-11-01..2026-11-07")
    now = time.time() if now is None else now
    lo = instant(lo_text, field, now=now)
    hi = instant(hi_text, field, end=True, now=now) if sep and hi_text.strip() else now
    return _checked(lo, hi, (field, field))


def _checked(lo: float, hi: float, fields: tuple[str, str]) -> Window:
    if hi <= lo:
        raise InputError(fields[1], f"the window ends ({rfc3339(hi)}) before it starts "
                                    f"({rfc3339(lo)})")
    if hi - lo > MAX_SPAN:
        raise InputError(fields[0], "the window is longer than ten years")
    return Window(lo, hi)
