"""The ``pushguard`` command: a thin edge over the same core the HTTP API uses.

Errors go to stderr as ``error: <field>: <problem>`` with exit status 1; usage errors exit 2.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from pushguard import documents, logs
from pushguard.exceptions import ConfigError, IdempotencyConflict, InputError, PushguardError
from pushguard.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

cli = typer.Typer(
    name="pushguard", no_args_is_help=True, add_completion=False,
    help="Multi-channel push delivery where pushes do not fail silently.",
)
db_cli = typer.Typer(no_args_is_help=True, help="Database schema.")
keys_cli = typer.Typer(no_args_is_help=True, help="API keys.")
config_cli = typer.Typer(no_args_is_help=True, help="Configuration.")
sup_cli = typer.Typer(no_args_is_help=True, help="Suppression lists.")
cli.add_typer(db_cli, name="db")
cli.add_typer(keys_cli, name="keys")
cli.add_typer(config_cli, name="config")
cli.add_typer(sup_cli, name="suppressions")

#: data (names, addresses, reasons) is never taken for markup; a line that styles says so
out = Console(markup=False)


def id_column(header: str = "id") -> Column:
    """A table column of ids, never shortened: people copy them into the next command."""
    return Column(header, no_wrap=True)


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(1)


def handles_errors(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PushguardError as exc:
            fail(str(exc))

    return wrapper  # type: ignore[return-value]


def settings() -> Settings:
    s = Settings.from_env()
    logs.configure(s.log_level, s.log_format)
    return s


def app_for(s: Settings | None = None, *, migrate: bool = False) -> Any:
    from pushguard.app import App

    app = App.from_settings(s or settings())
    if migrate:
        app.store.migrate()
    elif not app.store.schema_is_current():
        fail("the database schema is not current: run `pushguard db upgrade`")
    return app


def find_message(message_id: str) -> Any:
    view = app_for().store.get(message_id)
    if view is None:
        fail(f"no message {message_id!r}")
    return view


# -- processes ------------------------------------------------------------------------------

Host = Annotated[str, typer.Option(help="address to listen on")]
Port = Annotated[int, typer.Option(min=0, max=65535, help="port to listen on")]


@db_cli.command("prune")
@handles_errors
def db_prune(
    older_than: Annotated[str, typer.Option(
        help="delete the history of messages that finished longer ago than this: 90d, 2160h; "
        "at least 30d")],
    dry_run: Annotated[bool, typer.Option(help="count what would go, delete nothing")] = False,
    batch: Annotated[int, typer.Option(min=100, max=100_000,
                                       help="messages per transaction")] = 2000,
) -> None:
    """Delete finished messages, with their attempts and events, older than --older-than.

    Kept: messages of campaigns that finished more recently, fallback chains with a recent
    leg, consent, suppressions, the audit log, contacts, campaigns, alerts and incidents."""
    import time

    from pushguard.diagnosis.holds import parse_duration
    from pushguard.store.retention import MIN_AGE, prune

    age = parse_duration(older_than, "--older-than", least=MIN_AGE, most=3650 * 86400)
    app = app_for()
    before = time.time() - age
    got = prune(app.store, before, batch=batch, dry_run=dry_run, actor=_actor())
    verb = "would delete" if dry_run else "deleted"
    out.print(f"{verb} {got.messages:,} messages finished before {_when(before)} "
              f"({got.attempts:,} attempts, {got.events:,} events) and {got.contact_sends:,} "
              "frequency-cap records", highlight=False)


@cli.command()
@handles_errors
def serve(host: Host = "127.0.0.1", port: Port = 8000) -> None:
    """Run the HTTP API and the delivery workers in one process (applies migrations first)."""
    from pushguard import runner

    asyncio.run(runner.serve(app_for(migrate=True), host, port))


@cli.command()
@handles_errors
def api(host: Host = "127.0.0.1", port: Port = 8000) -> None:
    """Run only the HTTP API."""
    from pushguard import runner

    asyncio.run(runner.serve(app_for(), host, port, with_worker=False))


@cli.command()
@handles_errors
def worker(
    concurrency: Annotated[int | None, typer.Option(min=1, max=100_000,
                                                   help="deliveries in flight")] = None,
    batch: Annotated[int | None, typer.Option(min=1, max=100_000,
                                             help="messages claimed per batch")] = None,
    metrics_port: Annotated[int | None, typer.Option(min=0, max=65535,
                                                    help="serve /metrics on this port")] = None,
    metrics_host: Annotated[str, typer.Option(help="address for --metrics-port")] = "127.0.0.1",
) -> None:
    """Run only a delivery worker. Start as many as you like, on as many machines."""
    from prometheus_client import start_http_server

    from pushguard import runner

    app = app_for()
    if metrics_port:
        app.metrics.watch_queue(app.store)
        start_http_server(metrics_port, metrics_host, registry=app.metrics.registry)
    overrides = {k: float(v) for k, v in (("concurrency", concurrency), ("batch", batch)) if v}
    asyncio.run(runner.work(app, **overrides))


@db_cli.command("upgrade")
@handles_errors
def db_upgrade() -> None:
    """Apply database migrations."""
    from pushguard.store import migrations

    s = settings()
    app = app_for(s, migrate=True)
    del app
    out.print(f"database is at revision {migrations.head()}")


@cli.command()
def demo(
    messages: Annotated[int, typer.Option(min=1, max=1_000_000,
                                          help="how many messages to send")] = 3000,
    workdir: Annotated[str, typer.Option(help="where the demo database goes")] = ".demo",
) -> None:
    """Send a few thousand messages through sandbox providers with injected failures."""
    from pushguard import demo as demo_mod

    raise typer.Exit(demo_mod.run(messages, workdir, out))


@cli.command()
def sandbox(
    host: Host = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65533,
                                      help="HTTP port (APNs +1, SMTP +2); 0: any")] = 8025,
    profile: Annotated[str | None, typer.Option(help="fault profile (.toml, .json)")] = None,
    records: Annotated[str | None, typer.Option(help="append requests to this JSONL")] = None,
    verify: Annotated[bool, typer.Option(help="verify webhook signatures")] = True,
) -> None:
    """Run local fake providers (webhook, FCM, APNs, Twilio, SMS, Web Push, SMTP, Slack,
    Discord, Telegram, Teams) with faults."""
    from pushguard.sandbox.server import run_forever

    s = settings()
    run_forever(host=host, port=port, profile=profile, records=records,
                webhook_secret=s.webhook_secret or None, verify=verify and bool(s.webhook_secret),
                echo=lambda line: print(line, flush=True))


# -- keys -----------------------------------------------------------------------------------

@keys_cli.command("create")
@handles_errors
def keys_create(name: Annotated[str, typer.Option(help="who or what uses the key")]) -> None:
    """Create an API key. The key is shown once, on the last line; only its hash is stored."""
    key_id, key = app_for().store.create_api_key(name)
    out.print(f"created key {key_id} ({name}); store it now, it cannot be shown again:")
    print(key)


@keys_cli.command("list")
@handles_errors
def keys_list() -> None:
    """List API keys (prefixes only)."""
    t = Table(id_column(), "name", "prefix", "created", "revoked")
    for k in app_for().store.api_keys():
        t.add_row(str(k["id"]), str(k["name"]), str(k["prefix"]) + "…", _when(k["created_at"]),
                  _when(k["revoked_at"]))
    out.print(t)


@keys_cli.command("revoke")
@handles_errors
def keys_revoke(key_id: str) -> None:
    """Revoke an API key."""
    if not app_for().store.revoke_api_key(key_id):
        fail(f"no active key {key_id!r}")
    out.print(f"revoked {key_id}")


@cli.command("webhook-secret")
def webhook_secret() -> None:
    """Print a new Standard Webhooks signing secret (set it as PUSHGUARD_WEBHOOK_SECRET)."""
    print("whsec_" + base64.b64encode(os.urandom(32)).decode())


# -- messages -------------------------------------------------------------------------------

@cli.command()
@handles_errors
def send(
    channel: Annotated[str, typer.Option(help="webhook, email, sms, fcm, apns, webpush, chat")],
    to: Annotated[str | None, typer.Option(help="the address on that channel")] = None,
    content: Annotated[str | None, typer.Option(help="content as a JSON object")] = None,
    template: Annotated[str | None, typer.Option(help="a template to render instead of "
                                                      "--content")] = None,
    data: Annotated[str, typer.Option(help="the template's data, a JSON object")] = "{}",
    topic: Annotated[str | None, typer.Option()] = None,
    priority: Annotated[str, typer.Option(help="high, normal or bulk")] = "normal",
    send_at: Annotated[str | None, typer.Option(help="RFC 3339 time")] = None,
    ttl: Annotated[int | None, typer.Option(help="seconds the message may wait")] = None,
    idempotency_key: Annotated[str | None, typer.Option()] = None,
    contact: Annotated[str | None, typer.Option(help="a contact id or external id (then --to "
                                                     "may be left out)")] = None,
) -> None:
    """Enqueue one message; prints its id and state."""
    raw: dict[str, Any] = {"channel": channel, "priority": priority}
    for name, text in (("content", content), ("data", data if template else None)):
        if text is not None:
            value = documents.parse(text, f"--{name}")
            if name == "content":
                raw["content"] = value
            else:
                raw["template"] = {"name": template, "data": value}
    if template is None and content is None:
        raw["content"] = {}
    for k, v in (("to", to), ("topic", topic), ("send_at", send_at), ("ttl", ttl),
                 ("idempotency_key", idempotency_key), ("contact", contact)):
        if v is not None:
            raw[k] = v
    app = app_for()
    msg = app.intake.prepare(app.intake.parse(raw))
    (result,) = app.intake.submit([msg], scope="cli")
    if isinstance(result, IdempotencyConflict):
        raise result
    out.print(f"{result.id} {result.state.value}" + (" (replayed)" if result.replayed else ""))
    for r in result.fanout:  # the contact's other devices
        out.print(f"{r.id} {r.state.value}" if not isinstance(r, IdempotencyConflict)
                  else f"error: {r}")


@cli.command()
@handles_errors
def status(
    message_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show a message's state and attempts."""
    from pushguard.views import message_json

    view = find_message(message_id)
    data = message_json(view)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    out.print(f"[bold]{view.id}[/bold]  {view.channel} -> {escape(view.to)}", markup=True)
    out.print(f"state: [bold]{view.state.value}[/bold]   attempts: {view.attempts_count}",
              markup=True)
    if view.failure:
        out.print(f"cause: {view.failure.cause} ({view.failure.provider_code or '-'})")
        out.print(f"fix: {view.failure.fix}", markup=False)
    if view.attempts:
        t = Table("#", "at", "provider", "outcome", "status/code", "cause", "ms")
        for a in data["attempts"]:
            t.add_row(str(a["number"]), a["at"], a["provider"], a["outcome"],
                      str(a["provider_code"] or a["status"] or ""), a["cause"] or "",
                      "" if a["latency_ms"] is None else f"{a['latency_ms']:.0f}")
        out.print(t)


