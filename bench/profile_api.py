"""``python -m bench.profile_api``: where the batch API spends its time while enqueueing.

Starts a real ``pushguard api`` on a fresh SQLite file, samples it with py-spy while
``--n`` messages go through ``POST /v1/messages/batch`` (1000 per request), and prints the
hottest functions and a breakdown by stage.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import load, procs
from bench.dbs import SQLiteDB
from bench.profile_worker import summarize

STAGES = (
    ("store.enqueue (SQL insert, commit)", "SQLStore.enqueue "),
    ("intake.prepare: address normalize + SSRF", "normalize_address "),
    ("intake.prepare: content size, checks", "Intake.prepare "),
    ("intake.parse: pydantic MessageIn per message", "Intake.parse "),
    ("auth (key lookup)", "authorize "),
    ("request body -> BatchIn (JSON + pydantic)", "fastapi/"),
    ("response JSON", "starlette/"),
    ("uvicorn / h11 / event loop", "uvicorn/"),
)


def stages(collapsed: Path) -> list[tuple[str, float]]:
    counts: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        total += int(n)
        for name, needle in STAGES:
            if needle in stack:
                counts[name] = counts.get(name, 0) + int(n)
                break
        else:
            counts["other"] = counts.get("other", 0) + int(n)
    return sorted(((k, 100 * v / total) for k, v in counts.items()), key=lambda x: -x[1])


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.profile_api")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--rate", type=int, default=200)
    args = ap.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    logdir = Path(tempfile.mkdtemp(prefix="pushguard-profile-api-"))
    db = SQLiteDB()
    try:
        env = procs.pushguard_env(db.url, procs.webhook_secret())
        key = procs.migrate_and_key(env, logdir)
        bodies = load.batch_bodies("http://127.0.0.1:9/hooks/bench", args.n)
        api, base = procs.start_api(env, logdir, logdir)
        out = logdir / "api.collapsed.txt"
        try:
            spy = subprocess.Popen([pyspy, "record", "--pid", str(api.pid), "--rate",
                                    str(args.rate), "--format", "raw", "--nonblocking", "--threads",
                                    "-o", str(out)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            time.sleep(1.0)
            res: dict[str, object] = {}
            t = threading.Thread(target=lambda: res.update(
                load.enqueue(base, key, bodies, args.concurrency)))
            t.start()
            t.join()
            spy.send_signal(2)  # py-spy writes its output on SIGINT
            spy.wait(30)
        finally:
            api.stop()
        print(f"enqueued {res['accepted']} in {res['seconds']:.2f} s "
              f"({res['per_s']:,.0f}/s) while sampled")
        print("\nby stage:")
        for name, share in stages(out):
            print(f"  {share:5.1f}%  {name}")
        print()
        print(summarize(out))
        print(f"\ncollapsed stacks: {out}")
    finally:
        db.close()


if __name__ == "__main__":
    main()
