"""``pushguard contacts subscribe``: start a (confirmed) subscription.

The same core as ``POST /v1/contacts/{ref}/subscriptions``: a topic with confirmed opt-in sends
a confirmation message through the channel and stays ``pending`` until the link in it is
confirmed; any other topic is granted at once.
"""

from __future__ import annotations

from typing import Annotated

import typer

from pushguard.cli import _actor, app_for, checked, handles_errors, out


@handles_errors
def subscribe(
    ref: Annotated[str, typer.Argument(help="contact id or external id")],
    topic: Annotated[str, typer.Argument(help="a topic name")],
    channel: Annotated[str, typer.Argument(help="email, sms, push, webpush, chat or webhook")],
    source: Annotated[str, typer.Option(help="form, api, import or admin")] = "form",
    ip: Annotated[str | None, typer.Option(help="the person's IP address, as evidence")] = None,
    user_agent: Annotated[str | None, typer.Option(help="their browser, as evidence")] = None,
    policy_version: Annotated[str | None, typer.Option(help="the wording they agreed to")] = None,
) -> None:
    """Subscribe a contact to a topic on a channel (confirmed opt-in when the topic asks)."""
    from pushguard.audience import optin
    from pushguard.audience.models import SubscribeIn

    body = checked(SubscribeIn, {
        "topic": topic, "channel": channel, "source": source, "ip": ip,
        "user_agent": user_agent, "policy_version": policy_version})
    got = optin.subscribe(app_for(), ref, body, _actor())
    if got["status"] == "pending":
        # one line, never wrapped: scripts read the ids from it
        out.print(f"pending {topic} on {channel} for {got['contact_id']}: confirmation "
                  f"{got['confirmation_id']} sent as message {got['message_id']} "
                  f"({got['message_state']}) to {got['address']}, expires {got['expires_at']}",
                  soft_wrap=True, highlight=False)
    else:
        out.print(f"granted {topic} on {channel} for {got['contact_id']}"
                  + ("" if got["changed"] else " (already granted)"), highlight=False)
