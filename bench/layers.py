"""Where the time goes between a raw POST and a durable delivery: the same N messages through
ever more of pushguard, in this process, against the sandbox, each at the same concurrency.

1. ``raw``: ``session.post`` with plain aiohttp (the baseline loop);
2. ``http_client``: pushguard's :class:`HttpClient` (SSRF guard, guarded resolver, timeouts)
   with the webhook headers;
3. ``provider``: :meth:`WebhookProvider.send` (render, sign, POST, classify);
4. ``pipeline``: :meth:`Pipeline.process` (routing, breaker, metrics, outcome);
5. ``worker_memstore``: the real :class:`Worker` (tasks, claim loop, flusher, one DB thread)
   over an in-memory store whose claim/record cost nothing;
6. ``worker_sqlite``: the same worker over a real :class:`SQLStore` on a temp SQLite file.

Each layer's CPU per message (this process's CPU time / N) shows what it adds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp

from bench import load


def _settings(hook: str, db_url: str = "sqlite:///:memory:") -> Any:
    from bench import procs
    from pushguard.settings import Settings

    return Settings(database_url=db_url, webhook_secret=procs.webhook_secret(),
                    outbound_allow="127.0.0.1", log_level="WARNING")


def _jobs(hook: str, n: int) -> list[Any]:
    from pushguard.models import Job, new_id

    now = time.time()
    return [Job(id=new_id(), channel="webhook", to=hook, content=load.content(i), topic=None,
                priority=1, attempts=0, created_at=now,
                expires_at=now + 86400) for i in range(n)]


Timed = tuple[float, float]  # (wall seconds, CPU seconds of this process, all threads)


async def drive(items: Sequence[Any], concurrency: int,
                one: Callable[[Any], Awaitable[None]]) -> Timed:
    """``concurrency`` loops taking items from one iterator; wall and CPU time."""
    it = iter(items)

    async def loop() -> None:
        for x in it:
            await one(x)

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return time.perf_counter() - t0, time.process_time() - c0


async def _raw(hook: str, n: int, c: int) -> Timed:
    bodies = [load.body(i) for i in range(n)]
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as s:
        async def one(b: bytes) -> None:
            async with s.post(hook, data=b, headers=headers) as r:
                await r.read()
                assert r.status == 200

        await drive(bodies[:c], c, one)
        return await drive(bodies, c, one)


def _provider(hook: str) -> Any:
    from pushguard.app import App
    from pushguard.config import default_config

    settings = _settings(hook)
    app = App(settings=settings, store=None, config=default_config(settings))  # type: ignore[arg-type]
    return app, app.build_providers()


async def _http_client(hook: str, n: int, c: int) -> Timed:
    _, providers = _provider(hook)
    p = providers["webhook"]
    await p.start()
    deliveries = [_delivery(j) for j in _jobs(hook, n)]
    try:
        async def one(d: Any) -> None:
            body, headers = p.render(d)
            r = await p.client.post(hook, data=body, headers=headers)
            assert r.status == 200

        await drive(deliveries[:c], c, one)
        return await drive(deliveries, c, one)
    finally:
        await p.close()


def _delivery(job: Any) -> Any:
    from pushguard.providers.base import Delivery

    return Delivery(message_id=job.id, channel=job.channel, to=job.to, content=job.content,
                    topic=job.topic, attempt=1, priority=job.priority, expires_at=job.expires_at)


async def _provider_send(hook: str, n: int, c: int) -> Timed:
    _, providers = _provider(hook)
    p = providers["webhook"]
    await p.start()
    deliveries = [_delivery(j) for j in _jobs(hook, n)]
    try:
        async def one(d: Any) -> None:
            await p.send(d)

        await drive(deliveries[:c], c, one)
        return await drive(deliveries, c, one)
    finally:
        await p.close()


async def _pipeline(hook: str, n: int, c: int) -> Timed:
    from pushguard.states import State

    app, providers = _provider(hook)
    for p in providers.values():
        await p.start()
    pipeline = app.build_pipeline(providers)
    try:
        async def one(job: Any) -> None:
            out = await pipeline.process(job)
            assert out.state is State.DELIVERED, out

        await drive(_jobs(hook, c), c, one)
        return await drive(_jobs(hook, n), c, one)
    finally:
        for p in providers.values():
            await p.close()


class MemStore:
    """Claim hands out prepared jobs; record only counts. Enough for :class:`Worker`."""

    def __init__(self, jobs: list[Any], done: asyncio.Event, loop: asyncio.AbstractEventLoop):
        self.jobs, self.n, self.recorded = jobs, len(jobs), 0
        self.done, self.loop = done, loop

    def claim(self, owner: str, limit: int, lease: float) -> list[Any]:
        out, self.jobs = self.jobs[:limit], self.jobs[limit:]
        return out

    def record(self, owner: str, outcomes: Sequence[Any]) -> int:
        self.recorded += len(outcomes)
        if self.recorded >= self.n:
            self.loop.call_soon_threadsafe(self.done.set)
        return len(outcomes)

    def exchange(self, owner: str, outcomes: Sequence[Any], limit: int,
                 lease: float) -> list[Any]:
        if outcomes:
            self.record(owner, outcomes)
        return self.claim(owner, limit, lease) if limit > 0 else []

    def exchange_nowait(self, owner: str, outcomes: Sequence[Any], limit: int,
                        lease: float) -> list[Any]:
        return self.exchange(owner, outcomes, limit, lease)  # nothing to wait for

    def checkpoint(self) -> None:
        pass

    def reap(self, limit: int = 1000) -> int:
        return 0

    def sweep_unconfirmed(self, limit: int = 500) -> int:
        return 0


async def _worker(hook: str, n: int, c: int, store_kind: str) -> Timed:
    import structlog

    from pushguard.models import NewMessage
    from pushguard.store.sql import SQLStore
    from pushguard.worker import Worker

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    app, providers = _provider(hook)
    for p in providers.values():
        await p.start()
    done = asyncio.Event()
    tmp = None
    store: Any
    if store_kind == "memory":
        store = MemStore(_jobs(hook, n), done, asyncio.get_running_loop())
    else:
        from bench.dbs import SQLiteDB

        tmp = SQLiteDB()
        store = SQLStore(tmp.url)
        store.migrate()
        for s in range(0, n, 5000):
            store.enqueue([NewMessage(channel="webhook", to=hook, content=load.content(i))
                           for i in range(s, min(n, s + 5000))], scope="bench")
    worker = Worker(store, app.build_pipeline(providers), concurrency=c, batch=c)
    stop = asyncio.Event()
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        task = asyncio.create_task(worker.run(stop))
        if tmp is not None:
            while tmp.open_count() > 0:
                await asyncio.sleep(0.05)
        else:
            await done.wait()
        timed = time.perf_counter() - t0, time.process_time() - c0
        stop.set()
        await task
        return timed
    finally:
        for p in providers.values():
            await p.close()
        if tmp is not None:
            store.close()
            tmp.close()


LAYERS: dict[str, Callable[[str, int, int], Awaitable[Timed]]] = {
    "raw": _raw,
    "http_client": _http_client,
    "provider": _provider_send,
    "pipeline": _pipeline,
    "worker_memstore": lambda h, n, c: _worker(h, n, c, "memory"),
    "worker_sqlite": lambda h, n, c: _worker(h, n, c, "sqlite"),
}


def run_layers(hook: str, n: int, concurrency: int,
               only: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Each layer once, in order: rate and this process's CPU per message. A layer that fails
    or takes too long (the code under test changed shape, say) is reported, not fatal."""
    out: dict[str, dict[str, Any]] = {}
    limit = max(60.0, n / 100)
    for name, fn in LAYERS.items():
        if only and name not in only:
            continue

        async def timed(fn: Callable[[str, int, int], Awaitable[Timed]] = fn) -> Timed:
            return await asyncio.wait_for(fn(hook, n, concurrency), timeout=limit)

        try:
            seconds, cpu = asyncio.run(timed())
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            continue
        out[name] = {"per_s": n / seconds, "seconds": seconds, "cpu_us_per_msg": 1e6 * cpu / n}
    return out


