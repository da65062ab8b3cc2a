"""The worker: claims batches under a lease, delivers them concurrently, records outcomes in
batches.

Database work is one call per batch, never per message. It runs on a dedicated thread, or on
the event loop's own thread when the store can do it without waiting on anything (SQLite with
relaxed commits and the write lock free: see ``SQLStore.exchange_nowait``), which saves the GIL
handoffs a thread pays for every row. A worker killed with SIGKILL loses nothing: the rows it held
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

#: longest time an outcome waits before it is written when fewer than a batch are pending.
FLUSH_INTERVAL = 0.05
#: at most this often, a WAL checkpoint on the DB thread while store cycles run inline
CHECKPOINT_INTERVAL = 1.0


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
        self._wake = asyncio.Event()
        self._quiet_until = 0.0
        self._drain_deadline = 0.0
        self._drain_for = lease / 2
        self._ready: deque[Job] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._db = ThreadPoolExecutor(1, thread_name_prefix="pushguard-db")
        self.processed = 0
        self.store_errors = 0
        #: store cycles run on the event loop's thread, and on the DB thread
        self.inline_exchanges = 0
        self.threaded_exchanges = 0
        self._checkpointing: asyncio.Task[None] | None = None
        self._next_checkpoint = 0.0

    async def _db_call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db, fn, *args)

    async def run(self, stop: asyncio.Event, *, drain_timeout: float | None = None) -> None:
        """Deliver until ``stop`` is set, then drain and return.

        Draining delivers what this worker holds (in flight or claimed ahead) and records it,
        for at most ``drain_timeout`` seconds (default: half the lease); anything still held
        then is left to the lease.
        """
        self.log.info("worker_started", worker=self.name, concurrency=self.concurrency)
        reaper = asyncio.create_task(self._reaper(stop))
        self._drain_for = drain_timeout or self.lease / 2
        self._drain_deadline = 0.0
        waiter = asyncio.create_task(stop.wait())
        waiter.add_done_callback(lambda _: self._wake.set())  # only to wake the DB loop
        try:
            await self._db_loop(stop)
        finally:
            waiter.cancel()
            reaper.cancel()
            await asyncio.gather(reaper, waiter, *filter(None, [self._checkpointing]),
                                 return_exceptions=True)
            self._db.shutdown(wait=True)
            self.log.info("worker_stopped", worker=self.name, processed=self.processed,
                          abandoned=len(self._tasks) + len(self._ready))

    def _claim_size(self, stopping: bool) -> int:
        """How many to claim now: enough to keep one batch ready ahead of the free slots."""
        if stopping or asyncio.get_running_loop().time() < self._quiet_until:
            return 0
        # Backpressure: while outcomes cannot be written, take no new work.
        if len(self._pending) > self.concurrency * 4:
            return 0
        room = self.concurrency + self.batch - len(self._tasks) - len(self._ready)
        want = min(room, self.batch)
        return want if want >= max(1, self.batch // 2) else 0

    async def _db_loop(self, stop: asyncio.Event) -> None:
        """The one place this worker talks to the queue: each cycle records the outcomes that
        came in since the last one and claims the next jobs, in one transaction."""
        loop = asyncio.get_running_loop()
        delay = 0.1
        while True:
            stopping = stop.is_set()
            if stopping:
                # The deadline starts when this loop first sees the stop (not in a callback
                # that might run later and leave a deadline of zero).
                if not self._drain_deadline:
                    self._drain_deadline = loop.time() + self._drain_for
                self._start_ready()
                held = self._tasks or self._ready
                if not held and not self._pending:
                    return
                if loop.time() > self._drain_deadline:
                    # Out of time: still write what has finished (it was delivered), and leave
                    # only the unfinished to their leases.
                    if self._pending:
                        outcomes, self._pending = self._pending, []
                        try:
                            await self._db_call(self.store.record, self.name, outcomes)
                        except StoreError as exc:
                            self.log.error("store_failed", error=str(exc),
                                           pending=len(outcomes))
                    return
            want = self._claim_size(stopping)
            if want == 0 and len(self._pending) < self.batch:
                # Nothing worth a transaction yet: wait for a full batch of outcomes, a
                # draining buffer, a stop, or a short while (so outcomes are not held long).
                self._wake.clear()
                timeout = FLUSH_INTERVAL if self._pending or self._tasks else self.poll
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=timeout)
                want = self._claim_size(stop.is_set())
                if want == 0 and not self._pending:
                    continue
            outcomes, self._pending = self._pending, []
            try:
                # On the loop's own thread when the store can do it without waiting (see
                # SQLStore.exchange_nowait), else on the DB thread.
                got = self.store.exchange_nowait(self.name, outcomes, want, self.lease)
                if got is None:
                    self.threaded_exchanges += 1
                    got = await self._db_call(self.store.exchange, self.name, outcomes, want,
                                              self.lease)
                else:
                    self.inline_exchanges += 1
                    self._checkpoint_soon(loop.time())
                jobs = got
            except StoreError as exc:
                # Keep the outcomes and try again: a locked or full database must not turn
                # delivered messages into lost ones. If we die first, leases expire and the
                # messages are re-sent (at-least-once, same webhook-id).
                self.store_errors += 1
                self.log.error("store_failed", error=str(exc), pending=len(outcomes))
                self._pending = outcomes + self._pending
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            if want and len(jobs) < want:
                # The queue ran dry: look again after the poll interval, not at once.
                self._quiet_until = loop.time() + self.poll
            self._ready.extend(jobs)
            self._start_ready()

    def _checkpoint_soon(self, now: float) -> None:
        """Inline cycles leave the WAL's checkpoint undone (it copies pages and flushes to
        disk, which the event loop must not wait for): do it on the DB thread, at most once a
        second and one at a time."""
        if self._checkpointing is not None or now < self._next_checkpoint:
            return
        self._next_checkpoint = now + CHECKPOINT_INTERVAL

        async def run() -> None:
            try:
                await self._db_call(self.store.checkpoint)
            except StoreError as exc:
                self.log.warning("checkpoint_failed", error=str(exc))
            finally:
                self._checkpointing = None

        self._checkpointing = asyncio.create_task(run())

    def _start_ready(self) -> None:
        while self._ready and len(self._tasks) < self.concurrency:
            task = asyncio.create_task(self._one(self._ready.popleft()))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A bug in the pipeline: the message keeps its lease and the reaper re-queues it
            # (as INTERNAL_CRASH, dead after 5), so nothing is lost, but say so loudly.
            self.log.error("pipeline_crashed", error=repr(task.exception()))
        self._start_ready()
        if len(self._ready) <= self.batch // 2 or len(self._pending) >= self.batch:
            self._wake.set()

    async def _one(self, job: Job) -> None:
        outcome = await self.pipeline.process(job)
        # Look up self._pending only now: the DB loop swaps in a new list while we await.
        self._pending.append(outcome)
        self.processed += 1

    async def _reaper(self, stop: asyncio.Event) -> None:
        interval = max(0.5, self.lease / 4)
        while not stop.is_set():
            try:
                n = await self._db_call(self.store.reap)
                if n:
                    self.pipeline.metrics.leases_reclaimed.inc(n)
                    self.log.warning("leases_reclaimed", count=n)
                n = await self._db_call(self.store.sweep_unconfirmed)
                if n:
                    self.log.info("unconfirmed_fell_back", count=n)
            except StoreError as exc:
                self.log.error("reap_failed", error=str(exc))
            await _sleep_or_stop(stop, interval)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
