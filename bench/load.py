"""The client side: the raw aiohttp baseline and the batch-API enqueue client."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp


def content(i: int) -> dict[str, Any]:
    """The message content; pushguard posts exactly its compact JSON as the webhook body."""
    return {"event": "order.created", "seq": i, "amount_cents": 1999, "currency": "EUR",
            "customer": "cus_4fK2mZr8Qx", "note": "x" * 96}


def body(i: int) -> bytes:
    return json.dumps(content(i), separators=(",", ":")).encode()


async def _raw(url: str, n: int, concurrency: int) -> dict[str, Any]:
    bodies = [body(i) for i in range(n)]
    headers = {"Content-Type": "application/json"}
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        # One unmeasured request per connection opens the pool (pushguard's worker opens its
        # connections inside its measured time, so this favours the baseline slightly).
        async def post(b: bytes) -> int:
            async with session.post(url, data=b, headers=headers) as r:
                await r.read()
                return r.status

        await asyncio.gather(*(post(bodies[0]) for _ in range(concurrency)))
        it = iter(bodies)

        async def loop() -> None:
            for b in it:
                st = await post(b)
                statuses[st] = statuses.get(st, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        dt = time.perf_counter() - t0
    return {"n": n, "seconds": dt, "per_s": n / dt, "statuses": statuses}


def raw_baseline(url: str, n: int, concurrency: int) -> dict[str, Any]:
    """POST ``n`` bodies to ``url`` with ``concurrency`` in flight; durable nothing."""
    return asyncio.run(_raw(url, n, concurrency))


def batch_bodies(to: str, n: int, per_request: int = 1000) -> list[bytes]:
    out = []
    for start in range(0, n, per_request):
        msgs = [{"channel": "webhook", "to": to, "content": content(i)}
                for i in range(start, min(n, start + per_request))]
        out.append(json.dumps({"messages": msgs}).encode())
    return out


async def _enqueue(api: str, key: str, bodies: list[bytes], concurrency: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    accepted = rejected = 0
    latencies: list[float] = []
    problems: list[str] = []
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        it = iter(bodies)

        async def loop() -> None:
            nonlocal accepted, rejected
            for b in it:
                t = time.perf_counter()
                async with s.post(f"{api}/v1/messages/batch", data=b, headers=headers) as r:
                    data = await r.json()
                    latencies.append(time.perf_counter() - t)
                    if r.status != 202:
                        problems.append(f"HTTP {r.status}: {str(data)[:300]}")
                        continue
                    accepted += data["accepted"]
                    rejected += data["rejected"]
                    if data["rejected"] and len(problems) < 5:
                        bad = [x for x in data["results"] if "id" not in x][:1]
                        problems.append(f"rejected: {bad}")

        t0 = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        dt = time.perf_counter() - t0
    latencies.sort()
    return {
        "accepted": accepted, "rejected": rejected, "seconds": dt, "per_s": accepted / dt,
        "requests": len(bodies), "concurrency": concurrency,
        "request_ms_median": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "request_ms_max": 1000 * latencies[-1] if latencies else None,
        "problems": problems[:5],
    }


def enqueue(api: str, key: str, bodies: list[bytes], concurrency: int) -> dict[str, Any]:
    """POST the prepared batch bodies to ``/v1/messages/batch``."""
    return asyncio.run(_enqueue(api, key, bodies, concurrency))