@cli.command()
@handles_errors
def why(
    message_id: Annotated[str | None, typer.Argument(help="a message id")] = None,
    contact: Annotated[str | None, typer.Option(help="a contact id or external id: why "
                                                     "has it received nothing?")] = None,
    campaign: Annotated[str | None, typer.Option(help="a campaign id or name")] = None,
    days: Annotated[int, typer.Option(help="with --contact: days to look back (1 to 365)")
                    ] = 7,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Tell the story of a message, a contact or a campaign in plain words, and what to do."""
    from pushguard import cli_diagnosis

    given = [x for x in (message_id, contact, campaign) if x is not None]
    if len(given) != 1:
        raise InputError("ID", "give exactly one of a message ID, --contact or --campaign")
    if contact is not None:
        cli_diagnosis.why_contact(contact, days, as_json)
    elif campaign is not None:
        cli_diagnosis.why_campaign(campaign, as_json)
    else:
        cli_diagnosis.why_message(str(message_id), as_json)


@cli.command("messages")
@handles_errors
def messages_list(
    state: Annotated[str | None, typer.Option()] = None,
    cause: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
) -> None:
    """List recent messages, newest first."""
    from pushguard import taxonomy
    from pushguard.states import State

    if state is not None and state not in {s.value for s in State}:
        raise InputError("--state", f"one of: {', '.join(s.value for s in State)}")
    if cause is not None and cause not in taxonomy.CAUSES:
        raise InputError("--cause", f"one of: {', '.join(taxonomy.CAUSES)}")
    t = Table(id_column(), "channel", "to", "state", "cause", "attempts", "created")
    for v in app_for().store.list_messages(state=state, cause=cause, limit=limit):
        t.add_row(v.id, v.channel, v.to[:48], v.state.value,
                  v.failure.cause if v.failure else "", str(v.attempts_count), _when(v.created_at))
    out.print(t)


@cli.command()
@handles_errors
def bounces(files: Annotated[list[Path], typer.Argument(help="DSN files (.eml), e.g. a "
                                                          "bounce mailbox's messages")]) -> None:
    """Record email bounce reports (RFC 3464) read from files; hard bounces suppress."""
    from pushguard.receipts.dsn import parse, record_bounces

    app = app_for()
    t = Table("file", "message", "recipient", "action", "status", "cause", "recorded")
    for path in files:
        try:
            found = record_bounces(app.store, parse(path.read_bytes()))
        except InputError as exc:
            t.add_row(str(path), "", "", "", "", f"not a DSN: {exc.problem}", "no")
            continue
        for b in found:
            t.add_row(str(path), b["message_id"] or "?", b["recipient"], b["action"],
                      b["status"], b["cause"] or "",
                      "suppressed" if b["suppressed"] else ("yes" if b["recorded"] else "no"))
    out.print(t)


# -- configuration ----------------------------------------------------------------------------

@config_cli.command("check")
def config_check() -> None:
    """Check settings and pushguard.toml; report every problem with its location."""
    from pushguard import config as config_mod
    from pushguard.providers.base import ProviderContext
    from pushguard.providers.registry import build_providers
    from pushguard.ssrf import OutboundGuard
    from pushguard.store.sql import SQLStore

    problems: list[str] = []
    try:
        s = Settings.from_env()
    except ConfigError as exc:
        fail(str(exc))
        return
    cfg, errs = config_mod.check(s)
    problems += [str(e) for e in errs]
    if cfg is not None:
        try:
            build_providers(cfg, ProviderContext(s, OutboundGuard.from_env(s.outbound_allow)))
        except ConfigError as exc:
            problems.append(str(exc))
    try:
        store = SQLStore(s.database_url)
        store.ping()
        if not store.schema_is_current():
            problems.append(
                "PUSHGUARD_DATABASE_URL: schema is not current; run `pushguard db upgrade`"
            )
    except PushguardError as exc:
        problems.append(f"PUSHGUARD_DATABASE_URL: {exc}")
    except Exception as exc:
        problems.append(f"PUSHGUARD_DATABASE_URL: cannot connect: {exc}")
    if problems:
        for p in problems:
            print(f"problem: {p}", file=sys.stderr)
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        raise typer.Exit(1)
    assert cfg is not None
    out.print(f"configuration OK ({cfg.source})")
    for channel, names in cfg.channels.items():
        out.print(f"  {channel}: {' -> '.join(names)}")


# -- suppressions ---------------------------------------------------------------------------

@sup_cli.command("list")
@handles_errors
def sup_list(limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50) -> None:
    """List suppressed addresses."""
    t = Table("channel", "address", "reason", "source", "since")
    for s in app_for().store.suppressions(limit):
        t.add_row(s.channel, s.address, s.reason, s.source, _when(s.created_at))
    out.print(t)


@sup_cli.command("add")
@handles_errors
def sup_add(channel: str, address: str,
            reason: Annotated[str, typer.Option()] = "manual",
            note: Annotated[str, typer.Option(help="why, for the audit log")] = "") -> None:
    """Suppress an address on a channel (audited)."""
    from pushguard.addresses import normalize_address

    app = app_for()
    normal = normalize_address(channel, address, guard=app.guard, field="address",
                               resolve=False)
    app.store.suppress(channel, normal, reason, note or "cli", actor=_actor())
    out.print(f"suppressed {channel} {normal}")


@sup_cli.command("remove")
@handles_errors
def sup_remove(channel: str, address: str,
               note: Annotated[str, typer.Option(help="why, for the audit log")] = "") -> None:
    """Lift a suppression (audited)."""
    from pushguard.addresses import normalize_address

    app = app_for()
    normal = normalize_address(channel, address, guard=app.guard, field="address",
                               resolve=False)
    if not app.store.unsuppress(channel, normal, actor=_actor(), note=note):
        fail(f"{normal} is not suppressed on {channel}")
    out.print(f"removed {channel} {normal}")


def _actor() -> str:
    """Who is running the CLI, for the audit log."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in this environment
        return "cli"


def checked(cls: Any, raw: dict[str, Any]) -> Any:
    """``cls.model_validate(raw)``, its first problem an :class:`InputError` naming the field
    (pydantic and intake are imported here, not with the CLI: most commands need neither)."""
    from pydantic import ValidationError

    from pushguard.intake import pydantic_problems

    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise pydantic_problems(exc)[0] from exc


def _when(ts: object) -> str:
    if not isinstance(ts, int | float):
        return ""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


# -- audience (its own modules; registered here so `pushguard --help` lists them) -----------
def _register_audience() -> None:
    from pushguard import (
        cli_alerts,
        cli_audience,
        cli_campaigns,
        cli_data,
        cli_diagnosis,
        cli_optin,
        cli_reports,
        cli_templates,
    )

    contacts: typer.Typer = cli_audience.contacts_cli
    cli.add_typer(contacts, name="contacts")
    cli.add_typer(cli_audience.topics_cli, name="topics")
    cli.add_typer(cli_audience.consent_cli, name="consent")
    cli.add_typer(cli_data.doctor_cli, name="doctor")
    cli.add_typer(cli_templates.templates_cli, name="template")
    cli.add_typer(cli_alerts.alerts_cli, name="alerts")
    cli.add_typer(cli_alerts.incidents_cli, name="incidents")
    cli.add_typer(cli_alerts.providers_cli, name="providers")
    cli.add_typer(cli_campaigns.segments_cli, name="segments")
    cli.add_typer(cli_campaigns.campaign_cli, name="campaign")
    cli_diagnosis.register(cli)
    cli.add_typer(cli_reports.report_cli, name="report")
    for name, fn in (("import", getattr(cli_data, "import_contacts", None)),
                     ("subscribe", getattr(cli_optin, "subscribe", None))):
        if fn is not None:
            contacts.command(name)(fn)


#: Commands that run a long-lived process and need none of the other command groups: their
#: start-up skips importing them (a worker starts ~1 s sooner, which a short run notices).
_PROCESSES = frozenset({"worker", "api", "serve"})


def _undecodable(args: list[str]) -> int | None:
    """The position of the first argument that is not text: bytes the locale's encoding
    could not decode reach Python as lone surrogates, which no database or file takes."""
    for i, arg in enumerate(args, 1):
        # a file's name may be any bytes: one that exists is only opened
        if documents.not_text(arg) and not os.path.exists(arg):
            return i
    return None


def main() -> None:
    bad = _undecodable(sys.argv[1:])
    if bad is not None:
        print(f"error: argument {bad} is not valid UTF-8 text ({sys.argv[bad]!r}); check "
              "the terminal's or the script's encoding", file=sys.stderr)
        raise SystemExit(2)
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    if command not in _PROCESSES:
        _register_audience()
    cli(prog_name="pushguard")


if __name__ == "__main__":  # pragma: no cover
    main()
