"""The worker: claims batches under a lease, delivers them concurrently, records outcomes in
batches.

All database work goes through one dedicated thread, one call per batch: the event loop never
waits on the database per message. A worker killed with SIGKILL loses nothing: the rows it held
stay ``sending`` until their lease expires, then any worker's reaper puts them back in the queue
(recording the lost attempt). SIGTERM stops claiming, lets in-flight deliveries finish, flushes
their outcomes and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import structlog

from pushguard.exceptions import StoreError
from pushguard.models import Job, Outcome
from pushguard.pipeline import Pipeline
from pushguard.store.base import Store

T = TypeVar("T")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(2).hex()}"


class Worker:
    def __init__(
        self,
        store: Store,
        pipeline: Pipeline,
        *,
        concurrency: int = 200,
        batch: int = 200,
        lease: float = 60.0,
        poll: float = 0.2,
        name: str | None = None,
        log: Any = None,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.concurrency = max(1, concurrency)
        self.batch = max(1, min(batch, self.concurrency))
        self.lease = lease
        self.poll = poll
        self.name = name or worker_name()
        self.log = log or structlog.get_logger("pushguard.worker")
        self._pending: list[Outcome] = []
        self._flush_now = asyncio.Event()
        self._want_more = asyncio.Event()
        self._ready: deque[Job] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._db = ThreadPoolExecutor(1, thread_name_prefix="pushguard-db")
        self.processed = 0
        self.store_errors = 0

    async def _db_call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db, fn, *args)

    async def run(self, stop: asyncio.Event, *, drain_timeout: float | None = None) -> None:
        """Deliver until ``stop`` is set, then drain and return."""
        self.log.info("worker_started", worker=self.name, concurrency=self.concurrency)
        flusher = asyncio.create_task(self._flusher(stop))
        reaper = asyncio.create_task(self._reaper(stop))
        try:
            await self._claim_loop(stop)
        finally:
            # Drain: what this worker holds (in flight or claimed ahead) is delivered, then
            # recorded; nothing it holds is left to wait for a lease to expire.
            deadline = asyncio.get_running_loop().time() + (drain_timeout or self.lease / 2)
            while (self._tasks or self._ready) and asyncio.get_running_loop().time() < deadline:
                self._start_ready()
                if self._tasks:
                    await asyncio.wait(set(self._tasks), timeout=0.1)
            reaper.cancel()
            await asyncio.gather(reaper, return_exceptions=True)
            self._flush_now.set()
            await flusher
            await self._flush_all()
            self._db.shutdown(wait=True)
            self.log.info("worker_stopped", worker=self.name, processed=self.processed)

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        """Keep up to one batch claimed ahead of the free slots, so no slot waits for a claim."""
        idle = self.poll
        while not stop.is_set():
            room = self.concurrency + self.batch - len(self._tasks) - len(self._ready)
            # Backpressure: while outcomes cannot be written, stop taking new work.
            backlog = len(self._pending) > self.concurrency * 4
            want = min(room, self.batch)
            if want >= max(1, self.batch // 2) and not backlog:
                try:
                    jobs = await self._db_call(self.store.claim, self.name, want, self.lease)
                except StoreError as exc:
                    self.store_errors += 1
                    self.log.error("claim_failed", error=str(exc))
                    jobs = []
                    await _sleep_or_stop(stop, min(5.0, idle * 4))
                self._ready.extend(jobs)
                self._start_ready()
                if jobs:
                    idle = self.poll
                    if len(jobs) == want:
                        continue  # there is probably more: keep the buffer full
            if self._tasks or self._ready:
                # Woken by _done when the buffer runs low; waiting on the tasks themselves
                # would cost O(in-flight) per completed message.
                self._want_more.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._want_more.wait(), timeout=idle)
            else:
                await _sleep_or_stop(stop, idle)
                idle = min(idle * 1.5, max(self.poll, 1.0))

    def _start_ready(self) -> None:
        while self._ready and len(self._tasks) < self.concurrency:
            task = asyncio.create_task(self._one(self._ready.popleft()))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._start_ready()
        if len(self._ready) <= self.batch // 2:
            self._want_more.set()

    async def _one(self, job: Job) -> None:
        outcome = await self.pipeline.process(job)
        self._pending.append(outcome)
        self.processed += 1
        if len(self._pending) >= self.batch:
            self._flush_now.set()

    async def _flusher(self, stop: asyncio.Event) -> None:
        while not (stop.is_set() and not self._tasks):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), timeout=0.05)
            self._flush_now.clear()
            await self._flush_all()

    async def _flush_all(self) -> None:
        delay = 0.1
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._db_call(self.store.record, self.name, batch)
            except StoreError as exc:
                # Keep the outcomes and try again: a locked or full database must not turn
                # delivered messages into lost ones. If we die first, leases expire and the
                # messages are re-sent (at-least-once, same webhook-id).
                self.store_errors += 1
                self.log.error("record_failed", error=str(exc), pending=len(batch))
                self._pending = batch + self._pending
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _reaper(self, stop: asyncio.Event) -> None:
        interval = max(0.5, self.lease / 4)
        while not stop.is_set():
            try:
                n = await self._db_call(self.store.reap)
                if n:
                    self.pipeline.metrics.leases_reclaimed.inc(n)
                    self.log.warning("leases_reclaimed", count=n)
            except StoreError as exc:
                self.log.error("reap_failed", error=str(exc))
            await _sleep_or_stop(stop, interval)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
