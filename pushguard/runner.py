"""Long-running processes: the API, the worker, or both in one process (``serve``).

SIGTERM and SIGINT stop taking work, let in-flight deliveries finish, record their outcomes and
exit 0. A second signal does not skip the drain: SIGKILL is the way to stop at once, and the
queue is built to survive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Generator
from typing import TYPE_CHECKING

import structlog

from pushguard.app import App, run_worker

if TYPE_CHECKING:
    import uvicorn

log = structlog.get_logger("pushguard.runner")


def _on_signals(stop: asyncio.Event, server: uvicorn.Server | None) -> None:
    loop = asyncio.get_running_loop()

    def handle(signame: str) -> None:
        log.info("stopping", signal=signame)
        stop.set()
        if server is not None:
            server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handle, sig.name)


def _server(app: App, host: str, port: int) -> uvicorn.Server:
    # Imported here so `pushguard worker` does not pay for the web stack at start-up.
    import uvicorn

    from pushguard.api.server import create_api

    class _Server(uvicorn.Server):
        """uvicorn without its own signal handling: this process decides how to stop."""

        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield

    config = uvicorn.Config(
        create_api(app), host=host, port=port, log_config=None, access_log=False,
        lifespan="off", timeout_graceful_shutdown=10,
    )
    return _Server(config)


async def serve(app: App, host: str, port: int, *, with_worker: bool = True) -> None:
    stop = asyncio.Event()
    server = _server(app, host, port)
    _on_signals(stop, server)
    log.info("api_listening", url=f"http://{host}:{port}", worker=with_worker)
    tasks: list[asyncio.Task[object]] = [asyncio.create_task(server.serve())]
    if with_worker:
        tasks.append(asyncio.create_task(run_worker(app, stop)))

    async def watch() -> None:
        # uvicorn may stop on its own (e.g. the port is taken); then stop the worker too.
        await tasks[0]
        stop.set()

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.gather(*tasks)
    finally:
        watcher.cancel()
    if not server.started:
        raise SystemExit(f"could not listen on {host}:{port}")


async def work(app: App, **overrides: float) -> None:
    stop = asyncio.Event()
    _on_signals(stop, None)
    await run_worker(app, stop, **overrides)
