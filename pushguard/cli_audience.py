"""``pushguard contacts|topics|consent``: the audience from the command line.

The same core as ``/v1/contacts``, ``/v1/topics`` and ``/v1/contacts/{id}/consent``; errors
name the option or field, like the API's.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from pushguard import documents
from pushguard.cli import _actor, _when, app_for, checked, handles_errors, id_column, out
from pushguard.exceptions import InputError

contacts_cli = typer.Typer(no_args_is_help=True, help="Contacts and their addresses.")
topics_cli = typer.Typer(no_args_is_help=True, help="Topics: marketing or transactional.")
consent_cli = typer.Typer(no_args_is_help=True, help="The consent ledger.")


# -- topics ---------------------------------------------------------------------------------

@topics_cli.command("add")
@handles_errors
def topics_add(
    name: str,
    kind: Annotated[str, typer.Option(help="marketing or transactional")],
    description: Annotated[str, typer.Option()] = "",
    double_opt_in: Annotated[bool, typer.Option(help="subscribing needs a confirmation")] = False,
    cap: Annotated[str | None, typer.Option(help="e.g. 3/1d")] = None,
    quiet_hours: Annotated[str | None, typer.Option(help="e.g. 21:00-08:00")] = None,
) -> None:
    """Create or change a topic."""
    from pushguard.audience.models import TopicIn

    t = checked(TopicIn, {"name": name, "kind": kind, "description": description,
                          "double_opt_in": double_opt_in, "cap": cap,
                          "quiet_hours": quiet_hours})
    got = app_for().audience.put_topic(t, actor=_actor())
    out.print(f"topic {got['name']} ({got['kind']})"
              + (", confirmed opt-in" if got["double_opt_in"] else "")
              + (f", cap {got['cap']}" if got["cap"] else ""))


@topics_cli.command("list")
@handles_errors
def topics_list() -> None:
    """List topics."""
    t = Table("name", "kind", "opt-in", "cap", "quiet hours", "description")
    for x in app_for().audience.topics():
        t.add_row(x["name"], x["kind"], "confirmed" if x["double_opt_in"] else "single",
                  x["cap"] or "", x["quiet_hours"] or "", x["description"])
    out.print(t)


# -- contacts -------------------------------------------------------------------------------

@contacts_cli.command("add")
@handles_errors
def contacts_add(
    external_id: str,
    email: Annotated[list[str] | None, typer.Option(help="an email address (repeatable)")] = None,
    phone: Annotated[list[str] | None, typer.Option(help="a phone number (repeatable)")] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA name, e.g. Europe/Paris")] = None,
    locale: Annotated[str | None, typer.Option()] = None,
    attributes: Annotated[str | None, typer.Option(help="a JSON object")] = None,
) -> None:
    """Create or update a contact (matched on its external id) and add addresses."""
    from pushguard.audience.models import ContactIn
    from pushguard.audience.service import normalise_contact

    raw: dict[str, Any] = {"external_id": external_id, "addresses": [
        *({"channel": "email", "address": e} for e in email or []),
        *({"channel": "sms", "address": p} for p in phone or []),
    ]}
    if timezone is not None:
        raw["timezone"] = timezone
    if locale is not None:
        raw["locale"] = locale
    if attributes is not None:
        raw["attributes"] = documents.parse(attributes, "--attributes")
    app = app_for()
    c = normalise_contact(checked(ContactIn, raw), app.guard)
    (res,) = app.audience.upsert([c], actor=_actor())
    out.print(f"{res.id} {'created' if res.created else 'updated'}")


@contacts_cli.command("show")
@handles_errors
def contacts_show(ref: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """A contact, its addresses and current consent."""
    c = app_for().audience.contact(ref)
    if as_json:
        print(json.dumps(c, indent=2))
        return
    out.print(f"[bold]{c['id']}[/bold]  {escape(c['external_id'])}  "
              f"tz={c['timezone'] or '-'}  locale={escape(c['locale'] or '-')}", markup=True)
    t = Table(id_column("address id"), "channel", "address", "status", "verified", "last seen")
    for a in c["addresses"]:
        status = a["status"] + (f" ({a['status_reason']})" if a["status_reason"] else "")
        t.add_row(a["id"], a["channel"], a["address"][:60], status,
                  "yes" if a["verified"] else "no", _when(a["last_seen"]))
    out.print(t)
    t = Table("topic", "channel", "consent", "source", "since")
    for x in c["consent"]:
        t.add_row(x["topic"], x["channel"], x["status"], x["source"], _when(x["at"]))
    out.print(t)


@contacts_cli.command("list")
@handles_errors
def contacts_list(limit: Annotated[int, typer.Option(min=1, max=500)] = 50) -> None:
    """List contacts."""
    t = Table(id_column(), "external id", "addresses", "consents")
    for c in app_for().audience.contacts(limit=limit):
        t.add_row(c["id"], c["external_id"], str(len(c["addresses"])),
                  str(sum(1 for x in c["consent"] if x["status"] == "granted")))
    out.print(t)


@contacts_cli.command("export")
@handles_errors
def contacts_export(ref: str) -> None:
    """Print everything held about a contact, as JSON."""
    print(json.dumps(app_for().audience.export(ref), indent=2))


@contacts_cli.command("erase")
@handles_errors
def contacts_erase(ref: str, yes: Annotated[bool, typer.Option("--yes")] = False) -> None:
    """Erase a contact; only hashed suppression entries of its addresses are kept."""
    if not yes:
        raise InputError("--yes", "erasure cannot be undone; add --yes to confirm")
    got = app_for().audience.erase(ref, actor=_actor())
    out.print(f"erased {got['id']}; {got['addresses_suppressed']} address(es) kept as hashes "
              "on the suppression list")


@contacts_cli.command("deactivate")
@handles_errors
def contacts_deactivate(
    ref: str, address_id: str,
    reason: Annotated[str, typer.Option()],
    evidence: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Deactivate one address of a contact (audited)."""
    app_for().audience.set_address_status(ref, address_id, "deactivated", reason, evidence,
                                          actor=_actor())
    out.print(f"deactivated {address_id}")


