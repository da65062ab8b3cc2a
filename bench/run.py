"""``python -m bench.run`` (``make bench``): what durability costs, measured on this machine.

Side by side, against one sandbox webhook receiver (no faults, no signature checks):

(a) raw: a plain aiohttp loop POSTing the same JSON bodies to ``/hooks/bench`` at the same
    concurrency, durable nothing;
(b) pushguard end to end: N messages through ``POST /v1/messages/batch`` (1000 per request),
    then a real ``pushguard worker`` process delivering them through the durable pipeline;
    delivery rate = N / (worker spawn -> every message terminal, polled by SQL every 0.2 s).
    On SQLite (temp file) and PostgreSQL (fresh schema in database ``test``).
(c) memory: peak RSS (VmHWM) of a worker with a 1,000,000- and a 10,000-message backlog.

Prints a table; writes ``bench/results/latest.json`` and a timestamped copy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import channels, layers, load, procs
from bench.dbs import PostgresDB, SQLiteDB, postgres_unreachable

RESULTS = Path(__file__).resolve().parent / "results"
POLL = 0.2

TARGET_RATIO, STRETCH_RATIO = 0.6, 0.8
TARGET_ENQUEUE_100K_S = 10.0
TARGET_RSS_MB = 300.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- one round: raw baseline, then pushguard end to end, on one database ------------------------

def wait_terminal(db: SQLiteDB | PostgresDB, n: int, workers: list[procs.Child],
                  timeout: float, t0: float, stall: float = 30.0) -> dict[str, Any]:
    """Poll until no message is open; times are relative to ``t0`` (the workers' spawn).
    Fails when nothing moved for ``stall`` seconds, or after ``timeout``."""
    first = None
    first_cpu: tuple[float | None, int] = (None, 0)
    hwm = 0
    deadline = t0 + timeout
    last_open, last_move = n, t0
    while True:
        time.sleep(POLL)
        now = time.perf_counter()
        open_ = db.open_count()
        hwm = max(hwm, *(procs.status_kb(w.pid).get("VmHWM", 0) for w in workers))
        if first is None and open_ < n:
            first = now - t0
            first_cpu = (_cpu(workers), n - open_)
        if open_ == 0:
            return {"seconds": now - t0, "first_progress_s": first, "worker_hwm_kb": hwm,
                    "cpu_at_first": first_cpu[0], "done_at_first": first_cpu[1]}
        if open_ != last_open:
            last_open, last_move = open_, now
        for w in workers:
            if not w.alive():
                raise RuntimeError(f"{w.name} exited early: {w.stderr_tail()}")
        if now - last_move > stall:
            raise RuntimeError(f"stalled: {open_} of {n} messages open and none finished for "
                               f"{stall:.0f} s; states {db.states()}; worker log: "
                               f"{workers[0].stderr_tail(5)}")
        if now > deadline:
            raise RuntimeError(f"{open_} of {n} messages still open after {timeout:.0f} s")


def _cpu(children: list[procs.Child]) -> float | None:
    values = [procs.cpu_seconds(c.pid) for c in children]
    return None if any(v is None for v in values) else sum(v or 0.0 for v in values)


def pushguard_round(db: SQLiteDB | PostgresDB, *, sandbox: procs.Child, hook: str, n: int,
                    concurrency: int, batch: int, enqueue_concurrency: int,
                    bodies: list[bytes], logdir: Path, patch: str = "",
                    workers: int = 1) -> dict[str, Any]:
    env = procs.pushguard_env(db.url, procs.webhook_secret())
    key = procs.migrate_and_key(env, logdir)
    api, base = procs.start_api(env, logdir, logdir)
    try:
        enq = load.enqueue(base, key, bodies, enqueue_concurrency)
    finally:
        api.stop()
    if enq["accepted"] != n:
        raise RuntimeError(f"enqueued {enq['accepted']} of {n}: {enq['problems']}")
    assert db.open_count() == n

    # (a) immediately before (b)'s delivery, so the same noise hits both.
    sb0 = procs.cpu_seconds(sandbox.pid)
    c0, m0 = time.process_time(), procs.machine_ticks()
    raw = load.raw_baseline(hook, n, concurrency)
    raw["machine_busy"] = procs.busy_share(m0, procs.machine_ticks())
    raw["client_cpu_s"] = time.process_time() - c0
    raw["sandbox_cpu_s"] = _delta(procs.cpu_seconds(sandbox.pid), sb0)
    if set(raw["statuses"]) != {200}:
        raise RuntimeError(f"raw baseline got statuses {raw['statuses']}")

    sb0, m0 = procs.cpu_seconds(sandbox.pid), procs.machine_ticks()
    t0 = time.perf_counter()
    # One worker process per usable core (the measure, as an operator would run them on this
    # machine), sharing the same total concurrency as the raw loop; --workers changes it.
    each = max(1, concurrency // workers)
    children = [procs.start_worker(env, logdir, logdir, concurrency=each,
                                   batch=min(batch, each), name=f"worker-{db.kind}-{i}",
                                   patch=patch)
                for i in range(workers)]
    try:
        done = wait_terminal(db, n, children, max(120.0, n / 100), t0)
        worker_cpu = _cpu(children)
        sandbox_cpu = _delta(procs.cpu_seconds(sandbox.pid), sb0)
        busy = procs.busy_share(m0, procs.machine_ticks())
    finally:
        rc = max(c.stop() for c in children)
    states = db.states()
    if states.get("delivered", 0) != n:
        raise RuntimeError(f"not all delivered: {states}")
    seconds = done["seconds"]
    first = done["first_progress_s"] or 0.0
    per_s = n / seconds
    return {
        "n": n,
        "raw_per_s": raw["per_s"],
        "raw_seconds": raw["seconds"],
        "raw_client_cpu_s": raw["client_cpu_s"],
        "raw_sandbox_cpu_s": raw["sandbox_cpu_s"],
        "raw_machine_busy": raw["machine_busy"],
        "pushguard_per_s": per_s,
        "pushguard_seconds": seconds,
        "ratio": per_s / raw["per_s"],
        # from the first poll that saw progress: the rate without the worker's start-up.
        "first_progress_s": first,
        "steady_per_s": n / (seconds - first) if seconds > first else None,
        "worker_cpu_s": worker_cpu,
        "worker_startup_cpu_s": done["cpu_at_first"],
        # worker CPU per message once it delivers (start-up, imports, excluded)
        "worker_cpu_us_per_msg": None if worker_cpu is None or done["cpu_at_first"] is None
        else 1e6 * (worker_cpu - done["cpu_at_first"]) / (n - done["done_at_first"]),
        "sandbox_cpu_s": sandbox_cpu,
        # share of all cores busy (any process) from worker spawn to the last message.
        "machine_busy": busy,
        "worker_peak_rss_mb": done["worker_hwm_kb"] / 1024,
        "worker_exit": rc,
        "worker_log_lines": sum(c.stderr_lines() for c in children),
        "states": states,
        "enqueue_per_s": enq["per_s"],
        "enqueue_seconds": enq["seconds"],
        "enqueue_request_ms_median": enq["request_ms_median"],
    }


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def db_rounds(make_db: Callable[[], SQLiteDB | PostgresDB], label: str, repeat: int,
              **kw: Any) -> dict[str, Any]:
    """``repeat`` rounds on fresh databases; medians over the rounds that succeeded (a failed
    round is kept, with its error, and does not stop the benchmark)."""
    runs: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for i in range(repeat):
        try:
            db = make_db()
        except Exception as exc:
            failed.append({"round": i + 1, "error": f"{type(exc).__name__}: {exc}"[:1000]})
            log(f"{label} round {i + 1}/{repeat} FAILED: cannot create the database: {exc}")
            continue
        try:
            r = pushguard_round(db, **kw)
        except Exception as exc:  # keep going: one bad round must not lose the others
            failed.append({"round": i + 1, "error": f"{type(exc).__name__}: {exc}"[:1000]})
            log(f"{label} round {i + 1}/{repeat} FAILED: {exc}")
            continue
        finally:
            db.close()
        log(f"{label} round {i + 1}/{repeat}: raw {r['raw_per_s']:,.0f}/s, pushguard "
            f"{r['pushguard_per_s']:,.0f}/s (steady {r['steady_per_s'] or 0:,.0f}/s), ratio "
            f"{r['ratio']:.2f}, enqueue {r['enqueue_per_s']:,.0f}/s")
        runs.append(r)
    if not runs:
        return {"skipped": f"every round failed: {failed[0]['error']}", "failed_rounds": failed}
    med = {k: statistics.median(r[k] for r in runs)
           for k in ("raw_per_s", "pushguard_per_s", "steady_per_s", "first_progress_s",
                     "enqueue_per_s", "worker_cpu_us_per_msg", "worker_peak_rss_mb",
                     "machine_busy", "raw_machine_busy")
           if all(r[k] is not None for r in runs)}
    return {
        **med,
        "ratio": med["pushguard_per_s"] / med["raw_per_s"],
        "steady_ratio": (med["steady_per_s"] / med["raw_per_s"]) if "steady_per_s" in med
        else None,
        "ratio_per_round": [r["ratio"] for r in runs],
        "runs": runs,
        "failed_rounds": failed,
    }


# -- enqueue throughput --------------------------------------------------------------------------

def enqueue_run(hook: str, n: int, concurrency: int, logdir: Path) -> dict[str, Any]:
    db = SQLiteDB()
    try:
        env = procs.pushguard_env(db.url, procs.webhook_secret())
        key = procs.migrate_and_key(env, logdir)
        bodies = load.batch_bodies(hook, n)
        api, base = procs.start_api(env, logdir, logdir)
        try:
            c0 = procs.cpu_seconds(api.pid)
            res = load.enqueue(base, key, bodies, concurrency)
            res["api_cpu_s"] = _delta(procs.cpu_seconds(api.pid), c0)
            res["api_peak_rss_mb"] = procs.status_kb(api.pid).get("VmHWM", 0) / 1024
        finally:
            api.stop()
        if res["accepted"] != n:
            raise RuntimeError(f"enqueued {res['accepted']} of {n}: {res['problems']}")
        res["open_after"] = db.open_count()
        res["db_mb"] = db.size_mb()
        return res
    finally:
        db.close()


# -- memory ---------------------------------------------------------------------------------------

def backlog(db: SQLiteDB | PostgresDB, hook: str, n: int, chunk: int = 5000) -> dict[str, Any]:
    """Insert ``n`` queued messages through the real store (``SQLStore.enqueue``)."""
    from pushguard.models import NewMessage
    from pushguard.store.sql import SQLStore

    store = SQLStore(db.url)
    try:
        store.migrate()
        t0 = time.perf_counter()
        for start in range(0, n, chunk):
            items = [NewMessage(channel="webhook", to=hook, content=load.content(i))
                     for i in range(start, min(n, start + chunk))]
            store.enqueue(items, scope="bench")
        dt = time.perf_counter() - t0
    finally:
        store.close()
    return {"n": n, "insert_seconds": dt, "insert_per_s": n / dt}


def memory_run(hook: str, n: int, seconds: float, concurrency: int, batch: int,
               logdir: Path, patch: str = "") -> dict[str, Any]:
    db = SQLiteDB()
    try:
        info = backlog(db, hook, n)
        info["db_mb"] = db.size_mb()
        env = procs.pushguard_env(db.url, procs.webhook_secret())
        worker = procs.start_worker(env, logdir, logdir, concurrency=concurrency, batch=batch,
                                    name=f"worker-mem-{n}", patch=patch)
        hwm = rss = 0
        samples = []
        t0 = time.perf_counter()
        try:
            while time.perf_counter() - t0 < seconds and worker.alive():
                time.sleep(0.25)
                st = procs.status_kb(worker.pid)
                hwm, rss = max(hwm, st.get("VmHWM", 0)), st.get("VmRSS", rss)
                samples.append(round(st.get("VmRSS", 0) / 1024, 1))
            if not worker.alive():
                raise RuntimeError(f"worker exited early: {worker.stderr_tail()}")
            worker.proc.send_signal(signal.SIGTERM)
            while worker.alive():  # the drain may still allocate: keep reading the peak
                hwm = max(hwm, procs.status_kb(worker.pid).get("VmHWM", 0))
                time.sleep(0.05)
        finally:
            rc = worker.stop()
        ran = time.perf_counter() - t0
        states = db.states()
        done = sum(v for k, v in states.items() if k not in ("queued", "sending"))
        info.update({
            "run_seconds": ran, "peak_rss_mb": hwm / 1024, "last_rss_mb": rss / 1024,
            "rss_mb_every_5s": samples[::20], "delivered_in_run": states.get("delivered", 0),
            "terminal_in_run": done, "per_s_in_run": done / ran, "worker_exit": rc,
            "worker_log_lines": worker.stderr_lines(),
        })
        return info
    finally:
        db.close()


# -- report ---------------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import aiohttp
    import sqlalchemy

    return {
        "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
        "cpu": model, "python": platform.python_version(), "platform": platform.platform(),
        "sqlite": __import__("sqlite3").sqlite_version, "sqlalchemy": sqlalchemy.__version__,
        "aiohttp": aiohttp.__version__, "loadavg_start": list(os.getloadavg()),
    }


def code_state() -> dict[str, Any]:
    """Which code was measured: the commit, files changed on top of it, and a hash of every
    file under pushguard/ (what tells whether the code changed while the benchmark ran)."""
    import hashlib
    import subprocess

    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  timeout=10, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    h = hashlib.sha256()
    for f in sorted((root / "pushguard").rglob("*.py")):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip() or None,
        "changed_files": [line[3:] for line in git("status", "--porcelain").splitlines()
                          if line[3:].startswith("pushguard/")],
        "pushguard_sha256": h.hexdigest()[:16],
    }


def fmt(v: Any, spec: str = ",.0f", unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return f"{v:{spec}}{unit}"


def table(res: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str]] = []
    p = res["params"]
    for kind in ("sqlite", "postgresql"):
        d = res[kind]
        if "skipped" in d:
            rows.append((f"{kind}", f"skipped: {d['skipped']}", ""))
            continue
        rows += [
            (f"{kind}: raw aiohttp loop", fmt(d["raw_per_s"], unit=" /s"),
             f"median of {len(d['runs'])}, c={p['concurrency']}"
             + (f"; {len(d['failed_rounds'])} round(s) FAILED, see json"
                if d.get("failed_rounds") else "")),
            (f"{kind}: pushguard delivery", fmt(d["pushguard_per_s"], unit=" /s"),
             f"N={p['n']}, worker spawn -> all terminal"),
            (f"{kind}: ratio", fmt(d["ratio"], ".2f"),
             f"target >= {TARGET_RATIO}, stretch {STRETCH_RATIO}; per round "
             + ", ".join(f"{x:.2f}" for x in d["ratio_per_round"])),
            (f"{kind}: steady delivery", fmt(d.get("steady_per_s"), unit=" /s"),
             f"ratio {fmt(d.get('steady_ratio'), '.2f')}; excl. "
             f"{fmt(d.get('first_progress_s'), '.2f', ' s')} start-up"),
            (f"{kind}: worker CPU per message", fmt(d.get("worker_cpu_us_per_msg"), ",.0f",
                                                     " us"), "after start-up"),
            (f"{kind}: machine busy (raw / pushguard)",
             f"{fmt(d.get('raw_machine_busy'), '.0%')} / {fmt(d.get('machine_busy'), '.0%')}",
             f"share of all {res['machine']['usable_cores']} cores, any process"),
            (f"{kind}: enqueue (batch API)", fmt(d["enqueue_per_s"], unit=" /s"),
             f"{p['n']} messages"),
        ]
    e = res["enqueue"]
    rows.append(("enqueue 100k (SQLite)", fmt(res["enqueue_100k_seconds"], ".2f", " s"),
                 f"{fmt(res['enqueue_per_s'])} /s, target <= {TARGET_ENQUEUE_100K_S:g} s"
                 + (" (extrapolated from the N run)" if e.get("extrapolated") else "")))
    m = res.get("memory")
    if isinstance(m, dict) and "skipped" not in m:
        for key in ("1m", "10k"):
            r = m[key]
            rows.append((f"worker peak RSS, {r['n']:,} backlog",
                         fmt(r["peak_rss_mb"], ".1f", " MB"),
                         f"target <= {TARGET_RSS_MB:g} MB; {r['run_seconds']:.0f} s run: "
                         + ("all delivered" if r["terminal_in_run"] >= r["n"] else
                            f"{r['terminal_in_run']:,} done, {r['per_s_in_run']:,.0f}/s")))
        rows.append((f"{m['1m']['n']:,} backlog insert (SQLStore.enqueue)",
                     fmt(m["1m"]["insert_seconds"], ".1f", " s"),
                     f"{m['1m']['insert_per_s']:,.0f}/s, chunks of 5000"))
    else:
        rows.append(("memory", "skipped", str((m or {}).get("skipped", ""))))
    w1 = max(len(r[0]) for r in rows)
    w2 = max(len(r[1]) for r in rows)
    line = "-" * (w1 + w2 + 40)
    out = [line, f"{'measure':<{w1}}  {'value':>{w2}}  notes", line]
    out += [f"{a:<{w1}}  {b:>{w2}}  {c}" for a, b, c in rows]
    out.append(line)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20_000, help="messages per round (a)/(b)")
    ap.add_argument("--concurrency", type=int, default=100, help="requests in flight, both sides")
    ap.add_argument("--batch", type=int, default=0,
                    help="worker claim batch (default: concurrency)")
    ap.add_argument("--repeat", type=int, default=0,
                    help="rounds per database, median reported (default 3, 1 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="one round per database; enqueue rate taken from the N run")
    ap.add_argument("--enqueue-n", type=int, default=100_000)
    ap.add_argument("--enqueue-concurrency", type=int, default=2,
                    help="batch requests in flight while enqueueing")
    ap.add_argument("--no-memory", action="store_true", help="skip (c)")
    ap.add_argument("--memory-backlog", type=int, default=1_000_000)
    ap.add_argument("--memory-seconds", type=float, default=20.0)
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--no-layers", action="store_true",
                    help="skip the in-process breakdown (raw -> HttpClient -> provider -> "
                    "pipeline -> worker on a memory store -> worker on SQLite)")
    ap.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL",
                                                       "postgresql://127.0.0.1:5432/test"))
    ap.add_argument("--no-sqlite", action="store_true",
                    help="skip the SQLite rounds (experiments only; latest.json is not written)")
    ap.add_argument("--patch", default="",
                    help="experiment: run the worker with bench.whatif patches (comma-separated);"
                    " results go to <timestamp>-whatif.json, never latest.json")
    ap.add_argument("--workers", type=int, default=0,
                    help="worker processes sharing --concurrency (default: one per usable "
                    "core); another count is an experiment (whatif output)")
    ap.add_argument("--no-channels", action="store_true",
                    help="skip bench.channels (email, APNs, FCM, Web Push next to plain clients)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    per_core = len(os.sched_getaffinity(0))
    args.workers = args.workers or per_core
    experiment = bool(args.patch or args.no_sqlite or args.workers != per_core)
    batch = args.batch or args.concurrency
    started = time.perf_counter()
    when = datetime.now(UTC)
    logdir = Path(__import__("tempfile").mkdtemp(prefix="pushguard-bench-logs-"))
    res: dict[str, Any] = {
        "params": {"n": args.n, "concurrency": args.concurrency, "batch": batch,
                   "repeat": repeat, "quick": args.quick,
                   "enqueue_concurrency": args.enqueue_concurrency, "patch": args.patch,
                   "workers": args.workers,
                   "payload_bytes": len(load.body(0))},
        "machine": machine(),
        "code": code_state(),
    }
    log(f"logs in {logdir}")
    sandbox, base = procs.start_sandbox(logdir)
    hook = f"{base}/hooks/bench"
    log(f"sandbox at {base} (pid {sandbox.pid})")
    try:
        bodies = load.batch_bodies(hook, args.n)
        kw = dict(sandbox=sandbox, hook=hook, n=args.n, concurrency=args.concurrency,
                  batch=batch, enqueue_concurrency=args.enqueue_concurrency, bodies=bodies,
                  logdir=logdir, patch=args.patch, workers=args.workers)
        if args.no_sqlite:
            res["sqlite"] = {"skipped": "--no-sqlite"}
        else:
            res["sqlite"] = db_rounds(SQLiteDB, "sqlite", repeat, **kw)
        why = "--no-postgres" if args.no_postgres else postgres_unreachable(args.pg_url)
        if why:
            res["postgresql"] = {"skipped": why}
        else:
            try:
                res["postgresql"] = db_rounds(lambda: PostgresDB(args.pg_url), "postgresql",
                                              repeat, **kw)
            except Exception as exc:  # record it and go on: SQLite is the headline
                log(f"postgresql failed: {exc}")
                res["postgresql"] = {"skipped": f"failed: {type(exc).__name__}: {exc}"[:500]}
        if args.no_layers:
            res["layers"] = {"skipped": "--no-layers"}
        else:
            log("layers: the same messages through ever more of pushguard, in this process")
            if args.patch:
                from bench import whatif

                for name in args.patch.split(","):
                    whatif.PATCHES[name]()
            res["layers"] = layers.run_layers(hook, args.n, args.concurrency)
        if args.quick:
            rate = res["sqlite"].get("enqueue_per_s") or res["postgresql"].get("enqueue_per_s")
            res["enqueue"] = {"extrapolated": True, "measured_n": args.n, "per_s": rate}
        else:
            log(f"enqueue {args.enqueue_n:,} through the batch API (SQLite)")
            e = enqueue_run(hook, args.enqueue_n, args.enqueue_concurrency, logdir)
            res["enqueue"] = {"extrapolated": False, "measured_n": args.enqueue_n, **e}
            rate = e["per_s"]
            log(f"enqueue: {e['seconds']:.2f} s, {rate:,.0f}/s")
        res["enqueue_per_s"] = rate
        res["enqueue_100k_seconds"] = 100_000 / rate
        if args.no_memory:
            res["memory"] = {"skipped": "--no-memory"}
        else:
            mem = {}
            for key, n in (("1m", args.memory_backlog), ("10k", 10_000)):
                log(f"memory: {n:,}-message backlog, worker for {args.memory_seconds:g} s")
                mem[key] = memory_run(hook, n, args.memory_seconds, args.concurrency, batch,
                                      logdir, args.patch)
                log(f"memory: peak RSS {mem[key]['peak_rss_mb']:.1f} MB "
                    f"(backlog insert {mem[key]['insert_seconds']:.1f} s)")
            res["memory"] = mem
        res["sandbox_exit"] = sandbox.stop()
    finally:
        if sandbox.alive():
            sandbox.stop()

    sq = res["sqlite"]
    mem = res["memory"]
    res.update({
        "raw_per_s": sq.get("raw_per_s"),
        "pushguard_per_s": sq.get("pushguard_per_s"),
        "ratio": sq.get("ratio"),
        "rss_mb_1m_backlog": mem["1m"]["peak_rss_mb"] if "1m" in mem else None,
        "rss_mb_10k_backlog": mem["10k"]["peak_rss_mb"] if "10k" in mem else None,
        "when": when.isoformat(timespec="seconds"),
        "elapsed_s": round(time.perf_counter() - started, 1),
    })
    res["machine"]["loadavg_end"] = list(os.getloadavg())
    if code_state()["pushguard_sha256"] != res["code"]["pushguard_sha256"]:
        res["code"]["changed_during_run"] = True
        log("warning: pushguard/ changed while the benchmark ran; figures mix code versions")
    res["targets"] = {
        "ratio_ge_0.6": None if res["ratio"] is None else res["ratio"] >= TARGET_RATIO,
        "ratio_ge_0.8": None if res["ratio"] is None else res["ratio"] >= STRETCH_RATIO,
        "enqueue_100k_le_10s": res["enqueue_100k_seconds"] <= TARGET_ENQUEUE_100K_S,
        "rss_le_300mb": None if res["rss_mb_1m_backlog"] is None
        else res["rss_mb_1m_backlog"] <= TARGET_RSS_MB,
    }
    print()
    print(table(res))
    if "skipped" not in res["layers"]:
        print("\nbreakdown in one process (CPU us per message; 'adds': vs the row above):")
        print(layers.format_layers(res["layers"]))
    print(f"total {res['elapsed_s']:.0f} s; targets: "
          + ", ".join(f"{k} {'ok' if v else ('-' if v is None else 'MISSED')}"
                      for k, v in res["targets"].items()))
    args.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(res, indent=2, sort_keys=False) + "\n"
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    if experiment:
        path = args.out / f"{stamp}-whatif.json"
    else:
        path = args.out / "latest.json"
        (args.out / f"{stamp}.json").write_text(text)
    path.write_text(text)
    print(f"wrote {path}")
    if not (args.no_channels or experiment):
        log("channels: the real channels next to plain clients (python -m bench.channels)")
        channels.main(["--out", str(args.out)] + (["--repeat", "1"] if args.quick else []))
    return 0


if __name__ == "__main__":
    sys.exit(main())
