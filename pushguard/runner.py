"""Long-running processes: the API, the worker, or both in one process (``serve``).

SIGTERM and SIGINT stop taking work, let in-flight deliveries finish, record their outcomes and
exit 0. A second signal does not skip the drain: SIGKILL is the way to stop at once, and the
queue is built to survive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Generator
from typing import TYPE_CHECKING

import structlog

from pushguard.app import App, run_worker
from pushguard.exceptions import PushguardError

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


def _listen(host: str, port: int) -> list[socket.socket]:
    """The API's listening sockets, bound here rather than by uvicorn, which answers a port
    already taken by exiting the process from inside a task (exit 3 and a traceback). Bound
    as asyncio's ``create_server`` binds them: one socket per address the host resolves to
    (``localhost`` is 127.0.0.1 and ::1), IPv6 sockets IPv6 only, ``""`` every interface."""
    where = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise PushguardError(f"could not listen on {where}: {exc}") from exc
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, addr in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(2048)
    except OSError as exc:
        for sock in socks:
            sock.close()
        raise PushguardError(f"could not listen on {where}: {exc.strerror or exc}") from exc
    return socks


async def serve(app: App, host: str, port: int, *, with_worker: bool = True) -> None:
    stop = asyncio.Event()
    # a provider configuration that cannot work stops the process before it listens
    providers = app.build_providers() if with_worker else None
    server = _server(app, host, port)
    socks = _listen(host, port)
    _on_signals(stop, server)
    bound = socks[0].getsockname()[1]
    log.info("api_listening", url=f"http://{host}:{bound}", worker=with_worker)
    tasks: list[asyncio.Task[object]] = [asyncio.create_task(server.serve(sockets=socks))]
    if with_worker:
        tasks.append(asyncio.create_task(run_worker(app, stop, providers)))

    async def watch() -> None:
        # uvicorn may stop on its own (e.g. the port is taken); then stop the worker too.
        await tasks[0]
        stop.set()

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.gather(*tasks)
    finally:
        watcher.cancel()
        for sock in socks:
            sock.close()
    if not server.started:
        raise PushguardError(f"the API on {host}:{port} stopped before it started")


async def work(app: App, **overrides: float) -> None:
    stop = asyncio.Event()
    _on_signals(stop, None)
    await run_worker(app, stop, **overrides)
