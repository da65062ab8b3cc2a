"""Failover end to end: the primary gateway goes down in the middle of a run, the backup takes
over, and the primary comes back through the breaker's half-open probe. Nothing is lost and,
since the outage answers 503 (a clear refusal, not an ambiguous timeout), nothing is sent twice."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from pushguard.app import App
from pushguard.config import BreakerConfig, Config, ProviderConfig, RetryConfig
from pushguard.models import NewMessage
from pushguard.sandbox import SandboxThread
from pushguard.settings import Settings
from pushguard.states import State
from pushguard.store.sql import SQLStore


async def test_outage_fails_over_and_recovers_through_half_open(store: SQLStore) -> None:
    latency = {"latency_ms": [10, 20]}
    with SandboxThread(profiles={"sms": latency}) as primary, \
            SandboxThread(profiles={"sms": latency}) as backup:
        config = Config(
            channels={"sms": ("primary", "backup")},
            providers={
                # Paced (rate) so the run outlasts the outage and recovery can be seen.
                "primary": ProviderConfig("primary", "http",
                                          {"url": f"{primary.http_url}/sms/a/send"}, timeout=2,
                                          rate=250),
                "backup": ProviderConfig("backup", "http",
                                         {"url": f"{backup.http_url}/sms/b/send"}, timeout=2,
                                         rate=250),
            },
            retry=RetryConfig(base=0.05, cap=0.2),
            breaker=BreakerConfig(consecutive=3, open_seconds=0.3, max_open_seconds=0.6),
        )
        app = App(settings=Settings(outbound_allow="127.0.0.1"), store=store, config=config)
        ids = [r.id for r in store.enqueue(  # type: ignore[union-attr]
            [NewMessage("sms", f"+1415555{i:04d}", {"text": f"m{i}"}) for i in range(1500)],
            scope="t")]
        providers = app.build_providers()
        worker = app.build_worker(providers, poll=0.02, concurrency=20, batch=20)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await asyncio.sleep(0.5)
        primary.set_profile({**latency, "outages": [{"start": 0, "end": 1.5, "status": 503}]},
                            "sms")
        outage_end = time.time() + 1.5
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(store.stats().by_state.values()):
            await asyncio.sleep(0.1)
        stop.set()
        await task
        for p in providers.values():
            await p.close()
        got = Counter(r.body["id"] for sb in (primary, backup)
                      for r in sb.recorder.records("sms") if r.outcome == "200")
    views = [store.get(i) for i in ids]
    assert all(v is not None and v.state is State.DELIVERED for v in views), store.stats()
    assert set(got) == set(ids), "every message reached a gateway"
    assert max(got.values()) == 1, "no message was sent twice"
    by = Counter(v.last_provider for v in views if v)
    assert by["backup"] > 0, by  # the backup took over during the outage
    # ...and the primary was used again after the outage, through the half-open probe.
    late_primary = [v for v in views if v and v.last_provider == "primary"
                    and v.delivered_at and v.delivered_at > outage_end]
    assert late_primary, by
