"""Crash safety: a real worker process is SIGKILLed at random points, several times, while it
delivers to a recording receiver. Afterwards every accepted message is in exactly one terminal
state, none is lost, and a message reaches the receiver twice only when a worker died holding
it after the request went out — with the same webhook-id both times."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from pushguard.models import NewMessage
from pushguard.sandbox import SandboxThread
from pushguard.states import State
from pushguard.store.sql import SQLStore


def start_worker(env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "pushguard", "worker", "--concurrency", "25", "--batch", "25"],
            env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err,
        )


def worker_env(db_url: str, secret: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGUARD_")}
    env.update(
        PUSHGUARD_DATABASE_URL=db_url, PUSHGUARD_WEBHOOK_SECRET=secret,
        PUSHGUARD_OUTBOUND_ALLOW="127.0.0.1", PUSHGUARD_LEASE_SECONDS="2",
        PUSHGUARD_POLL_INTERVAL="0.05", PUSHGUARD_LOG_LEVEL="INFO",
    )
    return env


def wait_started(log: Path, starts: int, timeout: float = 30) -> None:
    """Wait until the log shows ``starts`` worker starts (its signal handlers are then set)."""
    deadline = time.monotonic() + timeout
    while log.read_text().count('"worker_started"') < starts:
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.05)


def wait_terminal(store: SQLStore, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = store.stats()
        if sum(stats.by_state.values()) == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"not settled: {store.stats()}")


@pytest.mark.slow
def test_sigkill_at_random_points_loses_nothing(store_url: str, store: SQLStore,
                                                tmp_path: Path, webhook_secret: str) -> None:
    records = tmp_path / "received.jsonl"
    profile = {"seed": 3, "latency_ms": [40, 120]}  # slow enough to be killed mid-flight
    with SandboxThread(profiles={"webhook": profile}, webhook_secret=webhook_secret,
                       records_path=str(records)) as sb:
        n = 2000
        accepted = store.enqueue(
            [NewMessage("webhook", f"{sb.http_url}/hooks/crash-{i % 13}", {"i": i},
                        idempotency_key=f"k{i}", request_hash="h") for i in range(n)],
            scope="crash",
        )
        ids = [a.id for a in accepted]  # type: ignore[union-attr]
        env = worker_env(store_url, webhook_secret)
        rng = random.Random(int(os.environ.get("CRASH_SEED", "20261122")))
        log = tmp_path / "worker.log"
        log.touch()
        kills = 0
        for _ in range(5):
            proc = start_worker(env, tmp_path, log)
            time.sleep(rng.uniform(0.5, 1.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
        assert store.stats().by_state, "the kills came too late to interrupt anything"
        final = start_worker(env, tmp_path, log)
        try:
            wait_started(log, log.read_text().count('"worker_started"') + 1)
            wait_terminal(store, ids, timeout=60)
        finally:
            final.send_signal(signal.SIGTERM)
            assert final.wait(20) == 0, log.read_text()[-2000:]

    views = {i: store.get(i) for i in ids}
    assert all(v is not None for v in views.values()), "an accepted message vanished"
    states = Counter(v.state for v in views.values() if v)
    assert states == {State.DELIVERED: n}, states
    for v in views.values():
        assert v is not None
        assert sum(1 for t in v.history if State(t.dst).terminal) == 1

    received = Counter()
    for line in records.read_text().splitlines():
        rec = json.loads(line)
        if rec["service"] == "webhook" and rec["outcome"] == "200":
            received[rec["headers"]["webhook-id"]] += 1
    assert set(received) == set(ids), "some message never reached the receiver"
    duplicates = {mid: c for mid, c in received.items() if c > 1}
    for mid in duplicates:
        view = views[mid]
        assert view is not None
        lost = [a for a in view.attempts if a.outcome == "lost"]
        # A second delivery is only allowed where a worker died holding the message.
        assert lost, f"{mid} was delivered {duplicates[mid]} times without a crash"
        assert duplicates[mid] <= len(lost) + 1
    assert kills == 5


def test_sigterm_drains_and_exits_cleanly(sqlite_url: str, tmp_path: Path,
                                          webhook_secret: str) -> None:
    store = SQLStore(sqlite_url)
    store.migrate()
    with SandboxThread(profiles={"webhook": {"latency_ms": [100, 200]}},
                       webhook_secret=webhook_secret) as sb:
        accepted = store.enqueue(
            [NewMessage("webhook", f"{sb.http_url}/hooks/t", {"i": i}) for i in range(60)],
            scope="t",
        )
        log = tmp_path / "worker.log"
        log.touch()
        proc = start_worker(worker_env(sqlite_url, webhook_secret), tmp_path, log)
        wait_started(log, 1)
        deadline = time.monotonic() + 20
        while store.stats().by_state.get("sending", 0) == 0:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()[-2000:]
    stats = store.stats()
    assert stats.by_state.get("sending", 0) == 0  # nothing left leased by a dead worker
    delivered = [store.get(a.id) for a in accepted]  # type: ignore[union-attr]
    assert any(v and v.state is State.DELIVERED for v in delivered)
    store.close()


def test_a_locked_database_delays_but_loses_nothing(sqlite_url: str, tmp_path: Path,
                                                    webhook_secret: str) -> None:
    store = SQLStore(sqlite_url)
    store.migrate()
    with SandboxThread(webhook_secret=webhook_secret) as sb:
        accepted = store.enqueue(
            [NewMessage("webhook", f"{sb.http_url}/hooks/l", {"i": i}) for i in range(200)],
            scope="t",
        )
        db_path = sqlite_url.removeprefix("sqlite:///")
        holder = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        release = threading.Timer(3.0, holder.rollback)
        release.start()
        log = tmp_path / "worker.log"
        log.touch()
        proc = start_worker(worker_env(sqlite_url, webhook_secret), tmp_path, log)
        try:
            wait_started(log, 1)
            wait_terminal(store, [a.id for a in accepted], timeout=40)  # type: ignore[union-attr]
        finally:
            release.cancel()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
            holder.close()
    states = Counter(store.get(a.id).state for a in accepted)  # type: ignore[union-attr]
    assert states == {State.DELIVERED: 200}
    store.close()
