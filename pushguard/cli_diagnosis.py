"""``pushguard failures`` and ``pushguard lessons``, and the contact and campaign stories of
``pushguard why``: the same core as ``/v1/failures``, ``/v1/lessons`` and the explain routes.

Text output leads with the verdict; ``--json`` prints what the API returns. Errors exit 1 with
``error: <option>: <problem>``, like every other command.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import typer

from pushguard.cli import _actor, app_for, fail, handles_errors, out
from pushguard.diagnosis.timespan import HELP
from pushguard.exceptions import InputError

failures_cli = typer.Typer(help="Failure analytics: counts, rates, causes and fixes; "
                           "`failures compare` tells a real change from noise.")
lessons_cli = typer.Typer(no_args_is_help=True,
                          help="Lessons: operators' notes on causes, providers and templates, "
                          "shown beside every later failure of the same kind.")

AsJson = Annotated[bool, typer.Option("--json", help="print JSON")]
Opt = Annotated[str | None, typer.Option()]


def register(cli: typer.Typer) -> None:
    cli.add_typer(failures_cli, name="failures")
    cli.add_typer(lessons_cli, name="lessons")


def _show(data: dict[str, Any], as_json: bool, text: Callable[[dict[str, Any]], str]) -> None:
    print(json.dumps(data, indent=2) if as_json else text(data))


def why_message(message_id: str, as_json: bool) -> None:
    from pushguard.diagnosis.lessons import Lessons
    from pushguard.explain import as_text, explain

    store = app_for().store
    view = store.get(message_id)
    if view is None:
        fail(f"no message {message_id!r}")
    found = [le.as_dict() for le in Lessons(store).for_message(view)]
    _show(explain(view, found), as_json, as_text)


def why_contact(ref: str, days: int, as_json: bool) -> None:
    from pushguard.diagnosis.recipient import as_text, recipient_story

    if not 1 <= days <= 365:
        raise InputError("--days", "must be between 1 and 365")
    app = app_for()
    _show(recipient_story(app.store, ref, days=days, policy=app.config.audience), as_json,
          as_text)


def why_campaign(ref: str, as_json: bool) -> None:
    from pushguard.diagnosis.campaign_story import as_text, campaign_story

    _show(campaign_story(app_for().store, ref), as_json, as_text)


# -- failures ---------------------------------------------------------------------------------

@failures_cli.callback(invoke_without_command=True)
@handles_errors
def failures(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help=f"start: {HELP} (default 24h)")] = None,
    until: Annotated[str | None, typer.Option(help="end (default now); a day counts whole")
                     ] = None,
    by: Annotated[list[str] | None, typer.Option(
        help="cause, provider, channel, campaign, template, topic, hour, day (repeat or "
        "comma-separate)")] = None,
    campaign: Annotated[str | None, typer.Option(help="a campaign id or name")] = None,
    channel: Opt = None, provider: Opt = None, topic: Opt = None, template: Opt = None,
    top: Annotated[int, typer.Option(min=1, max=50, help="top causes shown")] = 10,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="groups shown")] = 200,
    as_json: AsJson = False,
) -> None:
    """Failed, suppressed and delivered counts and rates, grouped by --by, with the top causes,
    their fixes and lessons, and a time series."""
    if ctx.invoked_subcommand is not None:
        return
    from pushguard.diagnosis.failures import as_text, failures_report, filters_for, parse_by
    from pushguard.diagnosis.timespan import window

    dims = parse_by(by or [], "--by")
    span = window(since, until, fields=("--since", "--until"))
    store = app_for().store
    filters = filters_for(store, span, campaign=campaign, channel=channel, provider=provider,
                          topic=topic, template=template, campaign_field="--campaign")
    _show(failures_report(store, filters, dims, top=top, limit=limit), as_json, as_text)


@failures_cli.command("compare")
@handles_errors
def compare(
    a: Annotated[str | None, typer.Option("--a", help="window A: 2026-11-01..2026-11-07")
                 ] = None,
    b: Annotated[str | None, typer.Option("--b", help="window B")] = None,
    campaign_a: Annotated[str | None, typer.Option(help="campaign A (id or name)")] = None,
    campaign_b: Annotated[str | None, typer.Option(help="campaign B (id or name)")] = None,
    channel: Opt = None, provider: Opt = None, topic: Opt = None, template: Opt = None,
    as_json: AsJson = False,
) -> None:
    """Did the fix work? Failure rates of A and B overall and per cause, and whether the
    difference is more than noise (two-proportion z-test at 95%)."""
    from pushguard.diagnosis.compare import as_text, compare_report, side

    store = app_for().store
    common = {"channel": channel, "provider": provider, "topic": topic, "template": template}
    side_a = side(store, a, campaign_a, fields=("--a", "--campaign-a"), common=common)
    side_b = side(store, b, campaign_b, fields=("--b", "--campaign-b"), common=common)
    _show(compare_report(store, side_a, side_b), as_json, as_text)


# -- lessons ----------------------------------------------------------------------------------

def _subject(cause: str | None, provider: str | None, template: str | None) -> tuple[str, str]:
    given = [(k, v) for k, v in (("cause", cause), ("provider", provider),
                                 ("template", template)) if v is not None]
    if len(given) != 1:
        raise InputError("--cause", "give exactly one of --cause, --provider or --template")
    return given[0]


@lessons_cli.command("add")
@handles_errors
def lessons_add(
    note: Annotated[str, typer.Argument(help="the note ('-' reads it from stdin)")],
    cause: Opt = None, provider: Opt = None, template: Opt = None,
    actor: Annotated[str | None, typer.Option(help="who writes it (default: cli:<user>)")
                     ] = None,
) -> None:
    """Attach a note to a cause, a provider or a template."""
    from pushguard import documents
    from pushguard.diagnosis.lessons import MAX_NOTE_BYTES, Lessons

    kind, subject = _subject(cause, provider, template)
    text = documents.read_stdin("note", limit=MAX_NOTE_BYTES) if note == "-" else note
    lesson = Lessons(app_for().store).add(kind, subject, text, author=actor or _actor())
    out.print(f"added {lesson.id} on {kind} {subject}", markup=False)


@lessons_cli.command("list")
@handles_errors
def lessons_list(cause: Opt = None, provider: Opt = None, template: Opt = None,
                 limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
                 as_json: AsJson = False) -> None:
    """Lessons, newest first (all, or those of one cause, provider or template)."""
    from pushguard.diagnosis.lessons import Lessons, as_lines

    kind, subject = (_subject(cause, provider, template)
                     if (cause, provider, template) != (None, None, None) else (None, None))
    found = [le.as_dict() for le in Lessons(app_for().store).find(kind=kind, subject=subject,
                                                                     limit=limit)]
    if as_json:
        print(json.dumps({"lessons": found}, indent=2))
        return
    for le in found:
        print(le["id"])
        print("\n".join(as_lines([le])))


@lessons_cli.command("remove")
@handles_errors
def lessons_remove(lesson_id: str,
                   actor: Annotated[str | None, typer.Option(help="who removes it")] = None
                   ) -> None:
    """Remove a lesson (the audit log keeps what it said)."""
    from pushguard.diagnosis.lessons import Lessons

    gone = Lessons(app_for().store).remove(lesson_id, actor=actor or _actor())
    out.print(f"removed {gone.id} ({gone.kind} {gone.subject})", markup=False)
