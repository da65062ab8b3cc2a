"""``exchange_nowait``: a worker's store cycle on the event loop's own thread, only when it
cannot wait on anything. On SQLite with relaxed commits and the write lock free it does the
whole exchange; with the lock held elsewhere it answers None at once, having written nothing,
and the worker takes the DB thread as before."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from pushguard.models import Attempt, NewMessage, Outcome
from pushguard.states import State
from pushguard.store.schema import attempts, messages
from pushguard.store.sql import SQLStore
from tests.integration.test_worker import make_app


def _delivered(job_id: str) -> Outcome:
    now = time.time()
    return Outcome(job_id, State.DELIVERED, "delivered via p",
                   attempt=Attempt(1, now, "p", "delivered", 1.0, 200, None, None, False, "ok"),
                   provider="p")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    path = tmp_path / "p.db"
    url = f"sqlite:///{path}"
    s = SQLStore(url)
    s.migrate()
    s.close()
    yield url, path


def _enqueue(url: str, n: int) -> list[str]:
    s = SQLStore(url)
    try:
        res = s.enqueue([NewMessage("webhook", f"https://h{i}.example/x", {"i": i})
                         for i in range(n)], scope="t")
        return [r.id for r in res]  # type: ignore[union-attr]
    finally:
        s.close()


def _states(store: SQLStore) -> dict[str, int]:
    with store._read() as conn:
        return dict(conn.execute(select(messages.c.state, func.count())
                                 .group_by(messages.c.state)).all())


def test_with_the_lock_free_it_records_and_claims_on_the_callers_thread(
        db: tuple[str, Path]) -> None:
    url, _ = db
    _enqueue(url, 6)
    store = SQLStore(url, relaxed_commits=True)
    try:
        jobs = store.exchange_nowait("w1", [], 4, 60)
        assert jobs is not None and len(jobs) == 4
        more = store.exchange_nowait("w1", [_delivered(j.id) for j in jobs], 4, 60)
        assert more is not None and len(more) == 2
        assert _states(store) == {"delivered": 4, "sending": 2}
        with store._read() as conn:
            assert conn.execute(select(func.count()).select_from(attempts)).scalar() == 4
    finally:
        store.close()


def test_with_the_lock_held_elsewhere_it_answers_none_at_once_and_writes_nothing(
        db: tuple[str, Path]) -> None:
    url, path = db
    _enqueue(url, 4)
    store = SQLStore(url, relaxed_commits=True)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        jobs = store.exchange_nowait("w1", [], 4, 60)
        assert jobs is not None and len(jobs) == 4
        other.execute("BEGIN IMMEDIATE")  # another writer: the API, a second worker
        t0 = time.perf_counter()
        assert store.exchange_nowait("w1", [_delivered(j.id) for j in jobs], 4, 60) is None
        assert time.perf_counter() - t0 < 5.0  # no waiting out the 30 s busy timeout
        other.execute("COMMIT")
        assert _states(store) == {"sending": 4}  # the outcomes are still the caller's
        # ... who hands them to exchange() on a thread, which waits for the lock.
        other.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
        release.start()
        try:
            assert store.exchange("w1", [_delivered(j.id) for j in jobs], 4, 60) == []
        finally:
            release.join()
        assert _states(store) == {"delivered": 4}
    finally:
        other.close()
        store.close()


def test_inline_cycles_leave_the_checkpoint_to_checkpoint(db: tuple[str, Path]) -> None:
    """The flush-heavy part of a commit, copying the WAL into the database file, never runs on
    the inline connection (it would stall the event loop): checkpoint() does it."""
    url, path = db
    _enqueue(url, 3000)
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw.close()
    size0 = path.stat().st_size
    store = SQLStore(url, relaxed_commits=True)
    try:
        jobs = store.exchange_nowait("w1", [], 200, 60)
        while jobs:
            jobs = store.exchange_nowait("w1", [_delivered(j.id) for j in jobs], 200, 60)
        assert _states(store) == {"delivered": 3000}
        wal = path.with_name("p.db-wal").stat().st_size
        assert wal > 1000 * 4096  # past SQLite's automatic checkpoint, which did not run
        assert path.stat().st_size == size0
        store.checkpoint()
        assert path.stat().st_size > size0  # the new attempts and events reached the file
    finally:
        store.close()


def test_not_offered_with_full_commits_or_in_memory(db: tuple[str, Path]) -> None:
    url, _ = db
    _enqueue(url, 2)
    for s in (SQLStore(url), SQLStore("sqlite://", relaxed_commits=True)):
        try:
            assert s.exchange_nowait("w1", [], 2, 60) is None
        finally:
            s.close()
    store = SQLStore(url)
    try:
        assert _states(store) == {"queued": 2}  # nothing was claimed by the refusals
    finally:
        store.close()


@pytest.mark.postgres
def test_not_offered_on_postgresql(pg_schema_url: str) -> None:
    store = SQLStore(pg_schema_url, relaxed_commits=True)
    try:
        assert store.exchange_nowait("w1", [], 2, 60) is None
    finally:
        store.close()


async def test_a_worker_delivers_everything_while_another_writer_takes_the_lock(
        db: tuple[str, Path]) -> None:
    """Both paths in one run: inline cycles while the lock is free, the DB thread while a
    second writer holds it (in bursts), and every message delivered exactly once."""
    url, path = db
    ids = _enqueue(url, 600)
    store = SQLStore(url, relaxed_commits=True)  # as App.worker_store() builds it
    app = make_app(store, {"p": {"delay": 0.002}}, ["p"])
    providers = app.build_providers()
    worker = app.build_worker(providers, poll=0.02, concurrency=20, batch=20)
    stop = asyncio.Event()
    checkpoints = []
    checkpoint = store.checkpoint

    def counted() -> None:
        checkpoints.append(threading.current_thread().name)
        checkpoint()

    store.checkpoint = counted  # type: ignore[method-assign]
    task = asyncio.create_task(worker.run(stop))
    hog_stop = threading.Event()

    def hog() -> None:  # another writer holding the lock 40 ms out of every 60
        c = sqlite3.connect(path, isolation_level=None)
        while not hog_stop.is_set():
            c.execute("BEGIN IMMEDIATE")
            time.sleep(0.04)
            c.execute("COMMIT")
            time.sleep(0.02)
        c.close()

    t = threading.Thread(target=hog)
    t.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if _states(store).get("delivered") == len(ids):
                break
    finally:
        hog_stop.set()
        t.join()
        stop.set()
        await task
    try:
        assert _states(store) == {"delivered": len(ids)}
        with store._read() as conn:
            assert conn.execute(select(func.count()).select_from(attempts)).scalar() == len(ids)
        assert worker.inline_exchanges > 0 and worker.threaded_exchanges > 0
        # the inline cycles' checkpoints ran, on the DB thread
        assert checkpoints and set(checkpoints) == {n for n in checkpoints
                                                    if n.startswith("pushguard-db")}
    finally:
        store.close()


def test_a_failed_inline_cycle_drops_the_gate_cache_but_a_busy_lock_does_not(
        db: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A cycle that failed after its gate check rolled back what the check may have read (the
    audience counter's next value among it): the cache goes with it. A cycle that found the
    lock taken ran no check, and the worker's cache survives its most common fallback."""
    url, path = db
    _enqueue(url, 6)
    store = SQLStore(url, relaxed_commits=True)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        jobs = store.exchange_nowait("w1", [], 2, 60)
        assert jobs is not None and len(jobs) == 2
        cached = store.gate._c
        assert cached.generation is not None
        other.execute("BEGIN IMMEDIATE")
        assert store.exchange_nowait("w1", [], 2, 60) is None
        other.execute("COMMIT")
        assert store.gate._c is cached
        check = store.gate._check

        def check_then_fail(*args: object, **kw: object) -> None:
            check(*args, **kw)  # type: ignore[arg-type]
            raise RuntimeError("disk full")

        monkeypatch.setattr(store.gate, "_check", check_then_fail)
        with pytest.raises(RuntimeError, match="disk full"):
            store.exchange_nowait("w1", [], 2, 60)
        assert store.gate._c is not cached and store.gate._c.generation is None
        assert _states(store) == {"sending": 2, "queued": 4}  # the failed claim rolled back
    finally:
        other.close()
        store.close()
