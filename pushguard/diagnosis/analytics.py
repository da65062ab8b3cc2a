"""Failure analytics: how many messages failed, why, where and when, counted in SQL.

A message belongs to the window it was *created* in (``messages.created_at`` is indexed; the
time it finished is not). Its outcome is its state now:

- ``finished``: a terminal state (delivered, failed, dead, expired, suppressed), the
  denominator of every rate;
- ``failed``: failed + dead + expired: it was meant to go and did not;
- ``suppressed``: not sent, by policy (consent, suppression list, caps): counted apart from
  failures, because a policy that works is not a delivery problem;
- ``pending``: not finished yet (queued, retrying, deferred, sending).

Its cause is ``last_cause`` unless it was delivered (a delivered message keeps the cause of the
retry it recovered from, which is not why it failed, because it did not). Its provider is the
last one tried. Every count is a ``GROUP BY`` over the window, so a million messages cost one
index range scan, never a million rows in Python; result sizes are bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, Integer, case, cast, func, literal_column, select
from sqlalchemy.sql.elements import ColumnElement

from pushguard.diagnosis.timespan import Window
from pushguard.store.schema import campaigns, messages

FAILED_STATES = ("failed", "dead", "expired")
TERMINAL_STATES = ("delivered", *FAILED_STATES, "suppressed")
DIMENSIONS = ("cause", "provider", "channel", "campaign", "template", "topic", "hour", "day")
TIME_DIMENSIONS = {"hour": 3600, "day": 86400}
COUNTS = ("total", "delivered", "failed", "dead", "expired", "suppressed")


@dataclass(frozen=True, slots=True)
class Filters:
    """Which messages: created in ``window``, and matching every filter that is set."""

    window: Window
    campaign: str | None = None
    channel: str | None = None
    provider: str | None = None
    topic: str | None = None
    template: str | None = None
    #: read the whole table rather than the creation-time index (see :func:`planned`)
    scan: bool = False

    def where(self) -> list[ColumnElement[bool]]:
        m = messages.c
        at = m.created_at + 0 if self.scan else m.created_at
        out = [at >= self.window.since, at < self.window.until]
        for column, value in ((m.campaign_id, self.campaign), (m.channel, self.channel),
                              (m.last_provider, self.provider), (m.topic, self.topic),
                              (m.template, self.template)):
            if value is not None:
                out.append(column == value)
        return out

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.window.as_dict())
        for name in ("campaign", "channel", "provider", "topic", "template"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


def planned(conn: Connection, filters: Filters) -> Filters:
    """``filters``, set to scan the table when the window covers most of it.

    SQLite has no statistics unless someone runs ANALYZE, so it always walks the creation-time
    index, and fetching most of a million rows one index entry at a time is ten times slower
    than reading the table straight through. ``created_at + 0`` keeps the index out of it. A
    campaign filter has its own index and PostgreSQL plans from its statistics: both are left
    alone."""
    if conn.dialect.name != "sqlite" or filters.campaign is not None:
        return filters
    lo, hi = conn.execute(select(func.min(messages.c.created_at),
                                 func.max(messages.c.created_at))).one()
    if lo is None or hi <= lo:
        return filters
    w = filters.window
    covered = (min(hi, w.until) - max(lo, w.since)) / (hi - lo)
    return replace(filters, scan=True) if covered > 0.25 else filters


def cause_of() -> ColumnElement[Any]:
    return case((messages.c.state == "delivered", None), else_=messages.c.last_cause)


def bucket(dialect: str, seconds: int) -> ColumnElement[Any]:
    """The start of the ``seconds``-long bucket a message was created in (UTC-aligned).

    PostgreSQL rounds a float cast to an integer, SQLite truncates it, and SQLite's
    ``floor()`` exists only in some builds: hence one expression per dialect."""
    at = messages.c.created_at
    if dialect == "postgresql":
        return func.floor(at / seconds) * seconds
    return cast(at / seconds, Integer) * seconds


def dimension(dialect: str, name: str) -> ColumnElement[Any]:
    m = messages.c
    if name in TIME_DIMENSIONS:
        return bucket(dialect, TIME_DIMENSIONS[name])
    columns: dict[str, ColumnElement[Any]] = {
        "cause": cause_of(), "provider": m.last_provider, "channel": m.channel,
        "campaign": m.campaign_id, "template": m.template, "topic": m.topic,
    }
    return columns[name]


def tallies() -> list[ColumnElement[Any]]:
    """``total`` and one conditional count per outcome, in :data:`COUNTS` order."""
    state = messages.c.state

    def n(cond: ColumnElement[bool], label: str) -> ColumnElement[Any]:
        return func.coalesce(func.sum(case((cond, 1), else_=0)), 0).label(label)

    return [func.count().label("total"), n(state == "delivered", "delivered"),
            n(state.in_(FAILED_STATES), "failed"), n(state == "dead", "dead"),
            n(state == "expired", "expired"), n(state == "suppressed", "suppressed")]


def rate(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def counts(row: Any) -> dict[str, Any]:
    """Counts and rates of one result row carrying the :func:`tallies` columns."""
    return with_rates({name: int(getattr(row, name) or 0) for name in COUNTS})


def with_rates(c: dict[str, int]) -> dict[str, Any]:
    finished = c["delivered"] + c["failed"] + c["suppressed"]
    return {**c, "finished": finished, "pending": c["total"] - finished,
            "failure_rate": rate(c["failed"], finished),
            "suppression_rate": rate(c["suppressed"], finished)}


def group_rows(conn: Connection, filters: Filters, by: Sequence[str], *,
               limit: int = 200) -> tuple[list[dict[str, Any]], bool]:
    """One row per combination of ``by`` values: its key, counts and rates. Time dimensions
    sort chronologically, others by failures; ``True`` when rows were left off."""
    dialect = conn.dialect.name
    dims = [dimension(dialect, name).label(f"k_{name}") for name in by]
    total, _, failed, _, _, suppressed = t = tallies()
    # by the output names: PostgreSQL cannot match a SELECT expression to a GROUP BY copy
    # whose bound parameters are separate placeholders
    q = (select(*dims, *t).where(*filters.where())
         .group_by(*(literal_column(f"k_{name}") for name in by)))
    timed = [d for name, d in zip(by, dims, strict=True) if name in TIME_DIMENSIONS]
    q = q.order_by(*timed) if timed else q.order_by(failed.desc(), suppressed.desc(),
                                                     total.desc())
    rows = conn.execute(q.limit(limit + 1)).all()
    out = []
    for r in rows[:limit]:
        key = {name: _key(name, getattr(r, f"k_{name}")) for name in by}
        out.append({"key": key, **counts(r)})
    return out, len(rows) > limit


def _key(name: str, value: Any) -> Any:
    if name in TIME_DIMENSIONS and value is not None:
        from pushguard.views import rfc3339

        return rfc3339(float(value))
    return value


def totals(conn: Connection, filters: Filters) -> dict[str, Any]:
    return counts(conn.execute(select(*tallies()).where(*filters.where())).one())


def cause_rows(conn: Connection, filters: Filters, *, limit: int = 500) -> list[Any]:
    """``(cause, provider, failed, suppressed, example)`` of every unsent message: the raw
    material of the top causes. ``example`` is the newest message id (ids sort by time)."""
    state = messages.c.state
    # the cause expression, not the bare column: SQLite would otherwise walk the cause index
    # for its order and fetch every row through it
    q = (select(cause_of().label("cause"), messages.c.last_provider.label("provider"),
                func.sum(case((state.in_(FAILED_STATES), 1), else_=0)).label("failed"),
                func.sum(case((state == "suppressed", 1), else_=0)).label("suppressed"),
                func.max(messages.c.id).label("example"))
         .where(*filters.where(), state.in_((*FAILED_STATES, "suppressed")))
         .group_by(literal_column("cause"), literal_column("provider"))
         .order_by(func.count().desc()).limit(limit))
    return list(conn.execute(q))


def campaign_names(conn: Connection, ids: Sequence[str]) -> dict[str, str]:
    wanted = sorted({i for i in ids if i})[:500]
    if not wanted:
        return {}
    q = select(campaigns.c.id, campaigns.c.name).where(campaigns.c.id.in_(wanted))
    return {str(r.id): str(r.name) for r in conn.execute(q)}


def resolve_campaign(conn: Connection, ref: str) -> tuple[str, str] | None:
    """``(id, name)`` of the campaign whose id or name is ``ref``."""
    row = conn.execute(select(campaigns.c.id, campaigns.c.name).where(
        (campaigns.c.id == ref) | (campaigns.c.name == ref))).first()
    return (str(row.id), str(row.name)) if row else None


#: bucket sizes for the time series, smallest first: the first that keeps the series under
#: :data:`MAX_BUCKETS` points is used
BUCKET_SIZES = (("hour", 3600), ("day", 86400), ("week", 7 * 86400), ("30 days", 30 * 86400))
MAX_BUCKETS = 400


def series(conn: Connection, filters: Filters) -> dict[str, Any]:
    """Finished, failed and suppressed messages per time bucket across the window."""
    from pushguard.views import rfc3339

    name, seconds = next(((n, s) for n, s in BUCKET_SIZES
                          if filters.window.seconds / s <= MAX_BUCKETS), BUCKET_SIZES[-1])
    start = bucket(conn.dialect.name, seconds).label("k_start")
    q = (select(start, *tallies()).where(*filters.where())
         .group_by(literal_column("k_start")).order_by(start).limit(MAX_BUCKETS + 1))
    rows = [{"start": rfc3339(float(r.k_start)), **counts(r)} for r in conn.execute(q)]
    return {"size": name, "seconds": seconds, "rows": rows[:MAX_BUCKETS]}


def summed(groups: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The totals of a complete set of groups (saves reading the window once more)."""
    return with_rates({name: sum(int(g[name]) for g in groups) for name in COUNTS})
