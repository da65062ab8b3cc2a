"""Retention: delete the history of messages that finished long ago.

Nothing else deletes messages, so without this the ``messages``, ``attempts`` and ``events``
tables grow for ever. A message is pruned with its attempts, events and early receipts when
all of this holds:

- it is terminal (delivered, suppressed, failed, expired, dead) and was created and last
  changed before the cutoff;
- no fallback leg of it is still waiting or recent (a chain goes as a whole, so no kept leg
  points at a deleted parent);
- it belongs to no campaign, or to one that finished (completed or cancelled) before the
  cutoff: a campaign's report stays whole until the campaign itself is that old.

Kept whatever their age: the consent ledger and confirmations (proof of consent),
suppressions, the audit log, contacts, campaigns and their recipient lists, alerts and
incidents. The frequency-cap history (``contact_sends``) is pruned too, but never within the
longest cap window, so caps count what they must.

What pruning costs a client: an idempotency key is remembered only as long as its message.

Each batch is its own short transaction, so workers and the API wait at most one batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, and_, delete, exists, func, not_, or_, select
from sqlalchemy.orm import aliased

from pushguard.audience.rules import Cap
from pushguard.exceptions import InputError
from pushguard.states import TERMINAL
from pushguard.store.schema import (
    attempts,
    campaigns,
    contact_sends,
    early_receipts,
    events,
    messages,
    topics,
)
from pushguard.store.sql import SQLStore

#: the shortest retention ``prune`` accepts: clients retry with the same idempotency key for
#: hours, and an answer to "why" is wanted for days
MIN_AGE = 86400
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
    m = messages.c
    leg = aliased(messages)
    live_leg = exists().where(leg.c.parent_id == m.id, or_(
        leg.c.state.not_in([s.value for s in TERMINAL]), leg.c.updated_at >= before))
    open_campaign = exists().where(campaigns.c.id == m.campaign_id, or_(
        campaigns.c.state.not_in(_FINISHED_CAMPAIGN), campaigns.c.finished_at.is_(None),
        campaigns.c.finished_at >= before))
    return and_(m.created_at < before, m.updated_at < before,
                m.state.in_([s.value for s in TERMINAL]), not_(live_leg),
                or_(m.campaign_id.is_(None), not_(open_campaign)))


def _longest_cap(conn: Connection, store: SQLStore) -> float:
    policy = store.gate.policy.marketing_cap
    longest = policy.seconds if policy else 0.0
    for (text,) in conn.execute(select(topics.c.cap).where(topics.c.cap.is_not(None))):
        try:
            longest = max(longest, Cap.parse(text).seconds)
        except InputError:  # a cap the gate cannot read either: it counts nothing
            continue
    return longest


def _delete_in(conn: Connection, table: Any, column: Any, ids: Sequence[Any]) -> int:
    n = 0
    for i in range(0, len(ids), _CHUNK):
        n += conn.execute(delete(table).where(column.in_(ids[i:i + _CHUNK]))).rowcount or 0
    return n


def prune(store: SQLStore, before: float, *, batch: int = 2000,
          dry_run: bool = False) -> Pruned:
    """Delete what finished before ``before`` (a Unix time), ``batch`` messages per
    transaction; with ``dry_run``, count what would go and delete nothing."""
    got = Pruned()
    cond = _prunable(before)
    if dry_run:
        with store._read() as conn:
            doomed = select(messages.c.id).where(cond)
            got.messages = conn.execute(select(func.count()).where(cond)
                                        .select_from(messages)).scalar_one()
            got.attempts = conn.execute(select(func.count()).select_from(attempts).where(
                attempts.c.message_id.in_(doomed))).scalar_one()
            got.events = conn.execute(select(func.count()).select_from(events).where(
                events.c.message_id.in_(doomed))).scalar_one()
            got.contact_sends = conn.execute(select(func.count()).select_from(contact_sends)
                                             .where(_old_sends(conn, store, before))
                                             ).scalar_one()
        return got
    after = float("-inf")  # the batches walk ix_messages_created once, past what is kept
    while True:
        with store._write() as conn:
            rows = conn.execute(select(messages.c.id, messages.c.created_at).where(
                cond, messages.c.created_at >= after).order_by(messages.c.created_at)
                .limit(batch)).all()
            if not rows:
                break
            ids = [r[0] for r in rows]
            after = rows[-1][1]
            got.attempts += _delete_in(conn, attempts, attempts.c.message_id, ids)
            got.events += _delete_in(conn, events, events.c.message_id, ids)
            _delete_in(conn, early_receipts, early_receipts.c.message_id, ids)
            got.messages += _delete_in(conn, messages, messages.c.id, ids)
    while True:
        with store._write() as conn:
            old = list(conn.execute(select(contact_sends.c.id).where(
                _old_sends(conn, store, before)).limit(batch * 5)).scalars())
            if not old:
                break
            got.contact_sends += _delete_in(conn, contact_sends, contact_sends.c.id, old)
    return got


def _old_sends(conn: Connection, store: SQLStore, before: float) -> Any:
    return contact_sends.c.at < min(before, time.time() - _longest_cap(conn, store))
