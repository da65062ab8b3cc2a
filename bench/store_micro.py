"""``python -m bench.store_micro``: what one claim and one record cost per message, by
themselves (no HTTP), on a backlog in the real schema.

Compares :class:`SQLStore` as it is with the same statements issued straight through
``sqlite3``, which is the floor for SQLite.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.dbs import PostgresDB, SQLiteDB
from bench.run import backlog

HOOK = "http://127.0.0.1:9/hooks/bench"
_COLS = ("id, channel, to_addr, content, topic, priority, attempts, state, created_at, "
         "expires_at, avoid_provider, last_cause")
_READY = "state IN ('queued', 'retry_scheduled', 'deferred')"


def outcomes(jobs: list[Any]) -> list[Any]:
    from pushguard.models import Attempt, Outcome
    from pushguard.states import State

    now = time.time()
    return [Outcome(j.id, State.DELIVERED, "delivered via webhook",
                    attempt=Attempt(1, now, "webhook", "delivered", 1.5, 200, None, None, False,
                                    "HTTP 200"),
                    provider="webhook") for j in jobs]


def measure(claim: Callable[[], list[Any]], record: Callable[[list[Any]], Any],
            rounds: int) -> dict[str, float]:
    claim_wall = claim_cpu = rec_wall = rec_cpu = 0.0
    n = 0
    for _ in range(rounds):
        t, c = time.perf_counter(), time.thread_time()
        jobs = claim()
        claim_wall += time.perf_counter() - t
        claim_cpu += time.thread_time() - c
        outs = outcomes(jobs)
        t, c = time.perf_counter(), time.thread_time()
        record(outs)
        rec_wall += time.perf_counter() - t
        rec_cpu += time.thread_time() - c
        n += len(jobs)
    return {"messages": n,
            "claim_us_per_msg": 1e6 * claim_wall / n, "claim_cpu_us_per_msg": 1e6 * claim_cpu / n,
            "record_us_per_msg": 1e6 * rec_wall / n, "record_cpu_us_per_msg": 1e6 * rec_cpu / n}


class RawSQLite:
    """The statements SQLStore.claim/record issue, through sqlite3 with no ORM layer."""

    def __init__(self, path: str) -> None:
        self.c = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.c.execute("PRAGMA journal_mode=WAL")
        self.c.execute("PRAGMA synchronous=FULL")
        self.c.execute("PRAGMA busy_timeout=30000")

    def claim(self, owner: str, limit: int, lease: float) -> list[Any]:
        from pushguard.models import Job

        now = time.time()
        c = self.c
        c.execute("BEGIN IMMEDIATE")
        rows: list[Any] = []
        for p in (0, 1, 2):
            need = limit - len(rows)
            if need <= 0:
                break
            rows += c.execute(
                f"SELECT {_COLS} FROM messages WHERE {_READY} AND priority = ? "
                "AND next_at <= ? ORDER BY next_at LIMIT ?", (p, now, need)).fetchall()
        if rows:
            ids = [r[0] for r in rows]
            c.execute(f"UPDATE messages SET state = 'sending', lease_owner = ?, lease_until = ?, "
                      f"updated_at = ? WHERE id IN ({','.join('?' * len(ids))})",
                      (owner, now + lease, now, *ids))
            c.executemany("INSERT INTO events (message_id, at, src, dst, reason, cause) "
                          "VALUES (?, ?, ?, 'sending', ?, NULL)",
                          [(r[0], now, r[7], f"claimed by {owner}") for r in rows])
            addrs = sorted({r[2] for r in rows})
            # the gate's suppression lookup, like for like with the store's first batch
            c.execute("SELECT channel, address, reason, source FROM suppressions WHERE "
                      f"address IN ({','.join('?' * len(addrs))})", addrs).fetchall()
        c.execute("COMMIT")
        if not rows:
            return []
        return [Job(id=r[0], channel=r[1], to=r[2], content=json.loads(r[3]), topic=r[4],
                    priority=r[5], attempts=r[6], created_at=r[8],
                    expires_at=r[9], avoid_provider=r[10], last_cause=r[11]) for r in rows]

    def record(self, owner: str, outs: list[Any]) -> int:
        from pushguard.states import State

        now = time.time()
        ups, atts, evs = [], [], []
        for o in outs:
            f = o.failure
            ups.append((o.state.value, now, o.next_at, 1 if (o.attempt and o.counts_attempt)
                        else 0, o.provider, o.avoid_provider, f.cause if f else None,
                        json.dumps(f.as_dict()) if f else None,
                        now if o.state is State.DELIVERED else None, o.provider_message_id,
                        o.id, owner))
            if o.attempt is not None:
                a = o.attempt
                atts.append((o.id, a.number, a.at, a.provider, a.outcome, a.latency_ms, a.status,
                             a.provider_code, a.cause, a.maybe_sent, a.detail, a.raw))
            evs.append((o.id, now, "sending", o.state.value, o.reason, f.cause if f else None))
        c = self.c
        c.execute("BEGIN IMMEDIATE")
        cur = c.executemany(
            "UPDATE messages SET state = ?, updated_at = ?, next_at = coalesce(?, next_at), "
            "attempts = attempts + ?, lease_owner = NULL, lease_until = NULL, "
            "last_provider = coalesce(?, last_provider), avoid_provider = ?, "
            "last_cause = coalesce(?, last_cause), failure = coalesce(?, failure), "
            "delivered_at = ?, provider_message_id = coalesce(?, provider_message_id) "
            "WHERE id = ? AND lease_owner = ? AND state = 'sending'", ups)
        if atts:
            c.executemany("INSERT INTO attempts (message_id, number, at, provider, outcome, "
                          "latency_ms, status, provider_code, cause, maybe_sent, detail, raw) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", atts)
        c.executemany("INSERT INTO events (message_id, at, src, dst, reason, cause) "
                      "VALUES (?, ?, ?, ?, ?, ?)", evs)
        c.execute("COMMIT")
        return cur.rowcount


def run_variant(kind: str, variant: str, n: int, batch: int, pg_url: str) -> dict[str, float]:
    from pushguard.store.sql import SQLStore

    db: SQLiteDB | PostgresDB = SQLiteDB() if kind == "sqlite" else PostgresDB(pg_url)
    try:
        backlog(db, HOOK, n)
        rounds = n // batch
        if variant == "raw_sqlite3":
            assert isinstance(db, SQLiteDB)
            raw = RawSQLite(str(db.path))
            return measure(lambda: raw.claim("bench", batch, 60),
                           lambda outs: raw.record("bench", outs), rounds)
        store = SQLStore(db.url)
        try:
            return measure(lambda: store.claim("bench", batch, 60),
                           lambda outs: store.record("bench", outs), rounds)
        finally:
            store.close()
    finally:
        db.close()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.store_micro")
    ap.add_argument("--n", type=int, default=20_000, help="backlog, all claimed and recorded")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--pg-url", default="postgresql://127.0.0.1:5432/test")
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    import subprocess
    import sys

    plan = [("sqlite", "as_is"), ("sqlite", "raw_sqlite3")]
    if not args.no_postgres:
        plan += [("postgresql", "as_is")]
    print(f"{'database':<11} {'variant':<14} {'claim us/msg':>13} {'(CPU)':>7} "
          f"{'record us/msg':>14} {'(CPU)':>7}")
    for kind, variant in plan:
        out = subprocess.run(
            [sys.executable, "-c", "import json,sys; from bench.store_micro import run_variant; "
             f"print(json.dumps(run_variant({kind!r}, {variant!r}, {args.n}, {args.batch}, "
             f"{args.pg_url!r})))"], capture_output=True, text=True, check=True,
            cwd=str(Path(__file__).resolve().parent.parent))
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{kind:<11} {variant:<14} {r['claim_us_per_msg']:>13.1f} "
              f"{r['claim_cpu_us_per_msg']:>7.1f} {r['record_us_per_msg']:>14.1f} "
              f"{r['record_cpu_us_per_msg']:>7.1f}")


if __name__ == "__main__":
    main()
