"""A small HTTP/2 client on asyncio + h2, made for APNs.

APNs wants few long-lived connections carrying many concurrent streams, so :class:`H2Pool`
keeps at most ``size`` connections and opens another only when every open one is at the
server's ``MAX_CONCURRENT_STREAMS``; beyond that, requests queue for a free stream. Flow control
is honoured both ways, and a GOAWAY or a dropped connection is replaced on the next request.
Transport failures become :class:`~pushguard.exceptions.DeliveryError` here, once:

- nothing was written (connect error, queued past the deadline): ``maybe_sent=False``;
- the request was written and then the stream or connection died, or the deadline passed:
  ``maybe_sent=True``;
- streams the server refused unprocessed (``REFUSED_STREAM``, or above a GOAWAY's
  ``last_stream_id``) are re-sent on another connection, at most twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
from h2.connection import ConnectionState

from pushguard import taxonomy
from pushguard.exceptions import DeliveryError, InputError
from pushguard.ssrf import OutboundGuard, parse_ip_literal

#: never more streams per connection than this, whatever the server allows
MAX_STREAMS = 1000
#: response bodies are kept up to this size (APNs error bodies are tiny)
MAX_BODY = 64 * 1024
_RESENDS = 2


@dataclass(frozen=True, slots=True)
class H2Response:
    """A complete HTTP/2 response."""

    status: int
    headers: dict[str, str]
    body: bytes


class StreamError(Exception):
    """A stream ended without a response; ``unprocessed`` means it is safe to send again."""

    def __init__(self, code: str, detail: str, *, unprocessed: bool = False) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.unprocessed = unprocessed


@dataclass
class _Attempt:
    #: set once the request's HEADERS frame was handed to a connection
    sent: bool = False


@dataclass
class _Stream:
    future: asyncio.Future[H2Response]
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)


class H2Connection(asyncio.Protocol):
    """One client HTTP/2 connection; the pool reserves its stream slots (``active``)."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        # No outbound normalisation: our header names are lower-case already, and h2 would
        # mark `authorization` never-indexed, re-sending and re-encoding the provider token on
        # every request. HPACK only matches whole values, so indexing the JWT (reused for 40
        # minutes) reveals nothing, and APNs then gets a one-byte index instead of ~200 bytes.
        config = h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8", normalize_outbound_headers=False
        )
        self.h2 = h2.connection.H2Connection(config=config)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        self.active = 0
        self.closed = False
        self.draining = False
        self.goaway = ""
        loop = asyncio.get_running_loop()
        self.settled: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self._window = asyncio.Event()
        self._on_change = on_change

    @property
    def capacity(self) -> int:
        return min(self.h2.remote_settings.max_concurrent_streams, MAX_STREAMS)

    @property
    def usable(self) -> bool:
        return not (self.closed or self.draining)

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.h2.initiate_connection()
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._flush()  # h2 queued a GOAWAY explaining the error
            self.goaway = f"HTTP/2 protocol error from the server: {exc}"
            self.abort()
            return
        for event in events:
            self._on_event(event)
        self._flush()
        if self.draining and not self.streams and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        reason = self.goaway or (f"connection lost: {exc}" if exc else "closed by the server")
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            if not stream.future.done():
                stream.future.set_exception(StreamError(
                    "CONNECTION_RESET", f"connection dropped with the request in flight ({reason})"
                ))
        if not self.settled.done():
            self.settled.set_exception(ConnectionError(reason))
            self.settled.exception()  # the connecting side reads it, or nobody needs to
        if not self.lost.done():
            self.lost.set_result(None)
        self._wake_window()
        self._on_change()

    # -- frames in ---------------------------------------------------------------------

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                stream.headers = {str(k): str(v) for k, v in event.headers or []}
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None and len(stream.body) < MAX_BODY:
                stream.body += (event.data or b"")[: MAX_BODY - len(stream.body)]
            # Hand the window back at once: bodies are small and a stalled peer helps no one.
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.acknowledge_received_data(
                    event.flow_controlled_length or 0, event.stream_id or 0
                )
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.pop(event.stream_id or 0, None)
            if stream is not None and not stream.future.done():
                status = int(stream.headers.get(":status", "0") or 0)
                stream.future.set_result(H2Response(status, stream.headers, bytes(stream.body)))
        elif isinstance(event, h2.events.StreamReset):
            self._on_reset(event)
        elif isinstance(event, h2.events.WindowUpdated):
            self._wake_window()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            if not self.settled.done():
                self.settled.set_result(None)
            self._wake_window()
            self._on_change()  # the stream limit may have grown
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._on_goaway(event)

    def _on_reset(self, event: h2.events.StreamReset) -> None:
        stream = self.streams.pop(event.stream_id or 0, None)
        if stream is not None and not stream.future.done():
            code = event.error_code
            name = code.name if isinstance(code, h2.errors.ErrorCodes) else str(code)
            stream.future.set_exception(StreamError(
                "STREAM_RESET",
                f"the server reset the stream ({name})",
                unprocessed=code == h2.errors.ErrorCodes.REFUSED_STREAM,
            ))
        self._wake_window()

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        self.draining = True
        code = event.error_code
        name = code.name if isinstance(code, h2.errors.ErrorCodes) else str(code)
        self.goaway = f"GOAWAY {name}" + _goaway_reason(event.additional_data)
        last = event.last_stream_id or 0
        for stream_id in [s for s in self.streams if s > last]:
            stream = self.streams.pop(stream_id)
            if not stream.future.done():
                stream.future.set_exception(
                    StreamError("GOAWAY", f"{self.goaway}; not processed", unprocessed=True)
                )
        self._wake_window()
        self._on_change()

    # -- frames out --------------------------------------------------------------------

    async def request(
        self, headers: list[tuple[str, str]], body: bytes, attempt: _Attempt
    ) -> H2Response:
        """Send one request on a slot the caller reserved; raises :class:`StreamError`."""
        if not self.usable:
            raise StreamError("GOAWAY", self.goaway or "connection closing", unprocessed=True)
        stream = _Stream(asyncio.get_running_loop().create_future())
        # Out of stream ids, over a freshly lowered limit or already closing: nothing reached
        # the server, so another connection may take the request.
        try:
            stream_id = self.h2.get_next_available_stream_id()
        except h2.exceptions.NoAvailableStreamIDError as exc:
            self.draining = True
            raise StreamError("NO_STREAM", "stream ids used up", unprocessed=True) from exc
        try:
            self.h2.send_headers(stream_id, headers, end_stream=not body)
        except h2.exceptions.TooManyStreamsError as exc:
            raise StreamError("NO_STREAM", "over the stream limit", unprocessed=True) from exc
        except h2.exceptions.ProtocolError as exc:
            if self.h2.state_machine.state is ConnectionState.CLOSED:
                self.draining = True
                raise StreamError("GOAWAY", "connection closing", unprocessed=True) from exc
            raise StreamError("BAD_REQUEST", f"invalid request headers: {exc}") from exc
        attempt.sent = True
        self.streams[stream_id] = stream
        try:
            if body:
                await self._send_body(stream_id, stream, body)
            self._flush()
            return await stream.future
        finally:
            self.streams.pop(stream_id, None)
            self._reset_if_open(stream_id)
            if self.draining and not self.streams and self.transport is not None:
                self.transport.close()

    async def _send_body(self, stream_id: int, stream: _Stream, body: bytes) -> None:
        while body:
            if stream.future.done() or self.closed:
                return  # answered early, reset or dropped: the future says which
            try:
                window = self.h2.local_flow_control_window(stream_id)
            except h2.exceptions.ProtocolError:
                return
            size = min(window, self.h2.max_outbound_frame_size, len(body))
            if size <= 0:
                self._flush()
                await self._window.wait()
                continue
            self.h2.send_data(stream_id, body[:size])
            body = body[size:]
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.end_stream(stream_id)

    def _reset_if_open(self, stream_id: int) -> None:
        """Cancel a stream we stopped waiting for (timeout), so its slot is really free."""
        state = self.h2.streams.get(stream_id)
        if state is None or state.closed or self.closed:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        self._flush()

    def _wake_window(self) -> None:
        # Wake every body writer at once; each re-reads its own window.
        self._window.set()
        self._window = asyncio.Event()

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        """GOAWAY, then close."""
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection()
            self._flush()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection without ceremony."""
        if self.transport is not None:
            self.transport.abort()


def _goaway_reason(data: bytes | None) -> str:
    """APNs may put ``{"reason": ...}`` into a GOAWAY's debug data."""
    if not data:
        return ""
    try:
        doc = json.loads(data)
    except ValueError:
        return f": {data[:200].decode('utf-8', 'replace')}"
    return f": {doc.get('reason')}" if isinstance(doc, dict) and doc.get("reason") else ""