def main() -> None:
    import argparse
    import tempfile
    from pathlib import Path

    from bench import procs

    ap = argparse.ArgumentParser(prog="python -m bench.layers")
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--patch", default="", help="bench.whatif patches to apply first")
    ap.add_argument("--only", default="", help="comma-separated layer names")
    args = ap.parse_args()
    from bench import whatif

    for name in filter(None, args.patch.split(",")):
        whatif.PATCHES[name]()
    sandbox, base = procs.start_sandbox(Path(tempfile.mkdtemp(prefix="pushguard-layers-")))
    try:
        res = run_layers(f"{base}/hooks/bench", args.n, args.concurrency,
                         [x for x in args.only.split(",") if x])
    finally:
        sandbox.stop()
    print(format_layers(res))


def format_layers(res: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'layer':<18} {'per s':>9} {'CPU us/msg':>11} {'adds':>8}"]
    prev = None
    for name, r in res.items():
        if "error" in r:
            lines.append(f"{name:<18} failed: {r['error']}")
            continue
        adds = "" if prev is None else f"{r['cpu_us_per_msg'] - prev:+.0f}"
        lines.append(f"{name:<18} {r['per_s']:>9,.0f} {r['cpu_us_per_msg']:>11,.0f} {adds:>8}")
        prev = r["cpu_us_per_msg"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
