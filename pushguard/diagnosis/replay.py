"""Replaying an incident's affected messages through another provider or another channel.

A replay is a new message with the failed one's content, to the same recipient (or the
contact's active address on the other channel), committed under the idempotency scope
:data:`REPLAY_SCOPE` with one key per incident and original message: replaying twice, from
any process, enqueues each message once. ``+name`` in ``avoid_provider`` asks the router for
that provider first (:data:`pushguard.routing.PREFER`).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Literal

from pushguard.exceptions import IdempotencyConflict, InputError, NotFound
from pushguard.intake import MessageIn
from pushguard.models import Accepted, NewMessage
from pushguard.routing import PREFER
from pushguard.states import State
from pushguard.store.sql import SQLStore

if TYPE_CHECKING:
    from pushguard.app import App
    from pushguard.diagnosis.incidents import Incidents

REPLAY_SCOPE = "incidents"
_PRIORITY: dict[int, Literal["high", "normal", "bulk"]] = {0: "high", 1: "normal", 2: "bulk"}
MAX_REPLAY = 10_000


def _hash(*parts: str) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def replay(app: App, book: Incidents, incident_id: str, *, via: str | None = None,
           channel: str | None = None, actor: str) -> dict[str, Any]:
    """Enqueue the affected messages again; returns what was enqueued, what had been already,
    and what was skipped and why."""
    from pushguard.diagnosis.incidents import event

    if (via is None) == (channel is None):
        raise InputError("via", "give either via (a provider) or channel (one of them)")
    if via is not None and via not in app.config.providers:
        raise InputError("via", f"unknown provider {via!r}; configured: "
                         f"{', '.join(sorted(app.config.providers))}")
    if channel is not None and channel not in app.config.channels:
        raise InputError("channel", f"no provider serves channel {channel!r}; configured: "
                         f"{', '.join(sorted(app.config.channels))}")
    rows = book.affected(incident_id, MAX_REPLAY)
    todo: list[tuple[str, NewMessage]] = []
    skipped: list[dict[str, str]] = []
    for row in rows:
        try:
            todo.append((row.id, _copy(app, incident_id, row, via, channel)))
        except InputError as exc:
            skipped.append({"message": row.id, "reason": str(exc)})
    results = app.intake.submit([m for _, m in todo], scope=REPLAY_SCOPE) if todo else []
    enqueued: list[dict[str, str]] = []
    stopped: list[dict[str, str]] = []  # accepted, but the gate stopped them at once
    again: list[dict[str, str]] = []
    for (original, _), res in zip(todo, results, strict=True):
        if isinstance(res, Accepted):
            got = {"original": original, "id": res.id, "state": res.state.value}
            if res.replayed:
                again.append(got)
            elif res.state is State.SUPPRESSED:
                stopped.append(got)
            else:
                enqueued.append(got)
        elif isinstance(res, IdempotencyConflict):
            skipped.append({"message": original,
                            "reason": "already replayed in this incident another way"})
    how = f"through provider {via}" if via else f"on channel {channel}"
    summary = {"via": via, "channel": channel, "enqueued": enqueued, "stopped": stopped,
               "already": again, "skipped": skipped, "truncated": len(rows) == MAX_REPLAY}
    assert isinstance(app.store, SQLStore)
    with app.store._write() as conn:
        book.row(conn, incident_id)
        event(conn, incident_id, "replay",
              f"replayed {len(enqueued)} messages {how} ({len(stopped)} stopped by the "
              f"pre-send gate, {len(again)} already replayed, {len(skipped)} skipped)",
              actor=actor,
              detail={"via": via, "channel": channel, "enqueued": len(enqueued),
                      "stopped": len(stopped), "already": len(again),
                      "skipped": skipped[:50]})
    return summary


def _copy(app: App, incident_id: str, row: Any, via: str | None,
          channel: str | None) -> NewMessage:
    content = json.loads(row.content)
    key = f"replay:{incident_id}:{row.id}"
    if via is not None:
        if via not in app.config.channels.get(row.channel, ()):
            raise InputError("via", f"provider {via!r} does not serve channel {row.channel!r}")
        return NewMessage(
            channel=row.channel, to=row.to_addr, content=content, topic=row.topic,
            priority=row.priority, ttl=app.settings.default_ttl, idempotency_key=key,
            request_hash=_hash(row.id, "via", via), contact_id=row.contact_id,
            campaign_id=row.campaign_id, template=row.template,
            avoid_provider=f"{PREFER}{via}")
    assert channel is not None
    if row.contact_id is None:
        raise InputError("channel", "the message names no contact to find an address of")
    try:
        _, found = app.audience.active_addresses(row.contact_id, channel)
    except NotFound as exc:
        raise InputError("channel", exc.message) from exc
    msg = app.intake.prepare(MessageIn(
        channel=channel, to=found[0], contact=row.contact_id, content=content,
        topic=row.topic, priority=_PRIORITY.get(row.priority, "normal")))
    msg.idempotency_key, msg.request_hash = key, _hash(row.id, "channel", channel)
    msg.campaign_id, msg.template, msg.fanout = row.campaign_id, row.template, []
    return msg
