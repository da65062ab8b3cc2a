"""A post-mortem (:mod:`.postmortem`) as one self-contained HTML page, readable at a glance.

Inline CSS, and charts drawn here as inline SVG: the failure rate over time, the root causes as
horizontal bars, the outcome breakdown. No script, no external asset (a Content-Security-Policy
meta tag says so to the browser), so the file can be mailed or attached to a ticket as it is.
Every value from the database goes through Jinja2's autoescaping or :func:`markupsafe.escape`.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, StrictUndefined
from markupsafe import Markup, escape

from pushguard.diagnosis.failures import pct
from pushguard.diagnosis.report_md import counted, money

WIDTH = 720
RED, AMBER, GREEN, GREY, BLUE = "#c62828", "#ef6c00", "#2e7d32", "#9e9e9e", "#1565c0"
OUTCOME_COLOURS = {"delivered": GREEN, "failed": RED, "not sent (policy)": AMBER,
                   "pending": BLUE, "skipped before sending": GREY}


def _svg(name: str, label: str, height: int, body: list[str]) -> Markup:
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" id="chart-{name}" class="chart" '
            f'role="img" aria-label="{escape(label)}" viewBox="0 0 {WIDTH} {height}" '
            f'width="{WIDTH}" height="{height}">')
    return Markup(head + f"<title>{escape(label)}</title>" + "".join(body) + "</svg>")


def _text(x: float, y: float, value: Any, *, anchor: str = "start", cls: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"'
            + (f' class="{cls}"' if cls else "") + f">{escape(value)}</text>")


def _clock(stamp: str) -> str:
    """``12:00:01.5`` of an RFC 3339 time (the date is in the chart's caption)."""
    t = stamp[11:23].rstrip("0").rstrip(".")
    return t if len(t) > 5 else stamp[11:19]


def rate_chart(series: dict[str, Any]) -> Markup:
    """Per time bucket: the attempts (grey, scaled to the busiest bucket) and the share of
    them that failed (red, 0 to 100 %)."""
    height, left, right, top, bottom = 230, 46, 14, 16, 46
    pw, ph = WIDTH - left - right, height - top - bottom
    rows = series["rows"]
    peak = max((b["attempts"] for b in rows), default=0)
    body = []
    for frac in (0.0, 0.5, 1.0):
        y = top + ph * (1 - frac)
        body.append(f'<line x1="{left}" x2="{WIDTH - right}" y1="{y:.1f}" y2="{y:.1f}" '
                    f'class="grid"/>')
        body.append(_text(left - 6, y + 4, f"{frac:.0%}", anchor="end", cls="axis"))
    slot = pw / max(len(rows), 1)
    for i, b in enumerate(rows):
        if not b["attempts"]:
            continue
        x = left + i * slot
        vh = ph * b["attempts"] / peak
        fh = ph * (b["failure_rate"] or 0.0)
        tip = escape(f"{b['start']}: {b['attempts']} attempts, {b['failed']} failed "
                     f"({pct(b['failure_rate'])})")
        body.append(f'<g class="bucket"><title>{tip}</title>'
                    f'<rect x="{x + slot * 0.08:.1f}" y="{top + ph - vh:.1f}" '
                    f'width="{max(slot * 0.84, 1):.1f}" height="{vh:.1f}" fill="#e0e0e0"/>'
                    f'<rect x="{x + slot * 0.22:.1f}" y="{top + ph - fh:.1f}" '
                    f'width="{max(slot * 0.56, 1):.1f}" height="{max(fh, 0.0):.1f}" '
                    f'fill="{RED}"/></g>')
    if rows:
        for i in sorted({0, len(rows) // 2, len(rows) - 1}):
            body.append(_text(left + (i + 0.5) * slot, top + ph + 16,
                              _clock(rows[i]["start"]), anchor="middle", cls="axis"))
    if not peak:
        body.append(_text(WIDTH / 2, top + ph / 2, "No attempts in this window",
                          anchor="middle", cls="empty"))
    body.append(f'<rect x="{left}" y="{height - 16}" width="10" height="10" fill="#e0e0e0"/>')
    body.append(_text(left + 14, height - 7, f"attempts (busiest bucket: {peak})",
                      cls="legend"))
    body.append(f'<rect x="{left + 250}" y="{height - 16}" width="10" height="10" '
                f'fill="{RED}"/>')
    body.append(_text(left + 264, height - 7, f"failure rate, per {series['bucket_seconds']:g}"
                      " s", cls="legend"))
    return _svg("rate", "Failure rate over time", height, body)


def causes_chart(causes: list[dict[str, Any]]) -> Markup:
    """One bar per root cause: failures in red, pre-flight findings sent despite in amber."""
    row, top, label = 28, 8, 250
    height = top * 2 + row * max(len(causes), 1)
    peak = max((c["count"] for c in causes), default=0) or 1
    body = []
    for i, c in enumerate(causes):
        y = top + i * row
        w = (WIDTH - label - 70) * c["count"] / peak
        name = str(c["cause"])
        body.append(f'<g class="cause"><title>{escape(name)}: {c["count"]} '
                    f'{escape(counted(c))}</title>')
        body.append(_text(label - 8, y + 18, name if len(name) <= 34 else name[:33] + "…",
                          anchor="end", cls="label"))
        body.append(f'<rect x="{label}" y="{y + 5}" width="{max(w, 2):.1f}" height="{row - 10}"'
                    f' fill="{RED if c["kind"] == "failure" else AMBER}"/>')
        body.append(_text(label + max(w, 2) + 6, y + 18, c["count"], cls="value") + "</g>")
    if not causes:
        body.append(_text(WIDTH / 2, top + 18, "Nothing failed", anchor="middle",
                          cls="empty"))
    return _svg("causes", "Root causes", height, body)


def outcomes_chart(outcomes: list[dict[str, Any]]) -> Markup:
    """One stacked bar of every message's outcome, with a legend."""
    height, left = 104, 10
    total = sum(o["count"] for o in outcomes)
    body = []
    x = float(left)
    for o in outcomes:
        if not o["count"]:
            continue
        w = (WIDTH - 2 * left) * o["count"] / total
        body.append(f'<rect x="{x:.1f}" y="8" width="{w:.1f}" height="30" '
                    f'fill="{OUTCOME_COLOURS.get(o["outcome"], GREY)}">'
                    f'<title>{escape(o["outcome"])}: {o["count"]}</title></rect>')
        x += w
    if not total:
        body.append(f'<rect x="{left}" y="8" width="{WIDTH - 2 * left}" height="30" '
                    f'fill="#eeeeee"/>')
        body.append(_text(WIDTH / 2, 28, "No messages", anchor="middle", cls="empty"))
    lx, ly = float(left), 52.0
    for o in outcomes:
        share = f" ({o['count'] / total:.0%})" if total else ""
        label = f"{o['outcome']} {o['count']}{share}"
        room = 30 + 7.2 * len(label)  # roughly, at 12 px
        if lx + room > WIDTH:
            lx, ly = float(left), ly + 22
        body.append(f'<rect x="{lx:.1f}" y="{ly:.1f}" width="10" height="10" '
                    f'fill="{OUTCOME_COLOURS.get(o["outcome"], GREY)}"/>')
        body.append(_text(lx + 14, ly + 9, label, cls="legend"))
        lx += room
    return _svg("outcomes", "Outcome of every message", height, body)


def tone(verdict: str) -> str:
    if verdict.startswith(("clean", "recovered")):
        return "good"
    if verdict.startswith("partly"):
        return "warn"
    return "bad" if verdict.startswith("not recovered") else "neutral"


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Post-mortem: {{ r.title }}</title>
<style>
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#212121;
 background:#fafafa;margin:0}
main{max-width:980px;margin:0 auto;padding:24px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 10px;
 border-bottom:1px solid #e0e0e0;padding-bottom:4px}h3{font-size:16px;margin:16px 0 6px}
.meta{color:#616161;margin:0}
.summary{border-left:6px solid #9e9e9e;background:#fff;padding:12px 16px;margin:18px 0;
 box-shadow:0 1px 2px rgba(0,0,0,.08)}
.summary.good{border-color:#2e7d32}.summary.warn{border-color:#ef6c00}
.summary.bad{border-color:#c62828}
.verdict{font-weight:600;font-size:16px;margin:0 0 6px}
.figures{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.figure{background:#fff;padding:10px 14px;min-width:120px;
 box-shadow:0 1px 2px rgba(0,0,0,.08)}
.figure b{display:block;font-size:22px}.figure span{color:#616161;font-size:13px}
.panel{background:#fff;padding:12px;box-shadow:0 1px 2px rgba(0,0,0,.08);overflow-x:auto}
svg.chart{display:block;max-width:100%;height:auto}
svg .grid{stroke:#eeeeee}svg text{font:12px system-ui,sans-serif;fill:#424242}
svg .label{font-weight:600}svg .empty{fill:#757575;font-style:italic}
table{border-collapse:collapse;width:100%;background:#fff;margin:6px 0 12px;font-size:14px}
th,td{border-bottom:1px solid #eeeeee;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
code{font:13px ui-monospace,SFMono-Regular,Menlo,monospace;background:#f1f1f1;
 padding:1px 4px;border-radius:3px;overflow-wrap:anywhere}
.cause{background:#fff;padding:8px 14px;margin:10px 0;border-left:4px solid #c62828;
 box-shadow:0 1px 2px rgba(0,0,0,.08)}
.cause.preflight{border-color:#ef6c00}.cause ul{margin:4px 0;padding-left:20px}
.lesson{white-space:pre-wrap}td.t,td.w code{white-space:nowrap}
</style></head>
<body><main>
<header><h1>Post-mortem: {{ r.title }}</h1>
<p class="meta">Generated {{ r.generated_at }} &middot; covers {{ r.window.since }} to
{{ r.window.until }} (UTC)</p></header>

<section class="summary {{ tone }}" id="summary">
<p class="verdict">Verdict: {{ r.verdict }}</p>
<p>{{ r.summary }}</p></section>

<section class="figures" id="figures">
{% for label, value in figures %}<div class="figure"><b>{{ value }}</b>
<span>{{ label }}</span></div>{% endfor %}
</section>

<h2>Impact</h2>
<div class="panel">{{ charts.outcomes }}</div>
<table id="impact"><tbody>
{% for label, value in impact %}<tr><th>{{ label }}</th><td class="n">{{ value }}</td></tr>
{% endfor %}</tbody></table>
{% if radius %}<h3>Blast radius</h3>
<table><thead><tr><th>kind</th><th>name</th><th>messages</th></tr></thead><tbody>
{% for kind, name, n in radius %}<tr><td>{{ kind }}</td><td><code>{{ name }}</code></td>
<td class="n">{{ n }}</td></tr>{% endfor %}</tbody></table>{% endif %}
<h3>Cost by provider</h3>
<table><thead><tr><th>provider</th><th>messages</th><th>delivered</th><th>cost each</th>
<th>cost</th></tr></thead><tbody>
{% for p in r.impact.cost.providers %}<tr><td><code>{{ p.provider }}</code></td>
<td class="n">{{ p.messages }}</td><td class="n">{{ p.delivered }}</td>
<td class="n">{{ "not set" if p.cost_each is none else money(p.cost_each) }}</td>
<td class="n">{{ money(p.cost) }}</td></tr>
{% else %}<tr><td colspan="5">No message reached a provider.</td></tr>{% endfor %}
</tbody></table>

<h2>Failure rate over time</h2>
<div class="panel">{{ charts.rate }}</div>

<h2>Root causes</h2>
<div class="panel">{{ charts.causes }}</div>
{% for c in r.causes %}
<article class="cause {{ c.kind }}">
<h3><code>{{ c.cause }}</code> &mdash; {{ c.count }} {{ counted(c) }}</h3>
<ul>
{% if c.kind == "preflight" %}<li>{{ c.problem }}</li>
<li>Overridden by <code>{{ c.overridden_by }}</code> at {{ c.overridden_at }}:
&ldquo;{{ c.reason }}&rdquo;</li>{% else %}
<li>{{ c.failed }} failed, {{ c.suppressed }} not sent{% if c.providers %}; providers:
{% for p in c.providers %}<code>{{ p.provider }}</code> ({{ p.count }}){{ ", " if not loop.last }}
{% endfor %}{% endif %}</li>
{% if c.codes %}<li>Provider codes: {% for k in c.codes %}<code>{{ k.code }}</code>
({{ k.attempts }} attempts){{ ", " if not loop.last }}{% endfor %}</li>{% endif %}{% endif %}
<li>Fix: {{ c.fix }}</li>
{% if c.examples %}<li>Example messages: {% for x in c.examples %}<code>{{ x }}</code>
{% endfor %}</li>{% endif %}
<li>Pre-flight: {{ c.checks.verdict }}</li>
{% for le in c.lessons %}<li class="lesson">Lesson ({{ le.kind }} <code>{{ le.subject }}</code>,
{{ le.author }}): {{ le.note }}</li>{% endfor %}
</ul></article>
{% else %}<p>Nothing failed.</p>{% endfor %}

<h2>Timeline</h2>
{{ events(r.timeline) }}

{% if r.preflight or r.override or r.kind == "campaign" %}<h2>Pre-flight</h2>
{% if r.preflight %}<p>Checked at {{ r.preflight.checked_at }} for
{{ r.preflight.recipients }} recipients: predicted delivery rate
{{ pct((r.preflight.predicted or {}).get("delivery_rate")) }}, {{ r.preflight.blocking }} blocking
finding(s).</p>
<table><thead><tr><th>finding</th><th>severity</th><th>count</th><th>problem</th></tr>
</thead><tbody>{% for f in r.preflight.findings %}<tr><td><code>{{ f.code }}</code></td>
<td>{{ f.severity }}</td><td class="n">{{ f.count }}</td><td>{{ f.problem }}</td></tr>
{% else %}<tr><td colspan="4">No finding.</td></tr>{% endfor %}</tbody></table>
{% else %}<p>No pre-flight was recorded.</p>{% endif %}
{% if r.override %}<p id="override"><b>Override:</b> <code>{{ r.override.by }}</code> at
{{ r.override.at }} sent despite {% for f in r.override.get("findings") or [] %}
<code>{{ f.code }}</code>{{ ", " if not loop.last }}{% endfor %}:
&ldquo;{{ r.override.reason }}&rdquo;</p>{% endif %}{% endif %}

<h2>What was done</h2>
{{ events(r.actions) }}

<h2>Before and after the fix</h2>
{% if r.comparison %}<p>Fix: {{ r.comparison.fix }} at {{ r.comparison.at }}.</p>
<p>{{ r.comparison.summary }}</p>
<table><thead><tr><th></th><th>failed</th><th>tried</th><th>failure rate</th></tr></thead>
<tbody>{% for label, side in sides %}<tr><th>{{ label }}</th><td class="n">{{ side.count }}</td>
<td class="n">{{ side.of }}</td><td class="n">{{ pct(side.rate) }}</td></tr>{% endfor %}
</tbody></table>
{% else %}<p>No fix was applied (no retry round, replay or action).</p>{% endif %}

<h2>Recommended fixes</h2>
<table><thead><tr><th>about</th><th>fix</th><th>pre-flight checks that would have caught it</th>
</tr></thead><tbody>{% for x in r.recommendations %}<tr>
<td class="w"><code>{{ x.about }}</code></td><td>{{ x.fix }}</td>
<td>{% for k in x.checks %}<code>{{ k }}</code> {% else %}none
{% endfor %}</td></tr>{% else %}<tr><td colspan="3">Nothing to fix.</td></tr>{% endfor %}
</tbody></table>
</main></body></html>
"""

EVENTS = """<table><thead><tr><th>time (UTC)</th><th>what</th><th>who</th><th>detail</th></tr>
</thead><tbody>{% for e in rows %}<tr><td class="t">{{ e.at }}</td><td>{{ e.kind }}</td>
<td class="w"><code>{{ e.actor }}</code></td><td>{{ e.text }}</td></tr>
{% else %}<tr><td colspan="4">Nothing recorded.</td></tr>{% endfor %}</tbody></table>"""

_ENV = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True,
                   lstrip_blocks=True)
_PAGE = _ENV.from_string(PAGE)
_EVENTS = _ENV.from_string(EVENTS)


def _events(rows: list[dict[str, Any]]) -> Markup:
    return Markup(_EVENTS.render(rows=rows))


def as_html(r: dict[str, Any]) -> str:
    i = r["impact"]
    figures = [("delivered", i["delivered"]), ("failed", i["failed"]),
               ("not sent by policy", i["not_sent"]),
               ("recipients reached", f"{i['reached']} / {i['recipients']}"),
               ("failure rate", pct(i["failure_rate"])), ("cost", money(i["cost"]["total"]))]
    impact = [("messages", i["messages"]), ("delivered", i["delivered"]),
              ("failed", f"{i['failed']} ({pct(i['failure_rate'])} of those tried)"),
              ("not sent by policy (the pre-send gate)", i["not_sent"])]
    if "skipped" in i:
        impact.append(("recipients skipped before sending", i["skipped"]))
    impact += [("deferred by the gate (quiet hours)", i["deferred"]),
               ("still pending", i["pending"]),
               ("recipients reached", f"{i['reached']} of {i['recipients']}"),
               ("recipients never reached (their messages failed)", i["unreached"]),
               ("recipients not sent to by policy", i.get("withheld", 0)),
               (f"unsubscribed since {i['since']}", i["unsubscribed"]),
               (f"complained since {i['since']}", i["complained"]),
               ("cost (delivered x each provider's cost)", money(i["cost"]["total"]))]
    b = i.get("blast_radius")
    radius = [(k, x.get(k), x["messages"]) for k in ("campaign", "channel", "provider")
              for x in b[f"{k}s"]] if b else []
    c = r.get("comparison")
    sides = list(zip(c["labels"], (c["a"], c["b"]), strict=True)) if c else []
    charts = {"rate": rate_chart(r["series"]), "causes": causes_chart(r["causes"]),
              "outcomes": outcomes_chart(r["outcomes"])}
    return _PAGE.render(r=r, tone=tone(r["verdict"]), figures=figures, impact=impact,
                        radius=radius, sides=sides, charts=charts, events=_events, pct=pct,
                        money=money, counted=counted)
