"""Shared plumbing for the HTTP fakes: app state and applying a :class:`Fault` to a request.

Each HTTP service validates its request the way its provider would, then hands a renderer to
:func:`respond`. The generic faults (latency, timeout, reset, a proxy's HTML page) are the same
everywhere; only successes and status errors need the provider's own JSON shape.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

from pushguard.sandbox.profile import Fault
from pushguard.sandbox.profiles import Profiles
from pushguard.sandbox.recorder import Recorder, decode_body, pick_headers

HTML_502 = b"<html><body><h1>502 Bad Gateway</h1></body></html>"

Renderer = Callable[[Fault], web.Response]


@dataclass
class HttpState:
    """Everything the HTTP handlers share; one per application, never global."""

    profiles: Profiles
    recorder: Recorder
    #: Standard Webhooks secret (``whsec_...``); ``None`` accepts unsigned webhooks
    secret: str | None = None
    #: ``False`` skips webhook signature checks (benchmark mode)
    verify: bool = True
    #: Twilio auth token; ``None`` accepts any non-empty password
    twilio_auth_token: str | None = None
    #: keep decoded JSON bodies on records (off for lean benchmark records)
    keep_bodies: bool = True
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _client: ClientSession | None = None

    def client(self) -> ClientSession:
        """A shared outbound HTTP session (for status callbacks), made on first use."""
        if self._client is None:
            self._client = ClientSession(timeout=ClientTimeout(total=10))
        return self._client

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run background work that must not outlive the application."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        """Wake hanging requests, cancel background work and close the outbound session."""
        self.closing.set()
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._client is not None:
            await self._client.close()
            self._client = None


STATE = web.AppKey("pushguard_sandbox_state", HttpState)


def retry_after_value(seconds: float) -> str:
    """Whole seconds as HTTP requires; fractions pass through so fast tests can use them."""
    return str(int(seconds)) if float(seconds).is_integer() else repr(seconds)


def json_response(status: int, body: bytes) -> web.Response:
    """A JSON response from pre-encoded bytes (cheaper than ``web.json_response``)."""
    return web.Response(status=status, body=body, content_type="application/json")


async def hang(state: HttpState, seconds: float) -> None:
    """Sleep like a stuck upstream, but wake early when the sandbox shuts down."""
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.closing.wait(), seconds)


def reset(request: web.Request) -> web.Response:
    """Drop the connection without answering; the returned response is never written."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)


async def respond(
    request: web.Request,
    service: str,
    address: str,
    raw: bytes,
    render: Renderer,
    *,
    meta: dict[str, Any] | None = None,
) -> web.Response:
    """Decide this request's fault, record it, and build the answer."""
    state = request.app[STATE]
    fault = state.profiles.get(service).decide(address)
    if fault.delay > 0:
        await asyncio.sleep(fault.delay)
    if fault.kind == "timeout":
        note(request, service, address, raw, "timeout", meta)
        await hang(state, fault.hang)
        return web.Response(status=504, text="upstream timed out")
    if fault.kind == "reset":
        note(request, service, address, raw, "reset", meta)
        return reset(request)
    if fault.reason == "html":
        resp = web.Response(status=502, body=HTML_502, content_type="text/html")
    else:
        resp = render(fault)
    if fault.retry_after is not None and resp.status in (429, 503):
        resp.headers["Retry-After"] = retry_after_value(fault.retry_after)
    note(request, service, address, raw, str(resp.status), meta)
    return resp


def note(
    request: web.Request,
    service: str,
    address: str,
    raw: bytes,
    outcome: str,
    meta: dict[str, Any] | None = None,
) -> None:
    """Record a request with the headers and body worth keeping."""
    state = request.app[STATE]
    state.recorder.record(
        service,
        address,
        outcome,
        size=len(raw),
        headers=pick_headers(request.headers),
        body=decode_body(raw) if state.keep_bodies else None,
        meta=meta or {},
    )
