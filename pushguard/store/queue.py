"""The queue's hot path in plain SQL: claim a batch, record a batch.

These statements run once per batch for every message a worker handles, so they skip
SQLAlchemy's per-row parameter processing and go to the driver directly (executemany with
tuples). Everything else in the store uses SQLAlchemy Core. Keep the SQL portable between
SQLite and PostgreSQL; ``?`` marks become ``%s`` for psycopg.
"""

from __future__ import annotations

import json
import operator
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

from pushguard.models import Job, NewMessage, Outcome
from pushguard.states import State

CHUNK = 500

_JOB_COLUMNS = (
    "id, channel, to_addr, content, topic, priority, attempts, state, created_at, expires_at, "
    "avoid_provider, last_cause, fallback, contact_id, fanout_of, campaign_id"
)
# The condition must read exactly like the partial index's, or the planner will not use it.
_CLAIM = (
    f"SELECT {_JOB_COLUMNS} FROM messages "
    "WHERE state IN ('queued', 'retry_scheduled', 'deferred') AND priority = ? AND next_at <= ? "
    "ORDER BY next_at LIMIT ?"
)
_LEASE = "UPDATE messages SET state = 'sending', lease_owner = ?, lease_until = ?, " \
    "updated_at = ? WHERE id IN ({ids})"
