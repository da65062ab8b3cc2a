"""What an incident (or an alert rule, automatically) can do: pause a campaign, hold a provider.

Pausing goes through the campaign service (``App.campaigns``), the one place that knows how
to hold a campaign's messages; holding goes through :class:`~.holds.Holds`, which every
worker applies within seconds. Each action leaves an entry on the incident's timeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pushguard.diagnosis.holds import Holds, parse_duration
from pushguard.diagnosis.incidents import event
from pushguard.exceptions import InputError
from pushguard.store.sql import SQLStore

if TYPE_CHECKING:
    from pushguard.app import App

ACTIONS = ("pause", "failover")


def pause_campaign(app: App, campaign: str, *, reason: str, actor: str) -> dict[str, Any]:
    """Pause ``campaign`` through the campaign service; a clear error when this build has
    none."""
    return app.campaigns.pause(campaign, reason=reason, actor=actor)


def failover(app: App, provider: str, seconds: float, *, reason: str,
             actor: str) -> dict[str, Any]:
    assert isinstance(app.store, SQLStore)
    if len(reason) > 500:  # an alert's summary may list many open circuits
        reason = reason[:497] + "..."
    return Holds(app.store, app.config.providers).hold(provider, seconds, reason=reason,
                                                       actor=actor)


def act(app: App, incident_id: str, action: str, *, actor: str, campaign: str | None = None,
        provider: str | None = None, duration: str | float | None = None,
        reason: str | None = None) -> dict[str, Any]:
    """Run one action for an incident and put it on its timeline."""
    from pushguard.diagnosis.incidents import Incidents

    book = Incidents(app)
    with book.store._read() as conn:
        row = book.row(conn, incident_id)
    kind, _, name = row.scope.partition(":")
    why = (reason or "").strip() or f"incident {incident_id}: {row.title}"
    if action == "pause":
        campaign = campaign or (name if kind == "campaign" else None)
        if not campaign:
            raise InputError("campaign", "is required: this incident is not about a campaign")
        result = pause_campaign(app, campaign, reason=why, actor=actor)
        text = f"paused campaign {campaign}"
    elif action == "failover":
        provider = provider or (name if kind == "provider" else None)
        if not provider:
            raise InputError("provider", "is required: this incident is not about a provider")
        if provider not in app.config.providers:
            raise InputError("provider", f"unknown provider {provider!r}; configured: "
                             f"{', '.join(sorted(app.config.providers))}")
        seconds = parse_duration(duration if duration is not None else "10m", "for")
        result = failover(app, provider, seconds, reason=why, actor=actor)
        text = f"held provider {provider} until {result['until']} (failover)"
    else:
        raise InputError("action", f"must be one of: {', '.join(ACTIONS)}")
    with book.store._write() as conn:
        event(conn, incident_id, "action", text, actor=actor,
              detail={"action": action, "result": result})
    return {"action": action, "result": result, "message": text}
