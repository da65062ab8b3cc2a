"""Alert notifications, sent through pushguard's own channels (``[alerts] notify``).

Each is an ordinary message under the idempotency scope :data:`~.measures.NOTIFY_SCOPE`, with
one key per alert, level and target: whichever worker process notices a change first enqueues
it, the others replay the same message, and the rules never count these messages (an alert
about failing webhooks would otherwise feed on its own failing notification).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import structlog

from pushguard.diagnosis.measures import NOTIFY_SCOPE
from pushguard.exceptions import IdempotencyConflict, InputError

if TYPE_CHECKING:
    from pushguard.app import App

log = structlog.get_logger("pushguard.alerts")

#: a notification is worth nothing after an hour: the alert's page says the rest
TTL = 3600
SMS_LIMIT = 600


def content_for(channel: str, level: str, alert: dict[str, Any]) -> dict[str, Any]:
    """What a notification says on each kind of channel."""
    head = "RESOLVED" if level == "resolved" else level.upper()
    title = f"[pushguard] {head}: {alert['rule']} on {alert['scope']}"
    if channel == "webhook":
        return {"type": f"pushguard.alert.{level}", "level": level, "alert": alert}
    lines = [title, "", alert["summary"]]
    causes = alert.get("detail", {}).get("top_causes") or []
    if causes:
        lines += ["", "Top causes: " + ", ".join(f"{c['cause']} ({c['count']})" for c in causes)]
    if alert.get("incident_id"):
        lines += ["", f"Incident: pushguard incidents show {alert['incident_id']}"]
    text = "\n".join(lines)
    if channel == "email":
        return {"subject": title, "text": text}
    return {"text": text[:SMS_LIMIT]}


class Notifier:
    def __init__(self, app: App) -> None:
        self.app = app

    def send(self, alert: dict[str, Any], level: str) -> list[str]:
        """Enqueue one notification per target; returns the message ids (a replay of an
        already enqueued notification returns its id again)."""
        from pushguard.intake import MessageIn  # here: a worker imports this module at start

        ids = []
        for i, target in enumerate(self.app.config.alerts.notify):
            key = f"alert:{alert['id']}:{level}:{i}"
            try:
                item = MessageIn(channel=target.channel, to=target.to, priority="high",
                                 content=content_for(target.channel, level, alert), ttl=TTL,
                                 idempotency_key=key)
                msg = self.app.intake.prepare(item)
            except InputError as exc:
                log.error("alert_notify_invalid", target=target.to, error=str(exc))
                continue
            # the body carries changing figures: the key alone says what was asked for
            msg.request_hash = hashlib.sha256(json.dumps([key, target.to]).encode()).hexdigest()
            (result,) = self.app.intake.submit([msg], scope=NOTIFY_SCOPE)
            if isinstance(result, IdempotencyConflict):  # pragma: no cover - same key, same hash
                continue
            ids.append(result.id)
        return ids