# -- consent --------------------------------------------------------------------------------

def _consent(ref: str, topic: str, channel: str, status: str, source: str,
             proof: str | None, policy_version: str | None) -> None:
    from pushguard.audience.models import ConsentIn
    from pushguard.audience.service import ConsentRecord

    body = checked(ConsentIn, {"topic": topic, "channel": channel, "status": status,
                               "source": source, "proof": proof,
                               "policy_version": policy_version})
    app = app_for()
    aud = app.audience
    cid = aud.resolve(ref)
    t = aud.topic(topic)
    if status == "granted" and t["double_opt_in"] and not aud.confirmed(
            cid, topic, channel, proof):
        raise InputError("--proof", f"topic {topic!r} needs confirmed opt-in: use `pushguard "
                         "contacts subscribe`, or give the id of a completed confirmation")
    (lid,) = aud.record_consent([ConsentRecord(
        cid, body.topic, body.channel, status, body.source, time.time(), None, None,
        body.proof, body.policy_version or app.config.audience.policy_version, _actor())])
    out.print(f"{status} {topic} on {channel} for {cid} (ledger #{lid})")


@consent_cli.command("grant")
@handles_errors
def consent_grant(
    ref: str, topic: str, channel: str,
    source: Annotated[str, typer.Option(help="form, api, import or admin")] = "admin",
    proof: Annotated[str | None, typer.Option(help="evidence of the consent")] = None,
    policy_version: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Record that a contact consented to a topic on a channel."""
    _consent(ref, topic, channel, "granted", source, proof, policy_version)


@consent_cli.command("withdraw")
@handles_errors
def consent_withdraw(
    ref: str, topic: str, channel: str,
    source: Annotated[str, typer.Option(help="form, api, import or admin")] = "admin",
    proof: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Record that a contact withdrew consent."""
    _consent(ref, topic, channel, "withdrawn", source, proof, None)


@consent_cli.command("history")
@handles_errors
def consent_history(ref: str) -> None:
    """The consent ledger of a contact, oldest first."""
    t = Table("#", "at", "topic", "channel", "status", "source", "actor", "proof")
    for r in app_for().audience.ledger(ref):
        t.add_row(str(r["id"]), _when(r["at"]), r["topic"], r["channel"], r["status"],
                  r["source"], r["actor"], (r["proof"] or "")[:40])
    out.print(t)
