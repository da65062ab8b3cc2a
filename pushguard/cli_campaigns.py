"""``pushguard segments`` and ``pushguard campaign``: the same core as ``/v1/segments`` and
``/v1/campaigns``.

``campaign preflight`` exits 1 when it finds a blocking problem, so it can gate a script;
``campaign start`` refuses on one unless ``--override "why"`` is given (and recorded).
``--wait`` follows a campaign with a progress bar until it completes, pauses or is cancelled.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pushguard import documents
from pushguard.cli import _actor, app_for, checked, fail, handles_errors, out
from pushguard.cli_templates import _json_file
from pushguard.exceptions import Blocked, InputError

segments_cli = typer.Typer(no_args_is_help=True, help="Segments: saved filters over contacts.")
campaign_cli = typer.Typer(no_args_is_help=True, help="Campaigns: check, rehearse, send.")

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def _filter(raw: str) -> dict[str, Any]:
    value = _json_file(Path(raw[1:]), "--filter") if raw.startswith("@") else None
    if value is None:
        value = documents.parse(raw, "--filter")
    if not isinstance(value, dict):
        raise InputError("--filter", "must be a JSON object")
    return value


def _print(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


# -- segments ---------------------------------------------------------------------------------

@segments_cli.command("add")
@handles_errors
def segment_add(name: str,
                filter: Annotated[str, typer.Option(help="the filter: JSON, or @file")],
                description: str = "") -> None:
    """Create a segment, or replace the filter of the one with that name."""
    from pushguard.campaigns.segments import SegmentIn

    body = checked(SegmentIn, {"name": name, "filter": _filter(filter),
                              "description": description})
    app = app_for()
    got = app.campaigns.segments.put(body)
    n = app.campaigns.segments.count(got["filter"])
    typer.echo(f"segment {got['name']} ({got['id']}): {n} contacts now")


@segments_cli.command("list")
@handles_errors
def segment_list(as_json: JsonOpt = False) -> None:
    app = app_for()
    rows = app.campaigns.segments.list_all()
    if as_json:
        _print(rows)
        return
    for s in rows:
        typer.echo(f"{s['name']:<30} {app.campaigns.segments.count(s['filter']):>9} contacts"
                   f"  {s['description']}")


@segments_cli.command("preview")
@handles_errors
def segment_preview(name: Annotated[str | None, typer.Argument()] = None,
                    filter: Annotated[str | None, typer.Option(help="JSON, or @file")] = None,
                    sample: Annotated[int, typer.Option(min=0, max=1000)] = 10) -> None:
    """The live count and a sample of a segment (or of a filter not saved yet)."""
    app = app_for()
    seg = app.campaigns.segments
    if (name is None) == (filter is None):
        raise InputError("--filter", "give a segment name or --filter, one of them")
    raw = seg.get(name)["filter"] if name is not None else _filter(filter or "{}")
    _print(seg.preview(raw, sample=sample))


# -- campaigns --------------------------------------------------------------------------------

@campaign_cli.command("create")
@handles_errors
def create(file: Annotated[Path, typer.Option("--file", "-f", allow_dash=True,
                                              help="the campaign as JSON ('-': stdin)")]) -> None:
    """Create a draft campaign from a JSON definition."""
    from pushguard.campaigns.models import CampaignIn

    body = checked(CampaignIn, _json_file(file, "--file"))
    got = app_for().campaigns.create(body, actor=_actor())
    typer.echo(f"campaign {got['name']} ({got['id']}) created as a draft")


@campaign_cli.command("list")
@handles_errors
def list_(state: str | None = None, as_json: JsonOpt = False) -> None:
    rows = app_for().campaigns.list_all(state=state)
    if as_json:
        _print(rows)
        return
    for c in rows:
        typer.echo(f"{c['id']}  {c['state']:<10} {c['recipients']:>8}  {c['name']}")


@campaign_cli.command("show")
@handles_errors
def show(ref: str) -> None:
    _print(app_for().campaigns.get(ref))


def _findings(report: dict[str, Any]) -> None:
    p = report["predicted"]
    out.print(f"[bold]{escape(report['name'])}[/]: {report['recipients']} recipients; predicted "
              f"delivery rate [bold]{p['delivery_rate']:.0%}[/] ({p['delivered']} would "
              f"receive it, {p['not_sent']} would not, {p['deferred']} later)", markup=True)
    if report.get("sample"):
        sm = report["sample"]
        out.print(f"estimated from a random sample of {sm['surveyed']} of the "
                  f"{sm['recipients']} recipients (delivery rate within "
                  f"±{sm['delivery_rate_margin']:.1%} at 95 %); --exact surveys every one")
    est = report["estimate"]
    if est["seconds"]:
        out.print(f"estimated send time {est['seconds']:.0f} s; estimated cost {est['cost']}")
    for f in report["findings"]:  # their texts are data: "[default]" is no markup
        colour = "red" if f["severity"] == "block" else "yellow"
        out.print(f"[{colour}]{f['severity']:<6}[/] {f['count']:>7}  {escape(f['code'])}: "
                  f"{escape(f['problem'])}", highlight=False, markup=True)
        if f["examples"]:
            out.print(f"{'':15}e.g. {', '.join(map(str, f['examples']))}", highlight=False,
                      markup=False)
        out.print(f"{'':15}fix: {f['fix']}", highlight=False, markup=False)


@campaign_cli.command("preflight")
@handles_errors
def preflight(ref: str, links: Annotated[bool, typer.Option(
        help="check links and images over HTTP")] = True,
        exact: Annotated[bool, typer.Option(
            help="survey every recipient, not a sample of a large audience")] = False,
        as_json: JsonOpt = False) -> None:
    """Predict what would fail and why; exit status 1 on a blocking finding."""
    from pushguard.campaigns.preflight import Preflight

    report = Preflight(app_for().campaigns).run(ref, links=links, exact=exact)
    _print(report) if as_json else _findings(report)
    if report["blocking"]:
        raise typer.Exit(1)


@campaign_cli.command("dry-run")
@handles_errors
def dry_run(ref: str,
            output: Annotated[Path | None, typer.Option("--out", help="write every planned "
                                                        "message's route, size and outcome "
                                                        "as JSON lines")] = None,
            limit: int = 20) -> None:
    """Render and route every message without sending: the plan and its cost."""
    from pushguard.campaigns import rehearsal

    app = app_for()
    if output is not None:
        with output.open("w", encoding="utf-8") as fh:
            got = rehearsal.dry_run(app.campaigns, ref, limit=limit, out=fh)
    else:
        got = rehearsal.dry_run(app.campaigns, ref, limit=limit)
    _print(got)


@campaign_cli.command("test")
@handles_errors
def test_send(ref: str,
              to: Annotated[list[str] | None, typer.Option(
                  "--to", help="channel:address, or an address on the first channel")] = None,
              as_contact: Annotated[str | None, typer.Option(
                  "--as", help="render as this contact")] = None) -> None:
    """Send the campaign's message to internal addresses now."""
    from pushguard.campaigns import rehearsal

    _print(rehearsal.test_send(app_for().campaigns, ref, to=to, as_contact=as_contact,
                               actor=_actor()))


