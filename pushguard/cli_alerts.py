"""``pushguard alerts``, ``pushguard incidents`` and ``pushguard providers``: the same core as
``/v1/alerts``, ``/v1/incidents`` and ``/v1/providers/{name}/hold``.

A bad option exits 1 naming it (``error: --via: ...``); ``--json`` prints what the API returns.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from pushguard.cli import _actor, app_for, handles_errors, id_column, out
from pushguard.exceptions import InputError

F = TypeVar("F", bound=Callable[..., Any])

alerts_cli = typer.Typer(no_args_is_help=True, help="Alerts raised from delivery figures.")
incidents_cli = typer.Typer(no_args_is_help=True, help="Incidents: grouped alerts and actions.")
providers_cli = typer.Typer(no_args_is_help=True, help="Provider holds (failover by hand).")

AsJson = Annotated[bool, typer.Option("--json", help="print JSON")]
_OPTIONS = {"via", "channel", "note", "for", "reason", "campaign", "provider", "state"}


def options(fn: F) -> F:
    """Name the command-line option in an input error (``--via``, not ``via``)."""
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            if exc.field in _OPTIONS:
                raise InputError(f"--{exc.field}", exc.problem) from exc
            raise

    return wrapper  # type: ignore[return-value]


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _book() -> Any:
    from pushguard.diagnosis.alerts import AlertBook

    return AlertBook(app_for())


def _incidents() -> Any:
    from pushguard.diagnosis.incidents import Incidents

    return Incidents(app_for())


def _alerts_table(found: list[dict[str, Any]]) -> Table:
    t = Table(id_column(), "rule", "scope", "state", "severity", "value", "opened",
              id_column("incident"))
    for a in found:
        t.add_row(a["id"], a["rule"], a["scope"], a["state"], a["severity"],
                  f"{a['value']:.4g}", a["opened_at"], a["incident_id"] or "")
    return t


# -- alerts ----------------------------------------------------------------------------------

@alerts_cli.command("list")
@handles_errors
@options
def alerts_list(
    state: Annotated[str, typer.Option(help="open, resolved or all")] = "open",
    rule: Annotated[str | None, typer.Option(help="only this rule")] = None,
    as_json: AsJson = False,
) -> None:
    """List alerts, newest first."""
    if state not in ("open", "resolved", "all"):
        raise InputError("state", "must be open, resolved or all")
    found = _book().recent(None if state == "all" else state, rule)
    if as_json:
        _print({"alerts": found})
    else:
        out.print(_alerts_table(found))


@alerts_cli.command("show")
@handles_errors
def alerts_show(alert_id: str, as_json: AsJson = False) -> None:
    """Show one alert with its evidence."""
    a = _book().get(alert_id)
    if as_json:
        _print(a)
        return
    out.print(f"[bold]{a['id']}[/bold] {a['rule']} on {escape(a['scope'])}: {a['state']}, "
              f"{a['severity']} (peak {a['peak']})", highlight=False, markup=True)
    out.print(a["summary"], markup=False, highlight=False)
    for c in a["detail"].get("top_causes") or []:
        out.print(f"  {c['cause']}: {c['count']}", highlight=False)
    if a["incident_id"]:
        out.print(f"incident: {a['incident_id']}", highlight=False)


@alerts_cli.command("check")
@handles_errors
def alerts_check(as_json: AsJson = False) -> None:
    """Evaluate every rule once now (workers do it on their own)."""
    report = _book().evaluate(force=True)
    if as_json:
        _print(report)
        return
    for kind in ("fired", "escalated", "resolved"):
        if report[kind]:
            out.print(f"{kind}: {', '.join(report[kind])}", highlight=False)
    out.print(_alerts_table(report["open"]))


@alerts_cli.command("rules")
@handles_errors
def alerts_rules(as_json: AsJson = False) -> None:
    """The alert rules in force and their thresholds."""
    from pushguard.diagnosis.alerts import rule_json

    rules = [rule_json(r) for r in app_for().config.alerts.rules.values()]
    if as_json:
        _print({"rules": rules})
        return
    t = Table("rule", "on", "warn", "critical", "window s", "min sample", "actions")
    for r in rules:
        t.add_row(r["rule"], "yes" if r["enabled"] else "no", f"{r['warn']:g}",
                  f"{r['critical']:g}", f"{r['window']:g}", str(r["min_sample"]),
                  ", ".join(r["actions"]))
    out.print(t)


# -- incidents -------------------------------------------------------------------------------

@incidents_cli.command("list")
@handles_errors
@options
def incidents_list(
    state: Annotated[str, typer.Option(help="open, closed or all")] = "all",
    as_json: AsJson = False,
) -> None:
    """List incidents, newest first."""
    if state not in ("open", "closed", "all"):
        raise InputError("state", "must be open, closed or all")
    found = _incidents().recent(None if state == "all" else state)
    if as_json:
        _print({"incidents": found})
        return
    t = Table(id_column(), "scope", "state", "severity", "opened", "closed")
    for i in found:
        t.add_row(i["id"], i["scope"], i["state"], i["severity"], i["opened_at"],
                  i["closed_at"] or "")
    out.print(t)


@incidents_cli.command("show")
@handles_errors
def incidents_show(incident_id: str, as_json: AsJson = False) -> None:
    """Show an incident: blast radius, top causes and fixes, timeline."""
    i = _incidents().show(incident_id)
    if as_json:
        _print(i)
        return
    r = i["blast_radius"]
    out.print(f"[bold]{i['id']}[/bold] {escape(i['title'])}: {i['state']}, {i['severity']}",
              highlight=False, markup=True)
    out.print(f"blast radius: {r['messages']} failed messages, {r['recipients']} recipients; "
              f"campaigns {[c['campaign'] for c in r['campaigns']]}, channels "
              f"{[c['channel'] for c in r['channels']]}, providers "
              f"{[p['provider'] for p in r['providers']]}", highlight=False, markup=False)
    for c in i["top_causes"]:
        out.print(f"  {c['cause']} x{c['count']}: {c['fix']}", highlight=False, markup=False)
    for e in i["timeline"]:
        out.print(f"{e['at']}  {e['kind']:<16} {e['actor']:<24} {e['message']}",
                  highlight=False, markup=False, soft_wrap=True)


@incidents_cli.command("replay")
@handles_errors
@options
def incidents_replay(
    incident_id: str,
    via: Annotated[str | None, typer.Option(help="a provider to try first")] = None,
    channel: Annotated[str | None, typer.Option(help="another channel (contact's "
                                                     "address)")] = None,
    as_json: AsJson = False,
) -> None:
    """Send the incident's failed messages again, once per message."""
    from pushguard.diagnosis.replay import replay

    app = app_for()
    result = replay(app, _incidents_of(app), incident_id, via=via, channel=channel,
                    actor=_actor())
    if as_json:
        _print(result)
        return
    out.print(f"enqueued {len(result['enqueued'])}, stopped by the pre-send gate "
              f"{len(result['stopped'])}, already replayed {len(result['already'])}, skipped "
              f"{len(result['skipped'])}", highlight=False)
    if result["stopped"]:
        first = result["stopped"][0]["id"]
        out.print(f"  the gate stopped {len(result['stopped'])} (suppressed addresses, consent, "
                  f"caps): pushguard why {first}", highlight=False, markup=False)
    for s in result["skipped"][:20]:
        out.print(f"  skipped {s['message']}: {s['reason']}", highlight=False, markup=False)


