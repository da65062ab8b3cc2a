"""What the pre-send gate costs: end-to-end deliveries/s with and without it.

Two kinds of rounds, alternated on fresh SQLite databases so the same machine noise hits both:

- ``plain``: messages with no topic (the gate only checks suppression and address status);
- ``gated``: the same messages under a marketing topic, each to its own contact that consented,
  with a marketing frequency cap (so every send is counted and checked), quiet hours off.

Each message goes to its own address (``?c=i``) in both kinds, so lookups are like for like.
The worker is the real ``pushguard worker`` process; the receiver is the sandbox. The issue's
budget: the gate may cost at most 15 % of deliveries/s. Results: bench/results/gate.json.

    python -m bench.gate_bench [--n 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import load, procs
from bench.dbs import SQLiteDB
from bench.run import RESULTS, log, wait_terminal

TOML = """
[channels.webhook]
providers = ["webhook"]

[providers.webhook]
type = "webhook"
secret = "env:PUSHGUARD_WEBHOOK_SECRET"

[audience]
marketing_cap = "1000/1d"
"""


def _populate(url: str, hook: str, n: int) -> None:
    """Topic, n contacts with one address each, and their consent, written in bulk."""
    from pushguard.audience.models import TopicIn
    from pushguard.audience.service import Audience, ConsentRecord, NormalContact
    from pushguard.ssrf import OutboundGuard
    from pushguard.store.sql import SQLStore

    store = SQLStore(url)
    try:
        aud = Audience(store, OutboundGuard.from_env("127.0.0.1"))
        aud.put_topic(TopicIn(name="news", kind="marketing"))
        people = [NormalContact(f"c{i}", None, "UTC", None, None, [
            {"channel": "webhook", "address": f"{hook}?c={i}", "platform": None,
             "environment": None, "verified": True, "last_seen": None}])
            for i in range(n)]
        done = aud.upsert(people)
        now = time.time()
        with store._write() as conn:
            aud.record_consent([ConsentRecord(r.id, "news", "webhook", "granted", "import",
                                              now, proof="bench") for r in done], conn)
    finally:
        store.close()


def _bodies(hook: str, n: int, topic: str | None) -> list[bytes]:
    out = []
    for start in range(0, n, 1000):
        msgs = []
        for i in range(start, min(n, start + 1000)):
            m: dict[str, Any] = {"channel": "webhook", "to": f"{hook}?c={i}",
                                 "content": load.content(i)}
            if topic:
                m["topic"] = topic
            msgs.append(m)
        out.append(json.dumps({"messages": msgs}).encode())
    return out


def one_round(kind: str, hook: str, n: int, concurrency: int, logdir: Path,
              config: Path) -> dict[str, Any]:
    db = SQLiteDB()
    try:
        env = procs.pushguard_env(db.url, procs.webhook_secret(),
                                  PUSHGUARD_CONFIG=str(config))
        key = procs.migrate_and_key(env, logdir)
        _populate(db.url, hook, n)
        api, base = procs.start_api(env, logdir, logdir)
        try:
            enq = load.enqueue(base, key, _bodies(hook, n, "news" if kind == "gated" else None),
                               2)
        finally:
            api.stop()
        if enq["accepted"] != n or db.states().get("queued") != n:
            raise RuntimeError(f"{kind}: enqueued {enq['accepted']} of {n}: {db.states()}")
        t0 = time.perf_counter()
        worker = procs.start_worker(env, logdir, logdir, concurrency=concurrency,
                                    batch=concurrency, name=f"worker-{kind}")
        try:
            done = wait_terminal(db, n, [worker], max(120.0, n / 100), t0)
        finally:
            worker.stop()
        states = db.states()
        if states.get("delivered") != n:
            raise RuntimeError(f"{kind}: not all delivered: {states}")
        first = done["first_progress_s"] or 0.0
        return {"kind": kind, "per_s": n / done["seconds"],
                "steady_per_s": n / (done["seconds"] - first),
                "enqueue_per_s": enq["per_s"]}
    finally:
        db.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gate_bench")
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    logdir = Path(tempfile.mkdtemp(prefix="pushguard-gate-bench-"))
    config = logdir / "pushguard.toml"
    config.write_text(TOML)
    sandbox, base = procs.start_sandbox(logdir)
    hook = f"{base}/hooks/bench"
    rounds: list[dict[str, Any]] = []
    try:
        for i in range(args.repeat):
            for kind in ("plain", "gated") if i % 2 == 0 else ("gated", "plain"):
                r = one_round(kind, hook, args.n, args.concurrency, logdir, config)
                log(f"round {i + 1} {kind}: {r['per_s']:,.0f}/s (steady "
                    f"{r['steady_per_s']:,.0f}/s), enqueue {r['enqueue_per_s']:,.0f}/s")
                rounds.append(r)
    finally:
        sandbox.stop()

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in rounds if r["kind"] == kind)

    res = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": {"n": args.n, "concurrency": args.concurrency, "repeat": args.repeat},
        "plain_per_s": med("plain", "per_s"), "gated_per_s": med("gated", "per_s"),
        "plain_steady_per_s": med("plain", "steady_per_s"),
        "gated_steady_per_s": med("gated", "steady_per_s"),
        "plain_enqueue_per_s": med("plain", "enqueue_per_s"),
        "gated_enqueue_per_s": med("gated", "enqueue_per_s"),
        "rounds": rounds,
    }
    res["gate_cost"] = 1 - res["gated_per_s"] / res["plain_per_s"]
    res["gate_cost_steady"] = 1 - res["gated_steady_per_s"] / res["plain_steady_per_s"]
    res["budget"] = 0.15
    res["within_budget"] = res["gate_cost"] <= 0.15
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gate.json").write_text(json.dumps(res, indent=2) + "\n")
    log(f"gate cost: {res['gate_cost']:.1%} of deliveries/s (steady "
        f"{res['gate_cost_steady']:.1%}); budget 15 %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
