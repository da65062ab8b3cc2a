"""``python -m bench.profile_worker``: where a delivering worker spends its time.

Puts a backlog in a fresh database (SQLite, or PostgreSQL with ``--pg``), starts the sandbox
and a real ``pushguard worker``, samples it with py-spy (``pip install py-spy``) once it is
delivering, and prints the hottest functions, self and inclusive, per thread.
Also writes the collapsed stacks (for flamegraph tools) to ``--out`` (a temp dir by default).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import procs
from bench.dbs import PostgresDB, SQLiteDB
from bench.run import backlog

#: (category, frame substring), most specific first: a sample goes to the first that matches.
CATEGORIES = (
    ("store.claim (db thread)", "SQLStore.claim "),
    ("store.record (db thread)", "SQLStore.record "),
    ("store.reap (db thread)", "SQLStore.reap "),
    ("webhook render + sign", "WebhookProvider.render "),
    ("SSRF guard checks", "pushguard/ssrf.py"),
    ("aiohttp request (HttpClient.post)", "HttpClient.post "),
    ("pipeline: routing, breaker, metrics, outcome", "Pipeline."),
    ("worker: tasks, claim loop, flusher", "pushguard/worker.py"),
    ("aiohttp protocol callbacks", "aiohttp/"),
    ("event loop: selector, handles, transports", "asyncio/"),
)


def categories(collapsed: Path) -> list[tuple[str, float]]:
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        total += int(count)
        for name, needle in CATEGORIES:
            if needle in stack:
                counts[name] += int(count)
                break
        else:
            counts["other"] += int(count)
    return [(name, 100 * n / total) for name, n in counts.most_common()]


def summarize(collapsed: Path, top: int = 25) -> str:
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        threads[frames[0]] += n
        self_t[frames[-1]] += n
        for f in set(frames[1:]):
            incl[f] += n
    out = [f"{total} samples", "", "by category:"]
    out += [f"  {share:5.1f}%  {name}" for name, share in categories(collapsed)]
    out += ["", "per thread:"]
    out += [f"  {100 * n / total:5.1f}%  {t}" for t, n in threads.most_common()]
    out += ["", "self time:"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in self_t.most_common(top)]
    out += ["", "inclusive time (pushguard frames):"]
    ours = [(f, n) for f, n in incl.most_common() if "pushguard/" in f]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in ours[:top]]
    out += ["", "inclusive time (all frames):"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile_worker")
    ap.add_argument("--n", type=int, default=60_000, help="backlog size")
    ap.add_argument("--seconds", type=float, default=15.0, help="sampling time")
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--rate", type=int, default=250, help="samples per second")
    ap.add_argument("--pg", action="store_true", help="PostgreSQL instead of SQLite")
    ap.add_argument("--pg-url", default="postgresql://127.0.0.1:5432/test")
    ap.add_argument("--patch", default="", help="bench.whatif patches, comma-separated")
    ap.add_argument("--gil", action="store_true", help="only samples holding the GIL")
    ap.add_argument("--out", type=Path, default=None,
                    help="where the collapsed stacks go (default: a temp dir)")
    args = ap.parse_args(argv)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    logdir = Path(__import__("tempfile").mkdtemp(prefix="pushguard-profile-"))
    args.out = args.out or logdir
    sandbox, base = procs.start_sandbox(logdir)
    hook = f"{base}/hooks/bench"
    db: SQLiteDB | PostgresDB = PostgresDB(args.pg_url) if args.pg else SQLiteDB()
    try:
        backlog(db, hook, args.n)
        env = procs.pushguard_env(db.url, procs.webhook_secret())
        worker = procs.start_worker(env, logdir, logdir, concurrency=args.concurrency,
                                    batch=args.batch or args.concurrency, patch=args.patch)
        try:
            while db.open_count() == args.n:
                time.sleep(0.05)
            c0, t0 = procs.cpu_seconds(worker.pid), time.perf_counter()
            open0 = db.open_count()
            out = args.out / f"profile-{db.kind}.collapsed.txt"
            args.out.mkdir(parents=True, exist_ok=True)
            cmd = [pyspy, "record", "--pid", str(worker.pid), "--duration",
                   str(int(args.seconds)), "--rate", str(args.rate), "--format", "raw",
                   "--threads", "--nonblocking", "-o", str(out)]
            if args.gil:
                cmd.append("--gil")
            subprocess.run(cmd, check=True, capture_output=True)
            dt = time.perf_counter() - t0
            c1, open1 = procs.cpu_seconds(worker.pid), db.open_count()
        finally:
            worker.stop()
        done = open0 - open1
        label = db.kind + (f" + {args.patch}" if args.patch else "")
        print(f"{label}: {done} messages finished in {dt:.1f} s while sampled "
              f"({done / dt:,.0f}/s); worker CPU {c1 - c0:.1f} s "
              f"({1e6 * (c1 - c0) / max(done, 1):,.0f} us/message)")
        print(summarize(out))
        print(f"\ncollapsed stacks: {out}")
    finally:
        db.close()
        sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
