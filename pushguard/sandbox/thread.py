"""Running a :class:`~pushguard.sandbox.server.Sandbox` in a background thread.

Synchronous tests and the demo need providers that keep answering while their own code blocks
or runs its own event loop; the sandbox therefore gets a thread and a loop of its own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

from pushguard.sandbox.profile import FaultProfile
from pushguard.sandbox.recorder import Recorder
from pushguard.sandbox.server import Sandbox

T = TypeVar("T")


class SandboxThread:
    """A sandbox serving from a daemon thread.

    Takes a :class:`Sandbox` (not yet started) or the keyword arguments to build one; the
    sandbox then belongs to the thread's loop. :meth:`start` returns once every
    port is bound (or raises what went wrong); :meth:`stop` shuts down and joins. Usable as
    a context manager::

        with SandboxThread(profiles={"seed": 1}) as sb:
            httpx.post(f"{sb.http_url}/hooks/a", json={})
    """

    def __init__(self, sandbox: Sandbox | None = None, **sandbox_options: Any) -> None:
        if sandbox is not None and sandbox_options:
            raise TypeError("pass either a Sandbox or Sandbox options, not both")
        self.sandbox = sandbox or Sandbox(**sandbox_options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stopping: asyncio.Event | None = None

    def start(self, timeout: float = 10.0) -> SandboxThread:
        """Start the thread and wait until the sandbox is serving."""
        if self._thread is not None:
            raise RuntimeError("sandbox thread already started")
        self._thread = threading.Thread(target=self._run, name="pushguard-sandbox", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"sandbox did not start within {timeout} s")
        if self._error is not None:
            self._thread.join(timeout)
            self._thread = None
            raise RuntimeError("sandbox failed to start") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and join the thread; safe to call twice."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None or loop is None or stopping is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout)
        self._thread = None

    def __enter__(self) -> SandboxThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        try:
            await self.sandbox.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            await self.sandbox.stop()
            return
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await self.sandbox.stop()

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``fn`` on the sandbox's loop (where profiles live) and return its result."""
        if self._loop is None:
            raise RuntimeError("sandbox thread is not running")
        result: Future[T] = Future()

        def run() -> None:
            try:
                result.set_result(fn())
            except BaseException as exc:
                result.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return result.result(timeout)

    def set_profile(
        self, profile: FaultProfile | Mapping[str, Any], service: str | None = None
    ) -> None:
        """Replace a profile from another thread; its clock starts now."""
        self.call(lambda: self.sandbox.set_profile(profile, service))

    @property
    def recorder(self) -> Recorder:
        """The sandbox's recorder (safe to read from any thread)."""
        return self.sandbox.recorder

    @property
    def http_url(self) -> str:
        """See :attr:`Sandbox.http_url`."""
        return self.sandbox.http_url

    @property
    def apns_url(self) -> str:
        """See :attr:`Sandbox.apns_url`."""
        return self.sandbox.apns_url

    @property
    def apns_port(self) -> int:
        """See :attr:`Sandbox.apns_port`."""
        return self.sandbox.apns_port

    @property
    def smtp_host(self) -> str:
        """See :attr:`Sandbox.smtp_host`."""
        return self.sandbox.smtp_host

    @property
    def smtp_port(self) -> int:
        """See :attr:`Sandbox.smtp_port`."""
        return self.sandbox.smtp_port
