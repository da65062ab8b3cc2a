"""Periodic duties a worker process runs beside delivery: fanning campaigns out, evaluating
alerts. Each runs in a thread (they do database work), one at a time per duty, and a duty that
raises is logged and tried again on its next tick: it never stops delivery.

A duty is registered in :data:`DUTIES` as ``(name, interval seconds, factory)``; the factory
gets the :class:`~pushguard.app.App` and returns the callable run on each tick (or None when
the duty has nothing to do in this configuration).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from pushguard.app import App

log = structlog.get_logger("pushguard.duties")

Tick = Callable[[], object]
Factory = Callable[["App"], Tick | None]


def _campaigns(app: App) -> Tick | None:
    """The campaign runner, built (its modules imported) once a campaign is active: until
    then a tick is one query, and a worker that only delivers starts sooner."""
    from sqlalchemy import select

    from pushguard.store.schema import campaigns
    from pushguard.store.sql import SQLStore

    store = app.store
    if not isinstance(store, SQLStore):
        return None
    active = select(campaigns.c.id).where(
        campaigns.c.state.in_(("scheduled", "sending", "paused"))).limit(1)
    runner: list[Tick | None] = []

    def tick() -> None:
        if not runner:
            with store._read() as conn:
                if conn.execute(active).first() is None:
                    return
            from pushguard.campaigns.runner import runner_tick

            runner.append(runner_tick(app))
        if runner[0] is not None:
            runner[0]()

    return tick


def _alerts(app: App) -> Tick | None:
    from pushguard.diagnosis.alerts import alerts_tick

    return alerts_tick(app)


def _holds(app: App) -> Tick | None:
    from pushguard.diagnosis.holds import holds_tick

    return holds_tick(app)


DUTIES: list[tuple[str, float, Factory]] = [
    ("campaigns", 1.0, _campaigns),
    ("alerts", 1.0, _alerts),
    ("holds", 2.0, _holds),
]


async def run_duties(app: App, stop: asyncio.Event) -> None:
    """Run every duty on its interval until ``stop`` is set."""
    ticks = [(name, every, fn) for name, every, make in DUTIES
             if (fn := make(app)) is not None]
    if not ticks:
        return
    await asyncio.gather(*(_loop(name, every, fn, stop) for name, every, fn in ticks))


async def _loop(name: str, every: float, fn: Tick, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await asyncio.to_thread(fn)
        except Exception as exc:  # a duty's bug must not stop delivery
            log.error("duty_failed", duty=name, error=f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
