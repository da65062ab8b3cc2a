"""Retention: delete the history of messages that finished long ago.

Nothing else deletes messages, so without this the ``messages``, ``attempts`` and ``events``
tables grow for ever. A message is pruned with its attempts, events and early receipts when
all of this holds:

- it is terminal (delivered, suppressed, failed, expired, dead), was created and last changed
  before the cutoff, and waits for no delivery receipt (``confirm_by``);
- every message of its fallback chain is prunable too: a chain goes as a whole or not at all,
  so no kept leg points at a deleted message;
- it belongs to no campaign, or to one that finished (completed or cancelled) before the
  cutoff: a campaign's results stay whole until the campaign itself is that old.

Kept whatever their age: the consent ledger and confirmations (proof of consent),
suppressions, the audit log, contacts, campaigns and their recipient lists, alerts and
incidents. The frequency-cap history (``contact_sends``) is pruned too, but never within the
longest cap window, so caps count what they must.

What pruning costs: an idempotency key is remembered only as long as its message; a receipt
(a late complaint) for a pruned message finds nothing to act on; counts read from messages
(an old campaign's progress and report, an old incident's blast radius, the data doctor's
"no delivery in 270 days") see only what is kept. Hence at least :data:`MIN_AGE`.

Each batch is its own short transaction, so workers and the API wait at most one batch; on
PostgreSQL its rows are locked (skipping rows a receipt holds) and the condition is checked
again as they are deleted. Each prune that deleted something is in the audit log.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, and_, delete, exists, func, not_, or_, select

from pushguard.states import TERMINAL
from pushguard.store.schema import (
    attempts,
    campaigns,
    contact_sends,
    early_receipts,
    events,
    messages,
)
from pushguard.store.sql import SQLStore, audit
from pushguard.views import rfc3339

#: the shortest retention ``prune`` accepts: past receipt windows (7 days at most) and the
#: complaints and bounce reports that come days late, and long enough to answer "why"
MIN_AGE = 30 * 86400
_CHUNK = 500
_FINISHED_CAMPAIGN = ("completed", "cancelled")


@dataclass
class Pruned:
    messages: int = 0
    attempts: int = 0
    events: int = 0
    contact_sends: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _prunable(before: float) -> Any:
    """One message, judged alone (its chain is judged in :func:`_whole_chains`)."""
    m = messages.c
    open_campaign = exists().where(campaigns.c.id == m.campaign_id, or_(
        campaigns.c.state.not_in(_FINISHED_CAMPAIGN), campaigns.c.finished_at.is_(None),
        campaigns.c.finished_at >= before))
    return and_(m.created_at < before, m.updated_at < before,
                m.state.in_([s.value for s in TERMINAL]),
                m.confirm_by.is_(None),  # a receipt may still start its fallback leg
                or_(m.campaign_id.is_(None), not_(open_campaign)))


def _whole_chains(conn: Connection, ids: Sequence[str], cond: Any) -> set[str]:
    """Of ``ids`` (prunable alone), those whose whole fallback chain is prunable, with the
    rest of those chains: a chain goes as a whole or not at all, so no kept leg points at a
    deleted message (chains are at most six messages long)."""
    edges: list[tuple[str, str]] = []
    known, frontier = set(ids), set(ids)
    while frontier:
        found: set[str] = set()
        part = sorted(frontier)
        for k in range(0, len(part), _CHUNK):
            chunk = part[k:k + _CHUNK]
            # two lookups, each on its own index (the primary key, ix_messages_parent)
            for where in (messages.c.id.in_(chunk), messages.c.parent_id.in_(chunk)):
                for child, parent in conn.execute(select(
                        messages.c.id, messages.c.parent_id).where(
                        where, messages.c.parent_id.is_not(None))):
                    edges.append((child, parent))
                    found.update((child, parent))
        frontier = found - known
        known |= found
    if not edges:
        return set(ids)
    root = {x: x for x in known}

    def find(x: str) -> str:
        while root[x] != x:
            root[x] = root[root[x]]
            x = root[x]
        return x

    for a, b in edges:
        root[find(a)] = find(b)
    chained = sorted({x for e in edges for x in e})
    ok: set[str] = set()
    for k in range(0, len(chained), _CHUNK):
        ok.update(conn.execute(select(messages.c.id).where(
            messages.c.id.in_(chained[k:k + _CHUNK]), cond)).scalars())
    bad = {find(x) for x in chained if x not in ok}
    return {x for x in known if find(x) not in bad and (x in ok or x not in chained)}


def _delete_in(conn: Connection, table: Any, column: Any, ids: Sequence[Any]) -> int:
    n = 0
    for i in range(0, len(ids), _CHUNK):
        n += conn.execute(delete(table).where(column.in_(ids[i:i + _CHUNK]))).rowcount or 0
    return n


def prune(store: SQLStore, before: float, *, batch: int = 2000, dry_run: bool = False,
          actor: str = "system") -> Pruned:
    """Delete what finished before ``before`` (a Unix time), ``batch`` messages per
    transaction; with ``dry_run``, count what would go and delete nothing."""
    got = Pruned()
    cond = _prunable(before)
    with store._read() as conn:  # caps count sends over their windows: those stay
        rules = store.gate.topic_rules(conn)
    old_sends = contact_sends.c.at < min(before, time.time() - store.gate.longest_cap(rules))
    m = messages.c
    cursor: tuple[float, str] | None = None  # one walk along ix_messages_created
    seen: set[str] = set()  # chain members counted ahead of the walk (dry run)
    while True:
        with (store._read() if dry_run else store._write()) as conn:
            q = select(m.id, m.created_at).where(cond).order_by(m.created_at, m.id).limit(batch)
            if cursor is not None:
                q = q.where(or_(m.created_at > cursor[0],
                                and_(m.created_at == cursor[0], m.id > cursor[1])))
            if store.dialect == "postgresql" and not dry_run:
                q = q.with_for_update(skip_locked=True)  # a receipt changing it now wins
            rows = conn.execute(q).all()
            if not rows:
                break
            cursor = (rows[-1][1], rows[-1][0])
            doomed = sorted(_whole_chains(conn, [r[0] for r in rows], cond) - seen)
            if dry_run:
                seen.update(doomed)
                got.messages += len(doomed)
                got.attempts += _count_in(conn, attempts, attempts.c.message_id, doomed)
                got.events += _count_in(conn, events, events.c.message_id, doomed)
                continue
            # the condition again, on the rows themselves: what changed since the select
            # (PostgreSQL; SQLite's writer lock already excludes it) is not deleted
            gone: list[str] = []
            for k in range(0, len(doomed), _CHUNK):
                gone += conn.execute(delete(messages).where(
                    m.id.in_(doomed[k:k + _CHUNK]), cond).returning(m.id)).scalars().all()
            got.messages += len(gone)
            got.attempts += _delete_in(conn, attempts, attempts.c.message_id, gone)
            got.events += _delete_in(conn, events, events.c.message_id, gone)
            _delete_in(conn, early_receipts, early_receipts.c.message_id, gone)
    if dry_run:
        with store._read() as conn:
            got.contact_sends = conn.execute(select(func.count()).select_from(contact_sends)
                                             .where(old_sends)
                                             ).scalar_one()
        return got
    while True:
        with store._write() as conn:
            old = list(conn.execute(select(contact_sends.c.id).where(
                old_sends).limit(batch * 5)).scalars())
            if not old:
                break
            got.contact_sends += _delete_in(conn, contact_sends, contact_sends.c.id, old)
    if got.messages or got.contact_sends:
        with store._write() as conn:
            audit(conn, actor, "retention.prune", "messages",
                  {"before": rfc3339(before), **got.as_dict()})
    return got


def _count_in(conn: Connection, table: Any, column: Any, ids: Sequence[Any]) -> int:
    n = 0
    for i in range(0, len(ids), _CHUNK):
        n += conn.execute(select(func.count()).select_from(table).where(
            column.in_(ids[i:i + _CHUNK]))).scalar_one()
    return n