_EVENT = "INSERT INTO events (message_id, at, src, dst, reason, cause) VALUES (?, ?, ?, ?, ?, ?)"
_EARLY = "SELECT id, message_id, receipt FROM early_receipts WHERE message_id IN ({ids})"
_HELD = "SELECT id FROM messages WHERE id IN ({ids}) AND lease_owner = ? AND state = 'sending'"
_OUTCOME = (
    "UPDATE messages SET state = ?, updated_at = ?, next_at = COALESCE(?, next_at), "
    "attempts = attempts + ?, lease_owner = NULL, lease_until = NULL, "
    "last_provider = COALESCE(?, last_provider), avoid_provider = ?, "
    "last_cause = COALESCE(?, last_cause), failure = COALESCE(?, failure), delivered_at = ?, "
    "provider_message_id = COALESCE(?, provider_message_id), "
    "confirm_by = CASE WHEN confirm_within IS NOT NULL AND ? = 1 THEN ? + confirm_within "
    "ELSE NULL END "
    "WHERE id = ? AND lease_owner = ? AND state = 'sending'"
)
_ATTEMPT = (
    "INSERT INTO attempts (message_id, number, at, provider, outcome, latency_ms, status, "
    "provider_code, cause, maybe_sent, detail, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

# PostgreSQL: one statement per batch, its rows passed as one array per column. executemany
# runs the statement once per row on the server; unnest() makes it one execution, which is
# most of the difference between PostgreSQL and SQLite on the hot path. The arrays go in
# binary (%b): psycopg's text format quotes every element through a regular expression.
_EVENT_PG = (
    "INSERT INTO events (message_id, at, src, dst, reason, cause) SELECT * FROM unnest("
    "%b::text[], %b::float8[], %b::text[], %b::text[], %b::text[], %b::text[])"
)
_ATTEMPT_PG = (
    "INSERT INTO attempts (message_id, number, at, provider, outcome, latency_ms, status, "
    "provider_code, cause, maybe_sent, detail, raw) SELECT * FROM unnest(%b::text[], "
    "%b::int[], %b::float8[], %b::text[], %b::text[], %b::float8[], %b::int[], %b::text[], "
    "%b::text[], %b::bool[], %b::text[], %b::text[])"
)
_OUTCOME_PG = (
    "UPDATE messages AS m SET state = v.state, updated_at = v.now, "
    "next_at = COALESCE(v.next_at, m.next_at), attempts = m.attempts + v.inc, "
    "lease_owner = NULL, lease_until = NULL, "
    "last_provider = COALESCE(v.provider, m.last_provider), avoid_provider = v.avoid, "
    "last_cause = COALESCE(v.cause, m.last_cause), failure = COALESCE(v.failure, m.failure), "
    "delivered_at = v.delivered_at, "
    "provider_message_id = COALESCE(v.pmid, m.provider_message_id), "
    "confirm_by = CASE WHEN m.confirm_within IS NOT NULL AND v.delivered = 1 "
    "THEN v.now + m.confirm_within ELSE NULL END "
    "FROM unnest(%b::text[], %b::float8[], %b::float8[], %b::int[], %b::text[], %b::text[], "
    "%b::text[], %b::text[], %b::float8[], %b::text[], %b::int[], %b::text[]) "
    "AS v(state, now, next_at, inc, provider, avoid, cause, failure, delivered_at, pmid, "
    "delivered, id) "
    "WHERE m.id = v.id AND m.lease_owner = %s AND m.state = 'sending'"
)


def _columns(
    rows: Sequence[tuple[Any, ...]], floats: tuple[int, ...] = ()
) -> tuple[list[Any], ...]:
    """Rows as one list per column (for unnest); the ``floats`` columns as floats, since a
    column that mixes ints and floats is not one array type."""
    cols = tuple(list(c) for c in zip(*rows, strict=True))
    for i in floats:
        cols[i][:] = [None if v is None else float(v) for v in cols[i]]
    return cols


def message_row(
    m: NewMessage, now: float, state: State, *, scope: str = "", failure: str | None = None
) -> dict[str, Any]:
    """The ``messages`` row of a new message (intake, or a fallback leg)."""
    due = m.send_at if m.send_at is not None else now
    return {
        "id": m.id,
        "channel": m.channel,
        "to_addr": m.to,
        "content": m.content_json if m.content_json is not None
        else json.dumps(m.content, separators=(",", ":")),
        "topic": m.topic,
        "priority": m.priority,
        "state": state.value,
        "accepted_state": state.value,
        "created_at": now,
        "updated_at": now,
        "next_at": due,
        "expires_at": max(due, now) + m.ttl,
        "attempts": 0,
        "lost_leases": 0,
        "idem_scope": scope if m.idempotency_key else None,
        "idem_key": m.idempotency_key,
        "request_hash": m.request_hash,
        "last_cause": None,
        "failure": failure,
        "fallback": json.dumps(m.fallback, separators=(",", ":")) if m.fallback else None,
        "parent_id": m.parent_id,
        "contact_id": m.contact_id,
        "confirm_within": m.confirm_within,
        "fanout_of": m.fanout_of,
        "campaign_id": m.campaign_id,
        "template": m.template,
        "avoid_provider": m.avoid_provider,
    }


class QueueSQL:
    """The hot-path statements, written for one dialect."""

    def __init__(self, dialect: str) -> None:
        self.pg = dialect == "postgresql"

    def _sql(self, sql: str, n: int = 0) -> str:
        if n:
            sql = sql.replace("{ids}", ", ".join("?" * n))
        return sql.replace("?", "%s") if self.pg else sql

    def claim(self, conn: Connection, owner: str, limit: int, lease: float) -> list[Job]:
        now = time.time()
        rows: list[Any] = []
        sql = self._sql(_CLAIM) + (" FOR UPDATE SKIP LOCKED" if self.pg else "")
        for priority in (0, 1, 2):
            need = limit - len(rows)
            if need <= 0:
                break
            rows.extend(conn.exec_driver_sql(sql, (priority, now, need)).all())
        if not rows:
            return []
        ids = [r[0] for r in rows]
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i : i + CHUNK]
            conn.exec_driver_sql(self._sql(_LEASE, len(chunk)),
                                 (owner, now + lease, now, *chunk))
        reason = f"claimed by {owner}"
        self.add_events(conn, [(r[0], now, r[7], "sending", reason, None) for r in rows])
        return [
            Job(
                id=r[0], channel=r[1], to=r[2], content=json.loads(r[3]), topic=r[4],
                priority=r[5], attempts=r[6], created_at=r[8],
                expires_at=r[9], avoid_provider=r[10], last_cause=r[11],
                fallback=json.loads(r[12]) if r[12] else [], contact_id=r[13],
                fanout_of=r[14], campaign_id=r[15],
            )
            for r in rows
        ]

    def insert_messages(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """New ``messages`` rows (:func:`message_row`'s dicts, all with the same keys), as
        tuples straight to the driver: SQLAlchemy's parameter processing, per row and per
        column, was a third of what a batch of 1000 cost the API."""
        if not rows:
            return
        cols = tuple(rows[0])
        if any(len(r) != len(cols) for r in rows):  # with itemgetter's KeyError: same keys
            raise ValueError("message rows of one batch must have the same columns")
        get = operator.itemgetter(*cols)
        sql = f"INSERT INTO messages ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        conn.exec_driver_sql(self._sql(sql), [get(r) for r in rows])

    def early_receipts(self, conn: Connection, ids: Sequence[str]) -> list[Any]:
        """Receipts that arrived before these messages' outcomes (almost always none)."""
        out: list[Any] = []
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i : i + CHUNK]
            out.extend(conn.exec_driver_sql(self._sql(_EARLY, len(chunk)), tuple(chunk)).all())
        return out

    def held(self, conn: Connection, owner: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` this worker still holds under its lease."""
        out: set[str] = set()
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i : i + CHUNK]
            sql = self._sql(_HELD, len(chunk)) + (" FOR UPDATE" if self.pg else "")
            out.update(r[0] for r in conn.exec_driver_sql(sql, (*chunk, owner)))
        return out

    def record(self, conn: Connection, owner: str, outcomes: Sequence[Outcome],
               now: float) -> list[tuple[str, str, str, str, float]]:
        """Write outcomes; returns the suppressions they ask for, for the caller to insert."""
        ups, atts, evs, sups = [], [], [], []
        for o in outcomes:
            f = o.failure
            ups.append((
                o.state.value, now, o.next_at, 1 if (o.attempt and o.counts_attempt) else 0,
                o.provider, o.avoid_provider, f.cause if f else None,
                json.dumps(f.as_dict()) if f else None,
                now if o.state is State.DELIVERED else None, o.provider_message_id,
                1 if o.state is State.DELIVERED else 0, now, o.id, owner,
            ))
            a = o.attempt
            if a is not None:
                atts.append((o.id, a.number, a.at, a.provider, a.outcome, a.latency_ms, a.status,
                             a.provider_code, a.cause, a.maybe_sent, a.detail, a.raw))
            evs.append((o.id, now, "sending", o.state.value, o.reason, f.cause if f else None))
            if o.suppress is not None:
                ch, addr, reason = o.suppress
                sups.append((ch, addr, reason, f"message {o.id}", now))
        if self.pg:
            cols = _columns([(*u[:11], u[12]) for u in ups], floats=(1, 2, 8))
            conn.exec_driver_sql(_OUTCOME_PG, (*cols, owner))
            if atts:
                conn.exec_driver_sql(_ATTEMPT_PG, _columns(atts, floats=(2, 5)))
        else:
            conn.exec_driver_sql(self._sql(_OUTCOME), ups)
            if atts:
                conn.exec_driver_sql(self._sql(_ATTEMPT), atts)
        self.add_events(conn, evs)
        return sups

    def add_events(self, conn: Connection, rows: list[tuple[Any, ...]]) -> None:
        """``events`` rows as (message_id, at, src, dst, reason, cause) tuples."""
        if not rows:
            return
        if self.pg:
            conn.exec_driver_sql(_EVENT_PG, _columns(rows, floats=(1,)))
        else:
            conn.exec_driver_sql(self._sql(_EVENT), rows)
