"""Provider holds and breaker transitions: what one process decides or sees, every process
applies or knows.

A hold takes a provider out of routing until a time, in every worker (a person's failover, or
an alert's ``failover`` action). Circuit breakers live in each worker's memory, so their
transitions are written to ``circuit_events`` for the alert rules, which run anywhere.
"""

from __future__ import annotations

import os
import re
import socket
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select

from pushguard.exceptions import InputError, NotFound
from pushguard.store.schema import circuit_events, provider_holds
from pushguard.store.sql import SQLStore, audit
from pushguard.views import rfc3339

if TYPE_CHECKING:
    from pushguard.app import App
    from pushguard.duties import Tick

MAX_HOLD = 7 * 86400
#: breaker transitions are kept this long
KEEP_CIRCUIT_EVENTS = 7 * 86400
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
OWNER = f"{socket.gethostname()}:{os.getpid()}"[:64]


def parse_duration(text: str | float, field: str, *, least: float = 1,
                   most: float = MAX_HOLD) -> float:
    """``90``, ``90s``, ``10m``, ``2h``, ``1d`` in seconds, from ``least`` to ``most``;
    InputError naming ``field``."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        found = _DURATION.match(str(text))
        if not found:
            raise InputError(field, "must be a duration like 90s, 10m, 2h or 1d")
        seconds = float(found.group(1)) * _UNIT[found.group(2)]
    if not least <= seconds <= most:
        raise InputError(field, f"must be between {_span(least)} and {_span(most)}")
    return seconds


def _span(seconds: float) -> str:
    if seconds < 86400:
        return f"{seconds:g} s"
    days = seconds / 86400
    return f"{days:g} day" + ("" if days == 1 else "s")


class Holds:
    def __init__(self, store: SQLStore, providers: Any) -> None:
        self.store = store
        self.providers = providers

    def hold(self, provider: str, seconds: float, *, reason: str, actor: str) -> dict[str, Any]:
        if provider not in self.providers:
            raise NotFound(f"no provider {provider!r}; configured: "
                           f"{', '.join(sorted(self.providers))}")
        reason = reason.strip()
        if not reason or len(reason) > 500:
            raise InputError("reason", "is required: say why (at most 500 characters)")
        now = time.time()
        row = {"provider": provider, "held_until": now + seconds, "reason": reason,
               "actor": actor[:64], "created_at": now}
        with self.store._write() as conn:
            conn.execute(delete(provider_holds).where(provider_holds.c.provider == provider))
            conn.execute(insert(provider_holds).values(row))
            audit(conn, actor, "provider.hold", f"provider:{provider}",
                  {"seconds": seconds, "reason": reason}, now=now)
        return _json(row)

    def release(self, provider: str, *, actor: str) -> bool:
        with self.store._write() as conn:
            gone = conn.execute(delete(provider_holds).where(
                provider_holds.c.provider == provider)).rowcount
            if gone:
                audit(conn, actor, "provider.release", f"provider:{provider}", {})
        return bool(gone)

    def active(self, now: float | None = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        with self.store._read() as conn:
            rows = conn.execute(select(provider_holds).where(
                provider_holds.c.held_until > now).order_by(provider_holds.c.provider))
            return [_json(r._mapping) for r in rows]


def _json(row: Any) -> dict[str, Any]:
    return {"provider": row["provider"], "until": rfc3339(row["held_until"]),
            "reason": row["reason"], "actor": row["actor"], "since": rfc3339(row["created_at"])}


def apply_holds(app: App, store: SQLStore) -> None:
    """Give every router of this process the holds in force now (and lift the others)."""
    with store._read() as conn:
        held = dict(conn.execute(select(provider_holds.c.provider, provider_holds.c.held_until)
                                 .where(provider_holds.c.held_until > time.time())).all())
    for router in app.routers:
        for name in {p.name for ps in router.channels.values() for p in ps}:
            router.hold(name, held.get(name, 0.0))


def flush_circuits(app: App, store: SQLStore) -> int:
    """Write the breaker transitions this process saw since the last flush."""
    rows = []
    while app.circuit_log:
        at, key, old, new = app.circuit_log.popleft()
        rows.append({"at": at, "owner": OWNER, "breaker": key[:160], "src": old, "dst": new})
    if rows:
        with store._write() as conn:
            conn.execute(insert(circuit_events), rows)
            conn.execute(delete(circuit_events).where(
                circuit_events.c.at < time.time() - KEEP_CIRCUIT_EVENTS))
    return len(rows)


def holds_tick(app: App) -> Tick | None:
    """The worker duty that keeps this process's routers in step with the holds table."""
    if not isinstance(app.store, SQLStore):
        return None
    store = app.store
    return lambda: apply_holds(app, store)
