"""Retention on both stores: what finished before the cutoff goes with its attempts and events;
what is not finished, recent, part of a chain with a recent leg, or part of a campaign not yet
that old stays. The frequency-cap history is kept within the longest cap window. And through
the real CLI, ``db prune --dry-run`` counts the same as the prune it stands for."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, update

from pushguard.models import Accepted, NewMessage
from pushguard.store.retention import prune
from pushguard.store.schema import (
    attempts,
    audit_log,
    contact_sends,
    events,
    messages,
    topics,
)
from pushguard.store.sql import SQLStore
from tests.diagnosis.pm_story import campaign_row

DAY = 86400.0


class Scene:
    def __init__(self, store: SQLStore) -> None:
        self.store = store
        self.now = time.time()

    def message(self, state: str, age_days: float, *, parent: str | None = None,
                campaign: str | None = None, tries: int = 1) -> str:
        (res,) = self.store.enqueue([NewMessage(
            "webhook", "https://h.example/x", {"n": 1}, parent_id=parent,
            campaign_id=campaign)], scope="t")
        assert isinstance(res, Accepted)
        at = self.now - age_days * DAY
        with self.store._write() as conn:
            conn.execute(update(messages).where(messages.c.id == res.id).values(
                state=state, created_at=at, updated_at=at))
            conn.execute(insert(attempts), [
                {"message_id": res.id, "number": i + 1, "at": at, "provider": "p",
                 "outcome": "failed", "maybe_sent": False} for i in range(tries)])
        return res.id

    def ids(self) -> set[str]:
        with self.store._read() as conn:
            return set(conn.execute(select(messages.c.id)).scalars())

    def count(self, table: Any, mid: str) -> int:
        with self.store._read() as conn:
            return int(conn.execute(select(func.count()).select_from(table).where(
                table.c.message_id == mid)).scalar_one())


def test_what_finished_long_ago_goes_and_the_rest_stays(store: SQLStore) -> None:
    s = Scene(store)
    old_done = s.message("delivered", 40, tries=2)
    old_failed = s.message("failed", 40)
    recent = s.message("delivered", 5)
    waiting = s.message("queued", 40)
    parent_of_recent = s.message("failed", 40)
    s.message("delivered", 5, parent=parent_of_recent)
    parent_of_old = s.message("failed", 40)
    old_leg = s.message("delivered", 39, parent=parent_of_old)
    head = s.message("failed", 40)  # a chain of three whose last leg still waits
    middle = s.message("failed", 40, parent=head)
    s.message("queued", 40, parent=middle)
    old_head = s.message("failed", 40)  # ...and one wholly old: it goes as a whole
    old_middle = s.message("failed", 40, parent=old_head)
    old_tail = s.message("delivered", 40, parent=old_middle)
    waits_for_receipt = s.message("delivered", 40)
    with store._write() as conn:
        conn.execute(update(messages).where(messages.c.id == waits_for_receipt).values(
            confirm_within=7 * 86400, confirm_by=s.now + DAY))
    running = campaign_row(store, "running", started_at=s.now - 50 * DAY, state="sending")
    done_long_ago = campaign_row(store, "old", started_at=s.now - 50 * DAY,
                                 finished_at=s.now - 45 * DAY)
    done_lately = campaign_row(store, "lately", started_at=s.now - 50 * DAY,
                               finished_at=s.now - 2 * DAY)
    of_running = s.message("delivered", 40, campaign=running)
    of_old = s.message("delivered", 40, campaign=done_long_ago)
    of_lately = s.message("delivered", 40, campaign=done_lately)
    gone = {old_done, old_failed, parent_of_old, old_leg, of_old, old_head, old_middle,
            old_tail}
    assert s.count(events, old_done) >= 1 and s.count(attempts, old_done) == 2

    before = s.ids()
    counted = prune(store, s.now - 30 * DAY, dry_run=True)
    assert s.ids() == before  # a dry run deletes nothing
    got = prune(store, s.now - 30 * DAY, batch=2)  # several batches
    assert got.as_dict() == counted.as_dict()
    assert got.messages == len(gone) and got.attempts == len(gone) + 1
    assert s.ids() == before - gone
    for mid in gone:
        assert s.count(attempts, mid) == 0 and s.count(events, mid) == 0
    assert {recent, waiting, parent_of_recent, of_running, of_lately, head, middle,
            waits_for_receipt} <= s.ids()
    assert store.get(recent) is not None
    assert prune(store, s.now - 30 * DAY).messages == 0  # nothing left to do
    with store._read() as conn:  # who pruned what, in the audit log
        (entry,) = conn.execute(select(audit_log.c.actor, audit_log.c.detail).where(
            audit_log.c.action == "retention.prune")).all()
    assert entry.actor == "system" and f'"messages":{len(gone)}' in entry.detail


def test_cap_history_is_kept_within_the_longest_cap_window(store: SQLStore) -> None:
    now = time.time()
    with store._write() as conn:
        conn.execute(insert(topics).values(name="news", kind="marketing", description="",
                                           double_opt_in=False, cap="2/9w", created_at=now))
        conn.execute(insert(contact_sends), [
            {"contact_id": "c1", "topic": "news", "at": now - days * DAY, "message_id": f"m{i}"}
            for i, days in enumerate((70, 40, 1))])
    got = prune(store, now - 30 * DAY)
    assert got.contact_sends == 1  # 70 days ago: past the 63-day cap; 40 days ago counts
    with store._read() as conn:
        left = sorted(conn.execute(select(contact_sends.c.message_id)).scalars())
    assert left == ["m1", "m2"]


def test_the_cli_prunes_and_refuses_a_retention_shorter_than_a_day(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/p.db"
    store = SQLStore(url)
    store.migrate()
    s = Scene(store)
    old = [s.message("delivered", 100) for _ in range(3)]
    keep = s.message("delivered", 1)
    store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGUARD_")}
    env.update(PUSHGUARD_DATABASE_URL=url)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pushguard", "db", "prune", *args],
                              env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)

    short = cli("--older-than", "2h")
    assert short.returncode == 1
    assert "--older-than: must be between 30 days and 3650 days" in short.stderr
    dry = cli("--older-than", "90d", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.startswith("would delete 3 messages"), dry
    done = cli("--older-than", "90d")
    assert done.returncode == 0 and done.stdout.startswith("deleted 3 messages"), done
    assert "(3 attempts" in done.stdout
    store = SQLStore(url)
    try:
        assert Scene(store).ids() == {keep} and not set(old) & Scene(store).ids()
    finally:
        store.close()
