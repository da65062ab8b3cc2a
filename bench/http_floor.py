"""``python -m bench.http_floor``: how much of a delivery's CPU is aiohttp's client machinery.

The raw baseline of ``make bench`` is a plain aiohttp loop, and pushguard delivers through
aiohttp too, so the ratio can never be better than what is left after aiohttp's own cost per
request. This measures that cost against a floor: a minimal keep-alive HTTP/1.1 client (one
asyncio ``Protocol`` per connection, responses parsed by httptools' llhttp, no pooling logic,
no timeouts per phase, no redirects, no cookies, no TLS) posting the same bodies at the same
concurrency to the same sandbox receiver. The two run alternately, ``--repeat`` times each.

The floor is a measuring stick, not a client pushguard should ship: a real client also needs
TLS, connection-reuse races, chunked bodies, timeouts by phase and an SSRF-guarded resolver,
which is why pushguard uses aiohttp (see the README's benchmark section).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httptools

from bench import load, procs
from bench.layers import _raw


class _Conn(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        self.body = []
        if waiter is not None and not waiter.done():
            waiter.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionResetError("connection closed"))


async def _floor(url: str, n: int, concurrency: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for ``n`` POSTs."""
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(concurrency):
        _, proto = await loop.create_connection(_Conn, parts.hostname, parts.port)
        conns.append(proto)
    head = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Content-Type: application/json\r\n")
    bodies = iter([load.body(i) for i in range(n)])

    async def run(conn: _Conn) -> None:
        assert conn.transport is not None
        for b in bodies:
            conn.waiter = loop.create_future()
            conn.transport.write(f"{head}Content-Length: {len(b)}\r\n\r\n".encode() + b)
            async with asyncio.timeout(30):
                status = await conn.waiter
            if status != 200:
                raise RuntimeError(f"sandbox answered {status}")

    t0, c0 = time.perf_counter(), time.process_time()
    try:
        await asyncio.gather(*(run(c) for c in conns))
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        for c in conns:
            if c.transport is not None:
                c.transport.close()


def measure(url: str, n: int, concurrency: int, repeat: int) -> dict[str, Any]:
    runs: dict[str, list[tuple[float, float]]] = {"aiohttp": [], "floor": []}
    for _ in range(repeat):
        for name, fn in (("aiohttp", _raw), ("floor", _floor)):
            seconds, cpu = asyncio.run(fn(url, n, concurrency))
            runs[name].append((n / seconds, 1e6 * cpu / n))
    out: dict[str, Any] = {"n": n, "concurrency": concurrency, "repeat": repeat}
    for name, rs in runs.items():
        out[name] = {"per_s": statistics.median(r[0] for r in rs),
                     "cpu_us_per_msg": statistics.median(r[1] for r in rs),
                     "runs": [{"per_s": round(a), "cpu_us_per_msg": round(b, 1)} for a, b in rs]}
    out["aiohttp_cpu_share_above_floor"] = 1 - (out["floor"]["cpu_us_per_msg"]
                                                / out["aiohttp"]["cpu_us_per_msg"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.http_floor")
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="bench/results/http_floor.json")
    args = ap.parse_args()
    sandbox, base = procs.start_sandbox(Path(tempfile.mkdtemp(prefix="pushguard-floor-")))
    try:
        res = measure(f"{base}/hooks/bench", args.n, args.concurrency, args.repeat)
    finally:
        sandbox.stop()
    for name in ("aiohttp", "floor"):
        r = res[name]
        print(f"{name:<8} {r['per_s']:>8,.0f}/s  {r['cpu_us_per_msg']:6.1f} us CPU/msg  "
              + ", ".join(f"{x['per_s']:,}/s {x['cpu_us_per_msg']}" for x in r["runs"]))
    print(f"aiohttp spends {res['aiohttp_cpu_share_above_floor']:.0%} of its CPU per request "
          "above the floor")
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
