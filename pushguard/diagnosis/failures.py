"""``pushguard failures`` and ``GET /v1/failures``: the failure report.

What an operator asks after "something is wrong": how much failed, of what, since when, and
what to do. The report leads with a one-paragraph verdict, then the groups asked for (``by``),
the top causes with the taxonomy's fix and the lessons left by whoever met them before, and a
time series to see when it started.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pushguard import taxonomy
from pushguard.diagnosis import analytics
from pushguard.diagnosis.analytics import DIMENSIONS, Filters
from pushguard.diagnosis.lessons import Lessons, Subject, as_lines, notes_json
from pushguard.diagnosis.timespan import Window
from pushguard.exceptions import InputError

if TYPE_CHECKING:
    from pushguard.store.sql import SQLStore

TOP = 10
#: by which dimension a group's key names something lessons can be about
_LESSON_KIND = {"cause": "cause", "provider": "provider", "template": "template"}


def parse_by(values: Sequence[str], field: str = "by") -> list[str]:
    """``["cause", "provider"]`` from repeated and/or comma-separated values."""
    out: list[str] = []
    for value in values:
        for name in (v.strip() for v in value.split(",")):
            if name not in DIMENSIONS:
                raise InputError(field, f"unknown dimension {name!r}; one of: "
                                        f"{', '.join(DIMENSIONS)}")
            if name not in out:
                out.append(name)
    if len(out) > 3:
        raise InputError(field, "at most 3 dimensions at once")
    return out or ["cause"]


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def top_causes(rows: Sequence[Any], top: int = TOP) -> list[dict[str, Any]]:
    """Unsent messages per cause, most failures first (then most suppressed), each with its
    providers and one example."""
    by_cause: dict[str, dict[str, Any]] = {}
    providers: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        name = r.cause or "UNKNOWN"
        c = by_cause.setdefault(name, {"cause": name, "failed": 0, "suppressed": 0,
                                       "example": r.example})
        c["failed"] += int(r.failed or 0)
        c["suppressed"] += int(r.suppressed or 0)
        c["example"] = max(c["example"], r.example)
        if r.provider:
            providers[name][r.provider] += int(r.failed or 0) + int(r.suppressed or 0)
    ranked = sorted(by_cause.values(), key=lambda c: (-c["failed"], -c["suppressed"],
                                                      c["cause"]))[:top]
    for c in ranked:
        cause = taxonomy.get(c["cause"])
        named = sorted(providers[c["cause"]].items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        c["count"] = c["failed"] + c["suppressed"]
        c["providers"] = [{"provider": p, "count": n} for p, n in named]
        c["transient"] = cause.transient
        c["action"] = cause.action.value
        c["fix"] = taxonomy.describe(cause, provider=named[0][0] if named else "")[1]
    return ranked


def failures_report(store: SQLStore, filters: Filters, by: Sequence[str], *,
                    top: int = TOP, limit: int = 200) -> dict[str, Any]:
    """The whole report as JSON-ready data (what the API returns and ``--json`` prints)."""
    with store._read() as conn:
        filters = analytics.planned(conn, filters)
        groups, truncated = analytics.group_rows(conn, filters, by, limit=limit)
        overall = (analytics.totals(conn, filters) if truncated
                   else analytics.summed(groups))
        causes = top_causes(analytics.cause_rows(conn, filters), top)
        buckets = analytics.series(conn, filters)
        names = analytics.campaign_names(
            conn, [g["key"]["campaign"] for g in groups if g["key"].get("campaign")])
        subjects: set[Subject] = {("cause", c["cause"]) for c in causes}
        for c in causes:
            subjects.update(("provider", p["provider"]) for p in c["providers"])
        for g in groups:
            for dim, kind in _LESSON_KIND.items():
                if g["key"].get(dim):
                    subjects.add((kind, str(g["key"][dim])))
        found = Lessons(store).about(subjects, conn)
    for c in causes:
        c["lessons"] = notes_json(found, ("cause", c["cause"]),
                                  *(("provider", p["provider"]) for p in c["providers"]))
    for g in groups:
        if g["key"].get("campaign") in names:
            g["campaign_name"] = names[g["key"]["campaign"]]
        g["lessons"] = notes_json(found, *((kind, str(g["key"][dim]))
                                           for dim, kind in _LESSON_KIND.items()
                                           if g["key"].get(dim)))
    return {"verdict": verdict(overall, causes), "filters": filters.as_dict(), "by": list(by),
            "totals": overall, "groups": groups, "truncated": truncated,
            "top_causes": causes, "series": buckets}


def verdict(t: dict[str, Any], causes: Sequence[dict[str, Any]]) -> str:
    if t["total"] == 0:
        return "No message was created in this window (with these filters)."
    if t["finished"] == 0:
        return f"{t['total']} messages, none finished yet: all still pending."
    text = (f"{t['finished']} of {t['total']} messages finished: {t['delivered']} delivered, "
            f"{t['failed']} failed ({pct(t['failure_rate'])}), {t['suppressed']} not sent by "
            f"policy ({pct(t['suppression_rate'])})")
    text += f"; {t['pending']} still pending." if t["pending"] else "."
    failing = [c for c in causes if c["failed"]]
    if failing:
        c = failing[0]
        via = f" via {c['providers'][0]['provider']}" if c["providers"] else ""
        text += (f" Most failures: {c['cause']} ({c['failed']} of {t['failed']}{via}). "
                 f"Fix: {c['fix']}")
    elif t["failed"] == 0:
        text += " Nothing failed."
    return text


def as_text(report: dict[str, Any]) -> str:
    f = report["filters"]
    lines = [f"Failures from {f['since']} to {f['until']}", "", report["verdict"], ""]
    dims = report["by"]
    lines.append(f"By {', '.join(dims)}:")
    header = ["  " + " / ".join(dims), "finished", "failed", "rate", "suppressed", "pending"]
    rows = [[" " + " / ".join(str(g["key"][d]) if g["key"][d] is not None else "-"
                              for d in dims)
             + (f" ({g['campaign_name']})" if g.get("campaign_name") else ""),
             str(g["finished"]), str(g["failed"]), pct(g["failure_rate"]),
             str(g["suppressed"]), str(g["pending"])] for g in report["groups"]]
    table = _table(header, rows)
    lines.append(table[0])
    for row, g in zip(table[1:], report["groups"], strict=True):
        lines.append(row)
        lines += _lesson_lines(g["lessons"], "    ")
    if report["truncated"]:
        lines.append("  (more groups left off; narrow the filters)")
    if report["top_causes"]:
        lines += ["", "Top causes:"]
        for c in report["top_causes"]:
            via = ", ".join(f"{p['provider']} {p['count']}" for p in c["providers"])
            lines.append(f"  {c['cause']}: {c['failed']} failed, {c['suppressed']} suppressed"
                         + (f" (via {via})" if via else "") + f"; e.g. {c['example']}")
            lines.append(f"    fix: {c['fix']}")
            lines += _lesson_lines(c["lessons"], "    ")
    s = report["series"]
    if s["rows"]:
        lines += ["", f"Per {s['size']}:"]
        lines += _table(["  start", "finished", "failed", "rate", "suppressed"],
                        [[" " + str(r["start"]), str(r["finished"]), str(r["failed"]),
                          pct(r["failure_rate"]), str(r["suppressed"])] for r in s["rows"]])
    return "\n".join(lines)


def _lesson_lines(items: Sequence[dict[str, Any]], indent: str) -> list[str]:
    return as_lines(items, indent + "lesson ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                      for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
            for r in [header, *rows]]


def filters_for(store: SQLStore, window: Window, *, campaign: str | None = None,
                channel: str | None = None, provider: str | None = None,
                topic: str | None = None, template: str | None = None,
                campaign_field: str = "campaign") -> Filters:
    """Filters from user input; a campaign is named by id or name (InputError if unknown)."""
    campaign_id = None
    if campaign is not None:
        with store._read() as conn:
            found = analytics.resolve_campaign(conn, campaign)
        if found is None:
            raise InputError(campaign_field, f"no campaign {campaign!r} (give its id or name)")
        campaign_id = found[0]
    return Filters(window, campaign=campaign_id, channel=channel, provider=provider,
                   topic=topic, template=template)
