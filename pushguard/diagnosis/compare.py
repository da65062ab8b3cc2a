"""``pushguard failures compare``: did the fix work, or is the difference noise?

Two sets of messages (two windows, two campaigns) are compared overall and per cause: the
share of finished messages that failed (or were suppressed) with that cause in each, the
difference, and a two-proportion z-test. The test is only as good as its normal
approximation, so when either side expects fewer than 5 failures or 5 successes the answer is
"too small a sample to tell", not a p-value that looks precise and is not. Per-cause p-values
are Bonferroni-adjusted over the causes tested, because testing sixteen causes at 95% finds a
"significant" one by chance alone about half the time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pushguard.diagnosis import analytics, timespan
from pushguard.diagnosis.analytics import Filters
from pushguard.diagnosis.failures import filters_for, pct, top_causes
from pushguard.exceptions import InputError

if TYPE_CHECKING:
    from pushguard.store.sql import SQLStore

ALPHA = 0.05
MIN_EXPECTED = 5


@dataclass(frozen=True, slots=True)
class Side:
    label: str
    filters: Filters


def side(store: SQLStore, span: str | None, campaign: str | None, *,
         fields: tuple[str, str], common: dict[str, str | None] | None = None,
         now: float | None = None) -> Side:
    """One side from user input: a window (``A..B``), a campaign (id or name), or both;
    ``fields`` name them in errors (``a``/``campaign_a``, ``--a``/``--campaign-a``)."""
    if span is None and campaign is None:
        raise InputError(fields[0], f"give a window like 2026-11-01..2026-11-07, or "
                                    f"{fields[1]}")
    now = time.time() if now is None else now
    window = timespan.span(span, fields[0], now=now) if span else timespan.Window(0.0, now)
    label = ", ".join(x for x in (span, f"campaign {campaign}" if campaign else None) if x)
    c = common or {}
    return Side(label, filters_for(store, window, campaign=campaign, campaign_field=fields[1],
                                   channel=c.get("channel"), provider=c.get("provider"),
                                   topic=c.get("topic"), template=c.get("template")))


def two_proportions(x1: int, n1: int, x2: int, n2: int) -> dict[str, Any]:
    """``x1`` of ``n1`` against ``x2`` of ``n2``: rates, difference (B - A), z, two-sided p
    and a verdict: ``significant``, ``noise``, ``too_small``, ``no_data``, or ``none`` /
    ``all`` when neither / every message of both sides counts."""
    out: dict[str, Any] = {"a": {"count": x1, "of": n1, "rate": analytics.rate(x1, n1)},
                           "b": {"count": x2, "of": n2, "rate": analytics.rate(x2, n2)},
                           "difference": None, "z": None, "p_value": None}
    if n1 == 0 or n2 == 0:
        return {**out, "verdict": "no_data"}
    out["difference"] = round(x2 / n2 - x1 / n1, 6)
    if x1 == 0 and x2 == 0:
        return {**out, "verdict": "none"}
    if x1 == n1 and x2 == n2:
        return {**out, "verdict": "all"}
    pooled = (x1 + x2) / (n1 + n2)
    expected = min(n * q for n in (n1, n2) for q in (pooled, 1 - pooled))
    if expected < MIN_EXPECTED:
        return {**out, "verdict": "too_small"}
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (x2 / n2 - x1 / n1) / se
    p = math.erfc(abs(z) / math.sqrt(2))
    return {**out, "z": round(z, 4), "p_value": p,
            "verdict": "significant" if p < ALPHA else "noise"}


def wording(t: dict[str, Any], what: str = "failure rate") -> str:
    a, b = t["a"], t["b"]
    head = (f"{what}: A {pct(a['rate'])} ({a['count']}/{a['of']}) -> "
            f"B {pct(b['rate'])} ({b['count']}/{b['of']})")
    v = t["verdict"]
    if v == "no_data":
        side = "A" if a["of"] == 0 else "B"
        return f"{head}; no finished message in {side}, nothing to compare"
    if v in ("none", "all"):
        return f"{head}; {v} in both, no difference"
    points = t["difference"] * 100
    move = f"{'up' if points > 0 else 'down'} {abs(points):.1f} points" if points else "no change"
    if v == "too_small":
        return (f"{head}, {move}; too small a sample to tell (each side needs at least "
                f"{MIN_EXPECTED} expected failures and {MIN_EXPECTED} expected successes)")
    p = t.get("p_adjusted", t["p_value"])
    shown = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
    if v == "significant":
        return f"{head}, {move}; significant at 95% ({shown})"
    return f"{head}, {move}; within noise ({shown})"


def compare_report(store: SQLStore, a: Side, b: Side) -> dict[str, Any]:
    sides = []
    with store._read() as conn:
        for side in (a, b):
            filters = analytics.planned(conn, side.filters)
            totals = analytics.totals(conn, filters)
            causes = top_causes(analytics.cause_rows(conn, filters), top=100)
            sides.append((totals, {(k, c["cause"]): int(c[k]) for c in causes
                                   for k in ("failed", "suppressed") if c[k]}))
    (ta, ca), (tb, cb) = sides
    overall = two_proportions(ta["failed"], ta["finished"], tb["failed"], tb["finished"])
    policy = two_proportions(ta["suppressed"], ta["finished"], tb["suppressed"],
                             tb["finished"])
    per_cause = []
    for kind, cause in sorted(set(ca) | set(cb)):
        t = two_proportions(ca.get((kind, cause), 0), ta["finished"],
                            cb.get((kind, cause), 0), tb["finished"])
        per_cause.append({"cause": cause, "outcome": kind, **t})
    _bonferroni(per_cause)
    per_cause.sort(key=lambda r: (r["p_value"] is None, r["p_value"] or 0.0, r["cause"]))
    for r in per_cause:
        r["summary"] = wording(r, f"{r['cause']} ({r['outcome']})")
    overall["summary"] = wording(overall)
    policy["summary"] = wording(policy, "suppressed by policy")
    return {"verdict": _verdict(overall, per_cause),
            "a": {"label": a.label, **a.filters.as_dict(), "totals": ta},
            "b": {"label": b.label, **b.filters.as_dict(), "totals": tb},
            "overall": overall, "suppressed": policy, "causes": per_cause}


def _bonferroni(rows: Sequence[dict[str, Any]]) -> None:
    tested = [r for r in rows if r["p_value"] is not None]
    for r in tested:
        r["p_adjusted"] = min(1.0, r["p_value"] * len(tested))
        r["verdict"] = "significant" if r["p_adjusted"] < ALPHA else "noise"


def _verdict(overall: dict[str, Any], causes: Sequence[dict[str, Any]]) -> str:
    summary = str(overall["summary"])
    text = summary[0].upper() + summary[1:] + "."
    moved = [r for r in causes if r["verdict"] == "significant"]
    if moved:
        text += " Causes that moved beyond noise: " + "; ".join(
            f"{r['cause']} {'up' if r['difference'] > 0 else 'down'} "
            f"{abs(r['difference']) * 100:.1f} points" for r in moved[:5]) + "."
    return text


def as_text(report: dict[str, Any]) -> str:
    lines = [f"A: {_side(report['a'])}", f"B: {_side(report['b'])}", "", report["verdict"], "",
             f"  {report['overall']['summary']}", f"  {report['suppressed']['summary']}"]
    if report["causes"]:
        lines += ["", "Per cause (p-values adjusted for the number of causes tested):"]
        lines += [f"  {r['summary']}" for r in report["causes"]]
    return "\n".join(lines)


def _side(s: dict[str, Any]) -> str:
    when = "" if s["since"].startswith("1970-01-01T00:00:00") else \
        f" ({s['since']} to {s['until']})"
    return f"{s['label']}{when}: {s['totals']['finished']} finished"