def _follow(app: Any, cid: str) -> None:
    """A progress bar until the campaign stops moving (completed, paused, cancelled)."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                  console=out) as bar:
        task = bar.add_task("sending", total=None, detail="")
        while True:
            row = app.campaigns.find(cid)
            p = app.campaigns.progress(cid)
            finished = p["delivered"] + p["failed"] + p["not_sent"] \
                + p["recipients"].get("skipped", 0)
            bar.update(task, total=max(row.recipients, 0) or None, completed=finished,
                       description=row.state, detail=f"delivered {p['delivered']} failed "
                       f"{p['failed']} not sent {p['not_sent']}")
            if row.state in ("completed", "paused", "cancelled"):
                break
            time.sleep(0.5)
    if row.state == "paused":
        typer.echo(f"paused: {row.paused_reason}", err=True)


@campaign_cli.command("start")
@handles_errors
def start(ref: str,
          override: Annotated[str | None, typer.Option(
              help="send despite blocking findings; the reason is recorded")] = None,
          wait: Annotated[bool, typer.Option(help="follow it with a progress bar (a worker "
                                             "must be running)")] = False) -> None:
    """Check, then send (or schedule). Workers (pushguard serve / worker) fan it out."""
    app = app_for()
    try:
        got = app.campaigns.start(ref, actor=_actor(), override=override)
    except Blocked as exc:
        for f in exc.findings:
            typer.echo(f"block  {f['count']:>7}  {f['code']}: {f['problem']}\n"
                       f"{'':16}fix: {f['fix']}", err=True)
        fail("not started: fix the blocking findings, or --override \"why\" to send anyway")
        return
    typer.echo(f"campaign {got['name']} is {got['state']}{_when_sent(got)}")
    if wait:
        _follow(app, got["id"])


def _when_sent(got: dict[str, Any]) -> str:
    """When the messages go, for a start that sends later than now."""
    schedule = got.get("schedule") or {}
    if got["state"] == "scheduled":
        return f": it sends at {got['started_at']}"
    if schedule.get("local_time"):
        day = f"on {schedule['date']}" if schedule.get("date") else "the next time it comes"
        return (f": each recipient gets it at {schedule['local_time']} in their own time "
                f"zone, {day}")
    return ""


@campaign_cli.command("progress")
@handles_errors
def progress(ref: str, watch: Annotated[bool, typer.Option(
        help="follow it with a progress bar")] = False) -> None:
    app = app_for()
    row = app.campaigns.find(ref)
    if watch:
        _follow(app, row.id)
        return
    _print({"id": row.id, "state": row.state, **app.campaigns.progress(row.id)})


@campaign_cli.command("pause")
@handles_errors
def pause(ref: str, reason: str = "paused by hand") -> None:
    got = app_for().campaigns.pause(ref, reason=reason, actor=_actor())
    typer.echo(f"campaign {got['name']} paused; {got.get('held', 0)} waiting messages held")


@campaign_cli.command("resume")
@handles_errors
def resume(ref: str) -> None:
    got = app_for().campaigns.resume(ref, actor=_actor())
    typer.echo(f"campaign {got['name']} is {got['state']}; {got['released']} messages released")


@campaign_cli.command("cancel")
@handles_errors
def cancel(ref: str) -> None:
    got = app_for().campaigns.cancel(ref, actor=_actor())
    typer.echo(f"campaign {got['name']} cancelled: {got['stopped']} waiting messages not sent,"
               f" {got['skipped']} recipients skipped")


@campaign_cli.command("retry")
@handles_errors
def retry(ref: str,
          cause: Annotated[list[str] | None, typer.Option(
              "--cause", help="only messages that failed with this cause")] = None,
          via: Annotated[str | None, typer.Option(help="try this provider first")] = None,
          ) -> None:
    """Send again to the recipients whose message failed."""
    got = app_for().campaigns.retry_failed(ref, actor=_actor(), causes=cause, via=via)
    typer.echo(f"campaign {got['name']}: retrying {got['retrying']} recipients "
               f"(round {got['round']})")

