"""A post-mortem (:mod:`.postmortem`) as Markdown: the same sections as the HTML report, with
tables instead of charts.

Values from the database are free text (override reasons, lesson notes, incident notes): every
one goes through :func:`text` or :func:`code`, so none can break a table or slip HTML or a link
into whatever renders the Markdown.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from typing import Any

from pushguard.diagnosis.failures import pct

_SPECIAL = re.compile(r"([\\|\[\]`])")


def text(value: Any) -> str:
    """Free text for a paragraph or a table cell: one line, no HTML, no link, no table break."""
    if value is None:
        return ""
    one = " ".join(str(value).split())
    return _SPECIAL.sub(r"\\\1", html.escape(one, quote=False))


def code(value: Any) -> str:
    """An identifier (a cause, a provider, an id) as a code span."""
    if value is None or value == "":
        return ""
    return f"`{' '.join(str(value).replace('`', chr(39)).split())}`"


def table(head: Sequence[str], rows: Iterable[Sequence[str]], *, right: Sequence[int] = ()
          ) -> list[str]:
    """A Markdown table; cells are already escaped."""
    align = ["---:" if i in right else "---" for i in range(len(head))]
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out if len(out) > 2 else ["_None._"]


def counted(cause: dict[str, Any]) -> str:
    """What a root cause's count counts (plain text)."""
    if cause["kind"] == "failure":
        return "messages failed or not sent"
    return str(cause["counted"])


def money(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".") if value else "0"


def as_markdown(r: dict[str, Any]) -> str:
    lines = [f"# Post-mortem: {text(r['title'])}", "",
             f"Generated {text(r['generated_at'])}; covers {text(r['window']['since'])} to "
             f"{text(r['window']['until'])} (UTC).", "", "## Summary", "", text(r["summary"]),
             "", f"**Verdict:** {text(r['verdict'])}", ""]
    lines += _impact(r)
    lines += ["## Timeline", ""] + table(
        ["time (UTC)", "what", "who", "detail"],
        ([text(e["at"]), text(e["kind"]), code(e["actor"]), text(e["text"])]
         for e in r["timeline"])) + [""]
    lines += _causes(r["causes"])
    lines += _preflight(r)
    lines += ["## What was done", ""] + table(
        ["time (UTC)", "action", "who", "detail"],
        ([text(e["at"]), text(e["kind"]), code(e["actor"]), text(e["text"])]
         for e in r["actions"])) + [""]
    lines += _comparison(r.get("comparison"))
    lines += ["## Recommended fixes", ""] + table(
        ["about", "fix", "pre-flight checks that would have caught it"],
        ([code(x["about"]), text(x["fix"]), ", ".join(code(c) for c in x["checks"])
          or "none"] for x in r["recommendations"])) + [""]
    series = r["series"]
    lines += ["## Failure rate over time", "",
              f"Attempts per {series['bucket_seconds']:g} s from {text(series['since'])} "
              f"(buckets without attempts left out).", ""] + table(
        ["bucket start (UTC)", "attempts", "failed", "failure rate"],
        ([text(b["start"]), str(b["attempts"]), str(b["failed"]), pct(b["failure_rate"])]
         for b in series["rows"] if b["attempts"]), right=(1, 2, 3)) + [""]
    return "\n".join(lines)


def _impact(r: dict[str, Any]) -> list[str]:
    i = r["impact"]
    rows = [("messages", str(i["messages"])), ("delivered", str(i["delivered"])),
            ("failed", f"{i['failed']} ({pct(i['failure_rate'])} of those tried)"),
            ("not sent by policy (the pre-send gate)", str(i["not_sent"]))]
    if "skipped" in i:
        rows.append(("recipients skipped before sending", str(i["skipped"])))
    rows += [("deferred by the gate (quiet hours)", str(i["deferred"])),
             ("still pending", str(i["pending"])),
             ("recipients reached", f"{i['reached']} of {i['recipients']}"),
             ("recipients never reached (their messages failed)", str(i["unreached"])),
             ("recipients not sent to by policy", str(i.get("withheld", 0))),
             (f"unsubscribed since {i['since']}", str(i["unsubscribed"])),
             (f"complained since {i['since']}", str(i["complained"])),
             ("cost (delivered x each provider's cost)", money(i["cost"]["total"]))]
    out = ["## Impact", ""] + table(["", "count"], ([text(k), v] for k, v in rows),
                                    right=(1,)) + [""]
    radius = i.get("blast_radius")
    if radius:
        out += ["### Blast radius", "",
                f"{radius['messages']} failed messages to {radius['recipients']} recipients "
                "in the incident's window.", ""] + table(
            ["kind", "name", "messages"],
            [[k, code(x.get(k) or x.get("campaign")), str(x["messages"])]
             for k in ("campaign", "channel", "provider")
             for x in radius[f"{k}s"]], right=(2,)) + [""]
        replayed = i.get("replayed") or {}
        if replayed:
            out += ["Replays: " + ", ".join(f"{n} {text(s)}" for s, n in
                                             sorted(replayed.items())) + ".", ""]
    out += ["### Cost by provider", ""] + table(
        ["provider", "messages", "delivered", "cost each", "cost"],
        ([code(p["provider"]), str(p["messages"]), str(p["delivered"]),
          "not set" if p["cost_each"] is None else money(p["cost_each"]), money(p["cost"])]
         for p in i["cost"]["providers"]), right=(1, 2, 3, 4)) + [""]
    return out