class H2Pool:
    """A few HTTP/2 connections to one origin (``https://host[:port]``, or ``http://`` for
    cleartext with prior knowledge), shared by all of a provider's sends."""

    def __init__(
        self,
        base_url: str,
        *,
        guard: OutboundGuard,
        size: int = 2,
        timeout: float = 15.0,
        connect_timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) origin: {base_url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.authority = parts.netloc
        self.guard = guard
        self.size = size
        self.timeout = timeout
        self.connect_timeout = min(connect_timeout, timeout)
        self._ssl: ssl.SSLContext | None = None
        if self.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
            self._ssl.set_alpn_protocols(["h2"])
        self._conns: list[H2Connection] = []
        self._opening = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        #: connections opened so far
        self.opened = 0

    @property
    def connections(self) -> list[H2Connection]:
        """The connections not yet closed."""
        return [c for c in self._conns if not c.closed]

    async def close(self) -> None:
        """Say GOAWAY on every connection and wait (briefly) until they are closed."""
        self._closed = True
        self._wake_all()
        conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(conn.lost), 2.0)

    async def request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> H2Response:
        """Send one request and return the whole response, or raise ``DeliveryError``."""
        request = [
            (":method", method),
            (":scheme", self.scheme),
            (":authority", self.authority),
            (":path", path),
            *headers.items(),
        ]
        attempt = _Attempt()
        try:
            async with asyncio.timeout(self.timeout):
                return await self._request(request, body, attempt)
        except TimeoutError as exc:
            where = "for an answer" if attempt.sent else "for a connection or a free stream"
            raise DeliveryError(
                taxonomy.NETWORK_TIMEOUT,
                f"waited {self.timeout:g} s {where} from {self.host}",
                provider_code="TIMEOUT",
                maybe_sent=attempt.sent,
            ) from exc

    async def _request(
        self, request: list[tuple[str, str]], body: bytes, attempt: _Attempt
    ) -> H2Response:
        resends = 0
        while True:
            conn = await self._acquire()
            try:
                return await conn.request(request, body, attempt)
            except StreamError as exc:
                if exc.unprocessed and resends < _RESENDS:
                    resends += 1
                    attempt.sent = False
                    continue
                bad = exc.code == "BAD_REQUEST"
                raise DeliveryError(
                    taxonomy.CONTENT_REJECTED if bad else taxonomy.NETWORK_TIMEOUT,
                    f"{exc.detail} ({self.host})",
                    provider_code=exc.code,
                    maybe_sent=attempt.sent and not exc.unprocessed,
                ) from exc
            finally:
                conn.active -= 1
                self._wake_one()

    async def _acquire(self) -> H2Connection:
        """A connection with a stream slot reserved for the caller."""
        while True:
            if self._closed:
                raise DeliveryError(
                    taxonomy.NETWORK_TIMEOUT, "the HTTP/2 client is closed", provider_code="CLOSED"
                )
            self._conns = [c for c in self._conns if not c.closed]
            best: H2Connection | None = None
            for conn in self._conns:
                free = conn.usable and conn.active < conn.capacity
                if free and (best is None or conn.active < best.active):
                    best = conn
            if best is not None:
                best.active += 1
                return best
            # Draining connections (after GOAWAY) finish their streams but do not count; one
            # connection is opened at a time, the next only once every open one is full.
            live = sum(1 for c in self._conns if c.usable)
            if live < self.size and not self._opening:
                await self._open()
                continue
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)  # woken waiters are popped; cancelled ones skipped
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # pass on the wake-up this caller can no longer use
                raise

    def _wake_one(self) -> None:
        """One stream slot was freed: let the longest-queued request look again."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _wake_all(self) -> None:
        """A connection or a setting changed: let every queued request look again."""
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _open(self) -> None:
        self._opening += 1
        try:
            conn = await self._connect()
            self._conns.append(conn)
            self.opened += 1
        finally:
            self._opening -= 1
            self._wake_all()

    async def _connect(self) -> H2Connection:
        loop = asyncio.get_running_loop()
        last: OSError | TimeoutError | None = None
        for target in await self._targets():
            conn: H2Connection | None = None
            try:
                async with asyncio.timeout(self.connect_timeout):
                    _, conn = await loop.create_connection(
                        lambda: H2Connection(self._wake_all),
                        target,
                        self.port,
                        ssl=self._ssl,
                        server_hostname=self.host if self._ssl is not None else None,
                    )
                    if self._ssl is not None:
                        transport = conn.transport
                        tls = transport.get_extra_info("ssl_object") if transport else None
                        if tls is None or tls.selected_alpn_protocol() != "h2":
                            raise ConnectionError("the server did not agree to HTTP/2 (ALPN)")
                    await conn.settled  # the server's SETTINGS carry its stream limit
                return conn
            except (OSError, TimeoutError) as exc:
                last = exc
            except BaseException:
                if conn is not None:
                    conn.abort()
                raise
            if conn is not None:
                conn.abort()
        reason = f"{type(last).__name__}: {last}" if last is not None else "no address"
        raise DeliveryError(
            taxonomy.NETWORK_TIMEOUT,
            f"cannot connect to {self.host}:{self.port} ({reason})",
            provider_code="CONNECT_ERROR",
        ) from last

    async def _targets(self) -> list[str]:
        """Addresses to connect to, each passed by the SSRF guard. Names are resolved here and
        the checked address is what we connect to, so DNS cannot change in between."""
        try:
            self.guard.check_connect_target(self.host, field="base_url")
        except InputError as exc:
            raise DeliveryError(
                taxonomy.VALIDATION_ERROR, exc.problem, provider_code="SSRF_BLOCKED"
            ) from exc
        if parse_ip_literal(self.host) is not None or self.guard.is_allowed(self.host):
            return [self.host]
        addresses = await self.guard.resolve_async(self.host)
        if not addresses:
            raise DeliveryError(
                taxonomy.NETWORK_TIMEOUT, f"cannot resolve {self.host}", provider_code="DNS_ERROR"
            )
        allowed = [str(ip) for ip in addresses if self.guard.refusal_reason(ip) is None]
        if not allowed:
            raise DeliveryError(
                taxonomy.VALIDATION_ERROR,
                f"{self.host} resolves only to internal addresses",
                provider_code="SSRF_BLOCKED",
            )
        return allowed