def _incidents_of(app: Any) -> Any:
    from pushguard.diagnosis.incidents import Incidents

    return Incidents(app)


@incidents_cli.command("close")
@handles_errors
@options
def incidents_close(
    incident_id: str,
    note: Annotated[str, typer.Option(help="what happened and what was done")],
) -> None:
    """Close an incident with a note."""
    i = _incidents().close(incident_id, note, actor=_actor())
    out.print(f"closed {i['id']}", highlight=False)


@incidents_cli.command("note")
@handles_errors
@options
def incidents_note(incident_id: str, note: Annotated[str, typer.Argument()]) -> None:
    """Add a note to an incident's timeline."""
    _incidents().note(incident_id, note, actor=_actor())
    out.print(f"noted on {incident_id}", highlight=False)


@incidents_cli.command("pause")
@handles_errors
@options
def incidents_pause(
    incident_id: str,
    campaign: Annotated[str | None, typer.Option(help="default: the incident's")] = None,
    reason: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Pause a campaign from an incident."""
    from pushguard.diagnosis.actions import act

    done = act(app_for(), incident_id, "pause", actor=_actor(), campaign=campaign,
               reason=reason)
    out.print(done["message"], highlight=False)


@incidents_cli.command("failover")
@handles_errors
@options
def incidents_failover(
    incident_id: str,
    provider: Annotated[str | None, typer.Option(help="default: the incident's")] = None,
    for_: Annotated[str, typer.Option("--for", help="90s, 10m, 2h, 1d")] = "10m",
    reason: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Hold a provider out of routing from an incident."""
    from pushguard.diagnosis.actions import act

    done = act(app_for(), incident_id, "failover", actor=_actor(), provider=provider,
               duration=for_, reason=reason)
    out.print(done["message"], highlight=False)


# -- providers -------------------------------------------------------------------------------

def _holds() -> Any:
    from pushguard.diagnosis.holds import Holds

    app = app_for()
    return Holds(app.store, app.config.providers)


@providers_cli.command("hold")
@handles_errors
@options
def providers_hold(
    name: str,
    for_: Annotated[str, typer.Option("--for", help="90s, 10m, 2h, 1d")],
    reason: Annotated[str, typer.Option(help="why, for the audit log")],
) -> None:
    """Route nothing through a provider for a while, in every worker."""
    from pushguard.diagnosis.holds import parse_duration

    held = _holds().hold(name, parse_duration(for_, "for"), reason=reason, actor=_actor())
    out.print(f"held {name} until {held['until']}", highlight=False)


@providers_cli.command("release")
@handles_errors
def providers_release(name: str) -> None:
    """Give a held provider back to routing."""
    if not _holds().release(name, actor=_actor()):
        raise InputError(name, "is not held")
    out.print(f"released {name}", highlight=False)


@providers_cli.command("holds")
@handles_errors
def providers_holds(as_json: AsJson = False) -> None:
    """Providers held out of routing now."""
    found = _holds().active()
    if as_json:
        _print({"holds": found})
        return
    t = Table("provider", "until", "reason", "by")
    for h in found:
        t.add_row(h["provider"], h["until"], h["reason"], h["actor"])
    out.print(t)