def _causes(causes: list[dict[str, Any]]) -> list[str]:
    out = ["## Root causes", ""] + table(
        ["cause", "kind", "count", "providers", "provider codes"],
        ([code(c["cause"]), "failure" if c["kind"] == "failure" else "pre-flight override",
          f"{c['count']} {text(counted(c))}",
          ", ".join(f"{code(p['provider'])} ({p['count']})" for p in c["providers"]),
          ", ".join(f"{code(k['code'])} ({k['attempts']})" for k in c["codes"])]
         for c in causes), right=()) + [""]
    for c in causes:
        if c["kind"] == "failure":
            out += [f"### {code(c['cause'])}: {c['failed']} failed, {c['suppressed']} not "
                    "sent", ""]
        else:
            out += [f"### {code(c['cause'])}: {text(c['problem'])}", "",
                    f"- Overridden by {code(c['overridden_by'])} at "
                    f"{text(c['overridden_at'])}: \"{text(c['reason'])}\"",
                    f"- {c['count']} {text(c['counted'])}"
                    + (f" (template {code(c['template'])})" if c.get("template") else "")]
        out += [f"- Fix: {text(c['fix'])}"]
        if c["examples"]:
            out.append("- Example messages: " + ", ".join(code(x) for x in c["examples"]))
        out.append(f"- Pre-flight: {text(c['checks']['verdict'])}")
        for le in c.get("lessons") or []:
            out.append(f"- Lesson ({text(le['kind'])} {code(le['subject'])}, "
                       f"{text(le['author'])}): {text(le['note'])}")
        out.append("")
    return out


def _preflight(r: dict[str, Any]) -> list[str]:
    p, o = r.get("preflight"), r.get("override")
    if not p and not o:
        if r["kind"] == "campaign":
            return ["## Pre-flight", "", "No pre-flight was recorded for this campaign.", ""]
        return []
    out = ["## Pre-flight", ""]
    if p:
        predicted = p.get("predicted") or {}
        out += [f"Checked at {text(p.get('checked_at'))} for {p.get('recipients')} recipients: "
                f"predicted delivery rate {pct(predicted.get('delivery_rate'))}, "
                f"{p.get('blocking')} blocking finding(s).", ""]
        out += table(["finding", "severity", "count", "problem"],
                     ([code(f["code"]), text(f["severity"]), str(f["count"]),
                       text(f["problem"])] for f in p["findings"]), right=(2,)) + [""]
    if o:
        codes = ", ".join(code(f.get("code")) for f in o.get("findings") or [])
        out += [f"**Override:** {code(o.get('by'))} at {text(o.get('at'))} sent despite "
                f"{codes}: \"{text(o.get('reason'))}\"", ""]
    return out


def _comparison(c: dict[str, Any] | None) -> list[str]:
    out = ["## Before and after the fix", ""]
    if not c:
        return out + ["No fix was applied (no retry round, replay or action).", ""]
    out += [f"Fix: {text(c['fix'])} at {text(c['at'])}.", "", text(c["summary"]), ""]
    out += table(["", "failed", "tried", "failure rate"],
                 ([text(label), str(side["count"]), str(side["of"]), pct(side["rate"])]
                  for label, side in zip(c["labels"], (c["a"], c["b"]), strict=True)),
                 right=(1, 2, 3)) + [""]
    return out
