"""How messages look to the outside: the JSON the API returns and the CLI prints."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pushguard.models import PRIORITY_NAMES, MessageView


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )



def message_json(view: MessageView, *, full: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": view.id,
        "channel": view.channel,
        "to": view.to,
        "topic": view.topic,
        "contact_id": view.contact_id,
        "priority": PRIORITY_NAMES.get(view.priority, "normal"),
        "state": view.state.value,
        "created_at": rfc3339(view.created_at),
        "updated_at": rfc3339(view.updated_at),
        "next_attempt_at": None if view.state.terminal else rfc3339(view.next_at),
        "expires_at": rfc3339(view.expires_at),
        "attempt_count": view.attempts_count,
        "idempotency_key": view.idempotency_key,
        "provider": view.last_provider,
        "provider_message_id": view.provider_message_id,
        "delivered_at": rfc3339(view.delivered_at),
        "failure": view.failure.as_dict() if view.failure else None,
        "parent_id": view.parent_id,
        "fallback_id": view.next_leg_id,
        "confirm_within": view.confirm_within,
        "confirmed_at": rfc3339(view.confirmed_at),
    }
    if full:
        out["content"] = view.content
        out["fallback"] = [{"channel": leg["channel"], "to": leg["to"]} for leg in view.fallback]
        out["attempts"] = [
            {
                "number": a.number, "at": rfc3339(a.at), "provider": a.provider,
                "outcome": a.outcome, "status": a.status, "provider_code": a.provider_code,
                "cause": a.cause, "latency_ms": None if a.latency_ms is None
                else round(a.latency_ms, 2), "maybe_sent": a.maybe_sent, "detail": a.detail,
                "raw": a.raw,
            }
            for a in view.attempts
        ]
        out["history"] = [
            {"at": rfc3339(t.at), "from": t.src, "to": t.dst, "reason": t.reason,
             "cause": t.cause}
            for t in view.history
        ]
    return out
