"""The campaign runner: a worker duty that moves campaigns along.

On each tick, for each scheduled or sending campaign it can lease (one runner per campaign
across every worker process), it starts what is due, snapshots the recipients once, pauses
the campaign if its failure rate crossed the auto-pause threshold, fans out what is due within
the throttle, and marks the campaign completed when nothing is left to send.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from pushguard.campaigns import fanout
from pushguard.campaigns.service import FAILED, LIVE, Campaigns, hold, spec_of
from pushguard.exceptions import NotFound, PushguardError, StoreError
from pushguard.store.schema import campaign_recipients, campaigns, events, messages

if TYPE_CHECKING:
    from pushguard.app import App
    from pushguard.duties import Tick

log = structlog.get_logger("pushguard.campaigns")

LEASE = 60.0
#: seconds between two judgements of a campaign's failure rate (auto-pause)
JUDGE_EVERY = 5.0
#: auto-pause judges the messages that moved in this many recent seconds
WINDOW = 300.0
#: how long one tick may fan one campaign out before it looks at the others
SLICE = 2.0
#: a campaign whose step raised on this many ticks in a row is paused
FAILURES_TO_PAUSE = 3


@dataclass
class Runner:
    campaigns: Campaigns
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:"
                       f"{os.urandom(3).hex()}")
    #: token buckets of throttled campaigns: (tokens, last refill)
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: when each campaign's failure rate was last judged
    judged: dict[str, float] = field(default_factory=dict)
    #: ticks in a row on which each campaign's step raised (not counting database errors)
    failures: dict[str, int] = field(default_factory=dict)

    def tick(self) -> None:
        now = time.time()
        with self.campaigns.store._read() as conn:
            rows = conn.execute(select(campaigns.c.id, campaigns.c.state).where(
                campaigns.c.state.in_(("scheduled", "sending", "paused")))).all()
        for cid, state in rows:
            if state == "paused":  # fallback legs born since the pause wait too
                with self.campaigns.store._write() as conn:
                    hold(conn, cid, now, "held: the campaign is paused")
            elif self._lease(cid, now):
                self._step_alone(cid)

    def _step_alone(self, cid: str) -> None:
        """:meth:`step`, so that one campaign's failure stops only that campaign.

        A database error (busy, full, restarted, a pool timeout) is everybody's: it is
        logged and the next tick tries again. Anything else is this campaign's own (a bug
        its data found). Once it has failed :data:`FAILURES_TO_PAUSE` ticks in a row, the
        campaign is paused, with the error's kind and first line as the reason (never the
        whole text, which may quote data), and the other campaigns go on."""
        try:
            self.step(cid)
        except (StoreError, SQLAlchemyError) as exc:
            log.warning("campaign_step_failed", campaign=cid, error=type(exc).__name__)
            return
        except Exception as exc:
            failed = self.failures[cid] = self.failures.get(cid, 0) + 1
            first = (str(exc).splitlines() or [""])[0]
            what = f"{type(exc).__name__}: {first}"[:200]
            log.exception("campaign_step_crashed", campaign=cid, error=what, failed=failed)
            if failed < FAILURES_TO_PAUSE:
                return
            self.failures.pop(cid, None)
            try:
                self.campaigns.pause(cid, actor="runner", reason=(
                    f"the runner failed on this campaign {failed} times in a row ({what}); "
                    "fix it, then resume"))
            except (PushguardError, SQLAlchemyError) as again:
                log.error("campaign_pause_failed", campaign=cid, error=type(again).__name__)
            return
        self.failures.pop(cid, None)

    def _lease(self, cid: str, now: float) -> bool:
        with self.campaigns.store._write() as conn:
            got = conn.execute(update(campaigns).where(
                campaigns.c.id == cid, campaigns.c.state.in_(("scheduled", "sending")),
                or_(campaigns.c.lease_owner.is_(None), campaigns.c.lease_owner == self.owner,
                    campaigns.c.lease_until < now)).values(
                lease_owner=self.owner, lease_until=now + LEASE)).rowcount
        return bool(got)

    def step(self, cid: str) -> None:
        c = self.campaigns
        now = time.time()
        row = c.find(cid)
        if row.state == "scheduled":
            if (row.started_at or 0) > now:
                return
            with c.store._write() as conn:
                conn.execute(update(campaigns).where(
                    campaigns.c.id == cid, campaigns.c.state == "scheduled").values(
                    state="sending", updated_at=now))
            row = c.find(cid)
        if row.state != "sending":
            return
        if row.recipients < 0:
            fanout.snapshot(c, row)
            if not self._lease(cid, time.time()):  # the snapshot outlived the lease
                return
        if now - self.judged.get(cid, 0.0) >= JUDGE_EVERY:
            self.judged[cid] = now
            if self.auto_pause(row):
                return
        budget = self._budget(row, now)
        if budget > 0:
            n = fanout.fan_out(c, cid, budget=budget, deadline=time.time() + SLICE)
            if cid in self.buckets:
                tokens, last = self.buckets[cid]
                self.buckets[cid] = (tokens - n, last)
        self.finish_if_done(cid)

    def _budget(self, row: Any, now: float) -> int:
        """How many recipients may be fanned out now: the throttle's token bucket (one
        second's worth at most), or, unthrottled, what keeps the backlog bounded."""
        spec = spec_of(row)
        if spec.throttle is None:
            return max(0, fanout.MAX_BACKLOG - fanout.live_messages(self.campaigns, row.id))
        rate = spec.throttle / 60.0
        tokens, last = self.buckets.get(row.id, (min(1.0, rate), now))
        tokens = min(max(rate, 1.0), tokens + (now - last) * rate)
        self.buckets[row.id] = (tokens, now)
        return int(tokens)

    def auto_pause(self, row: Any) -> bool:
        spec = spec_of(row)
        rule = spec.auto_pause
        if not rule.enabled:
            return False
        since = max(float(json.loads(row.spec).get("window_from") or row.started_at or 0),
                    time.time() - WINDOW)
        judged, failing, causes = self._judge(row.id, since)
        if judged < rule.min_finished or failing / judged <= rule.failure_rate:
            return False
        top = ", ".join(f"{cause} ({n})" for cause, n in causes.most_common(3))
        self.campaigns.pause(row.id, actor="auto-pause", reason=(
            f"auto-pause: {failing} of the last {judged} messages tried failed or are being "
            f"retried ({failing / judged:.0%} > {rule.failure_rate:.0%}); top causes: {top}"))
        return True

    def _judge(self, cid: str, since: float) -> tuple[int, int, Counter[str]]:
        """Of the campaign's messages that moved since ``since``: how many are judged, how
        many of those are failing, and their causes. Three reads driven by the campaign's
        index, each small: a subquery in one statement let PostgreSQL hash the whole events
        table, or every leg of every campaign, on each judgement."""
        m = messages
        moved = (m.c.campaign_id == cid, m.c.updated_at >= since)
        # a message waiting for a try it never failed (paced to a provider's rate, or an open
        # circuit before its first try) has no cause: it was not tried, so it is not judged;
        # nor is one whose worker died holding it (INTERNAL_CRASH): the provider did not fail
        failed_before = and_(m.c.last_cause.is_not(None), m.c.last_cause != "INTERNAL_CRASH")
        leg = m.alias("leg")
        with self.campaigns.store._read() as conn:
            if self.campaigns.store.dialect == "postgresql":  # the three reads, one snapshot
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            at_rest = conn.execute(select(m.c.state, m.c.last_cause, func.count()).where(
                *moved, or_(m.c.state.in_(("delivered", *FAILED)),
                            and_(m.c.state == "retry_scheduled", failed_before)))
                .group_by(m.c.state, m.c.last_cause)).all()
            # handed the recipient to the next channel (a fallback leg): failed for good, or
            # delivered but never confirmed. The leg is judged in its place, unless the gate
            # suppressed it: then nobody was reached, and the message counts
            handed = conn.execute(select(m.c.state, m.c.last_cause, func.count()).where(
                *moved, m.c.state.in_(("delivered", *FAILED)), exists().where(
                    leg.c.parent_id.is_not(None), leg.c.parent_id == m.c.id,
                    leg.c.state != "suppressed"))
                .group_by(m.c.state, m.c.last_cause)).all()
            # being sent again after a failed try: being retried, as one waiting for its retry
            # is. A claim moves updated_at, so the failed try's own event must fall in the
            # window: a resume's note is no try, nor is a wait for pacing or an open circuit
            # (those events carry no cause), nor a worker's crash
            again = conn.execute(select(m.c.last_cause, func.count()).where(
                *moved, m.c.state == "sending", failed_before, exists().where(
                    events.c.message_id == m.c.id, events.c.at >= since,
                    events.c.src == "sending", events.c.dst == "retry_scheduled",
                    events.c.cause.is_not(None), events.c.cause != "INTERNAL_CRASH"))
                .group_by(m.c.last_cause)).all()
        delivered = sum(int(n) for state, _, n in at_rest if state == "delivered")
        causes: Counter[str] = Counter()
        for state, cause, n in at_rest:
            if state != "delivered":
                causes[cause or "UNKNOWN"] += int(n)
        for state, cause, n in handed:
            if state == "delivered":
                delivered -= int(n)
            else:
                causes[cause or "UNKNOWN"] -= int(n)
        for cause, n in again:
            causes[cause] += int(n)
        causes = +causes  # drop what the legs cancelled
        failing = sum(causes.values())
        return delivered + failing, failing, causes

    def finish_if_done(self, cid: str) -> bool:
        c = self.campaigns
        with c.store._read() as conn:  # most ticks end here, cheaply, without a write lock
            if _any(conn, cid):
                return False
        with c.store._write() as conn:
            if c.store.dialect == "postgresql":
                # lock the campaign before counting: a retry or a resume committing between
                # the counts and the update below would otherwise be marked completed
                conn.execute(select(campaigns.c.id).where(campaigns.c.id == cid)
                             .with_for_update())
            pending = conn.execute(select(func.count()).select_from(campaign_recipients).where(
                campaign_recipients.c.campaign_id == cid,
                campaign_recipients.c.state == "pending")).scalar_one()
            if pending:
                return False
            live = conn.execute(select(func.count()).select_from(messages).where(
                messages.c.campaign_id == cid, messages.c.state.in_(LIVE))).scalar_one()
            if live:
                return False
            now = time.time()
            done = conn.execute(update(campaigns).where(
                campaigns.c.id == cid, campaigns.c.state == "sending",
                campaigns.c.recipients >= 0).values(
                state="completed", finished_at=now, updated_at=now, lease_owner=None,
                lease_until=None)).rowcount
        return bool(done)


def _any(conn: Any, cid: str) -> bool:
    """Whether the campaign has a pending recipient or a live message (one index probe
    each, not a count)."""
    pending = conn.execute(select(campaign_recipients.c.contact_id).where(
        campaign_recipients.c.campaign_id == cid,
        campaign_recipients.c.state == "pending").limit(1)).first()
    return pending is not None or conn.execute(select(messages.c.id).where(
        messages.c.campaign_id == cid, messages.c.state.in_(LIVE)).limit(1)).first() is not None


def runner_tick(app: App) -> Tick | None:
    try:
        runner = Runner(Campaigns(app))
    except NotFound:  # no SQL store: no campaigns
        return None
    return runner.tick
