"""A fake APNs provider API: HTTP/2 (``h2`` on asyncio), cleartext or TLS.

``POST /3/device/{token}`` with APNs headers; the request checks run in Apple's order
(path, credentials, topic, headers, payload) before the fault profile decides. Answers carry
``apns-id`` and, on failure, ``{"reason": ...}`` (plus ``timestamp`` for 410). A ``reset``
fault drops the whole TCP connection, like a provider connection dying under load, while a
``timeout`` hangs the stream and finally cancels it with ``RST_STREAM``; an ``html`` fault
answers 502 with a proxy's HTML page. No device has a token made only of zeros: where a send
to another token would succeed, it answers 400 ``BadDeviceToken``, as Apple does to a token it
never issued (the provider's live check relies on it).

Provider tokens follow Apple's rules where they can be judged without Apple's keys: a JWT whose
``iat`` is more than an hour old gets 403 ``ExpiredProviderToken``, and so does every token
seen before :meth:`ApnsServer.expire_provider_tokens` (a switch for tests of token renewal).
Records carry a short fingerprint of the provider token in ``meta["provider-token"]``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import ssl
import time
import uuid
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from pushguard.sandbox.faulting import retry_after_value
from pushguard.sandbox.profile import Fault
from pushguard.sandbox.profiles import Profiles
from pushguard.sandbox.recorder import Recorder, decode_body, pick_headers

MAX_STREAMS = 1000
MAX_PAYLOAD = 4096
MAX_VOIP_PAYLOAD = 5120
PUSH_TYPES = frozenset(
    {"alert", "background", "voip", "complication", "fileprovider", "mdm", "location",
     "liveactivity", "pushtotalk", "widgets", "controls"}
)  # fmt: skip
_KEEP_BYTES = 16 * 1024  # enough to judge any legal payload; the size count stays exact
_HTML_502 = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
_TOKEN_MAX_AGE = 3600
_META_HEADERS = ("apns-topic", "apns-push-type", "apns-priority", "apns-expiration",
                 "apns-collapse-id")

# status -> (HTTP status, APNs reason); APNs has no 401, its credential errors are 403s
_REASONS: dict[int, tuple[int, str]] = {
    400: (400, "BadCollapseId"), 401: (403, "ExpiredProviderToken"),
    403: (403, "InvalidProviderToken"), 404: (404, "BadPath"), 410: (410, "Unregistered"),
    413: (413, "PayloadTooLarge"), 429: (429, "TooManyRequests"),
    500: (500, "InternalServerError"), 502: (502, "InternalServerError"),
    503: (503, "ServiceUnavailable"),
}  # fmt: skip


@dataclass
class _Stream:
    headers: dict[str, str]
    data: bytearray = field(default_factory=bytearray)
    size: int = 0


class ApnsServer:
    """Listens for APNs connections and serves them with the ``"apns"`` fault profile."""

    def __init__(
        self,
        profiles: Profiles,
        recorder: Recorder,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        self.profiles = profiles
        self.recorder = recorder
        self.ssl_context = ssl_context
        if ssl_context is not None:
            ssl_context.set_alpn_protocols(["h2"])
        self.max_streams = max_streams
        self.closing = asyncio.Event()
        self.connections: set[_ApnsConnection] = set()
        #: connections accepted so far, and the most streams one of them had open at once
        self.accepted = 0
        self.peak_streams = 0
        #: the bound port, once started
        self.port = 0
        self._seen_tokens: dict[str, float | None] = {}  # token -> its iat
        self._expired_tokens: set[str] = set()
        self._server: asyncio.Server | None = None

    def expire_provider_tokens(self) -> None:
        """Answer ``ExpiredProviderToken`` to every provider token seen so far."""
        self._expired_tokens |= self._seen_tokens.keys()

    def disconnect_all(self, last_stream_id: int | None = None) -> None:
        """Send GOAWAY on every open connection and close it; the server keeps listening.

        ``last_stream_id`` (default: the last stream received) tells clients which streams
        were processed; a lower one, e.g. 0, says the streams above it may be sent again.
        """
        for conn in list(self.connections):
            conn.close(last_stream_id)

    def token_problem(self, authorization: str) -> str | None:
        """``ExpiredProviderToken`` for an old or expired-by-switch token, else None."""
        token = authorization[7:]
        if token in self._expired_tokens:
            return "ExpiredProviderToken"
        if token not in self._seen_tokens:
            if len(self._seen_tokens) > 10_000:
                self._seen_tokens.clear()  # a client minting tokens per request: stay flat
            self._seen_tokens[token] = _issued_at(token)
        iat = self._seen_tokens[token]
        if iat is not None and time.time() - iat > _TOKEN_MAX_AGE:
            return "ExpiredProviderToken"
        return None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Start listening; returns the bound port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ApnsConnection(self), host, port, ssl=self.ssl_context
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Say GOAWAY to every client, then close everything."""
        self.closing.set()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None


def _issued_at(token: str) -> float | None:
    """The ``iat`` claim of a JWT, unverified; None when there is none."""
    part = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, TypeError):
        return None
    iat = claims.get("iat") if isinstance(claims, dict) else None
    return float(iat) if isinstance(iat, int | float) else None


class _ApnsConnection(asyncio.Protocol):
    def __init__(self, server: ApnsServer) -> None:
        self.server = server
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        self.pending: dict[int, bytes] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(self)
        self.server.accepted += 1
        # Set before initiate_connection() so the first SETTINGS frame carries it.
        limit = self.server.max_streams
        self.conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limit},
        )
        self.conn.initiate_connection()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        for task in list(self.tasks.values()):
            task.cancel()
        self.transport = None

    def close(self, last_stream_id: int | None = None) -> None:
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.conn.close_connection(last_stream_id=last_stream_id)
            self._flush()
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                headers = {str(k): str(v) for k, v in event.headers or []}
                self.streams[event.stream_id or 0] = _Stream(headers)
                open_now = self.conn.open_inbound_streams
                self.server.peak_streams = max(self.server.peak_streams, open_now)
            elif isinstance(event, h2.events.DataReceived):
                self._on_data(event)
            elif isinstance(event, h2.events.StreamEnded):
                self._on_request(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self._forget(event.stream_id)
            elif isinstance(event, h2.events.WindowUpdated):
                for stream_id in [event.stream_id] if event.stream_id else list(self.pending):
                    self._send_pending(stream_id)
            elif isinstance(event, h2.events.ConnectionTerminated) and self.transport:
                self.transport.close()
        self._flush()

    def _on_data(self, event: h2.events.DataReceived) -> None:
        stream_id, data = event.stream_id or 0, event.data or b""
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.size += len(data)
            if len(stream.data) < _KEEP_BYTES:
                stream.data += data
        # Return the window straight away: bodies are tiny and we never want to stall clients.
        self.conn.acknowledge_received_data(event.flow_controlled_length or 0, stream_id)

    def _on_request(self, stream_id: int | None) -> None:
        stream = self.streams.get(stream_id or 0)
        if stream_id is None or stream is None:
            return
        task = asyncio.get_running_loop().create_task(self._handle(stream_id, stream))
        self.tasks[stream_id] = task
        task.add_done_callback(lambda _: self.tasks.pop(stream_id, None))

    def _forget(self, stream_id: int | None) -> None:
        self.streams.pop(stream_id or 0, None)
        self.pending.pop(stream_id or 0, None)
        task = self.tasks.pop(stream_id or 0, None)
        if task is not None:
            task.cancel()

    async def _handle(self, stream_id: int, stream: _Stream) -> None:
        h = stream.headers
        apns_id = h.get("apns-id") or str(uuid.uuid4())
        path = h.get(":path", "")
        token = path[len("/3/device/") :] if path.startswith("/3/device/") else ""
        status, reason = self._check(h, path, token, stream.size)
        if status == 200:
            expired = self.server.token_problem(h.get("authorization", ""))
            if expired is not None:
                status, reason = 403, expired
        fault: Fault | None = None
        if status == 200:
            fault = self.server.profiles.get("apns").decide(token)
            if fault.delay > 0:
                await asyncio.sleep(fault.delay)
            if fault.kind == "timeout":
                self._record(token, stream, "timeout")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.server.closing.wait(), fault.hang)
                self._reset_stream(stream_id)
                return
            if fault.kind == "reset":
                self._record(token, stream, "reset")
                if self.transport is not None:
                    self.transport.abort()
                return
            status, reason = self._status_for(fault)
            if status == 200 and not token.strip("0"):
                status, reason = 400, "BadDeviceToken"  # no device has an all-zero token
            if fault.reason == "html":
                self._record(token, stream, "502")
                html = [(":status", "502"), ("content-type", "text/html"),
                        ("content-length", str(len(_HTML_502)))]
                self._respond(stream_id, html, _HTML_502)
                return
        self._record(token, stream, str(status))
        headers = [(":status", str(status)), ("apns-id", apns_id)]
        body = b""
        if reason:
            doc: dict[str, object] = {"reason": reason}
            if status == 410:
                doc["timestamp"] = int(time.time() * 1000)
            body = json.dumps(doc).encode()
            headers.append(("content-type", "application/json"))
            headers.append(("content-length", str(len(body))))
        if fault is not None and fault.retry_after is not None and status in (429, 503):
            headers.append(("retry-after", retry_after_value(fault.retry_after)))
        self._respond(stream_id, headers, body)

    @staticmethod
    def _check(h: dict[str, str], path: str, token: str, size: int) -> tuple[int, str]:
        if h.get(":method") != "POST":
            return 405, "MethodNotAllowed"
        if not path.startswith("/3/device/"):
            return 404, "BadPath"
        if not token:
            return 400, "MissingDeviceToken"
        auth = h.get("authorization")
        if not auth:
            return 403, "MissingProviderToken"
        if not auth.lower().startswith("bearer ") or auth[7:].count(".") != 2:
            return 403, "InvalidProviderToken"
        if not h.get("apns-topic"):
            return 400, "MissingTopic"
        apns_id = h.get("apns-id")
        if apns_id is not None:
            try:
                uuid.UUID(apns_id)
            except ValueError:
                return 400, "BadMessageId"
        push_type = h.get("apns-push-type", "alert")
        if push_type not in PUSH_TYPES:
            return 400, "InvalidPushType"
        if h.get("apns-priority", "10") not in ("1", "5", "10"):
            return 400, "BadPriority"
        if size == 0:
            return 400, "PayloadEmpty"
        if size > (MAX_VOIP_PAYLOAD if push_type == "voip" else MAX_PAYLOAD):
            return 413, "PayloadTooLarge"
        return 200, ""

    @staticmethod
    def _status_for(fault: Fault) -> tuple[int, str]:
        if fault.kind == "ok":
            return 200, ""
        if fault.reason == "invalid":
            return 400, "BadDeviceToken"
        if fault.reason == "gone":
            return 410, "Unregistered"
        return _REASONS.get(fault.status, (fault.status, "InternalServerError"))

    def _record(self, token: str, stream: _Stream, outcome: str) -> None:
        h = stream.headers
        meta = {k: h[k] for k in _META_HEADERS if k in h}
        if h.get("authorization"):
            meta["provider-token"] = hashlib.sha256(h["authorization"].encode()).hexdigest()[:12]
        self.server.recorder.record(
            "apns",
            token,
            outcome,
            size=stream.size,
            headers=pick_headers(h),
            body=decode_body(bytes(stream.data)) if stream.size <= _KEEP_BYTES else None,
            meta=meta,
        )

    def _respond(self, stream_id: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.streams.pop(stream_id, None)
        try:
            self.conn.send_headers(stream_id, headers, end_stream=not body)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return  # the client gave up on this stream already
        if body:
            self.pending[stream_id] = body
            self._send_pending(stream_id)
        self._flush()

    def _send_pending(self, stream_id: int) -> None:
        if stream_id not in self.pending:
            return  # a window update for a stream whose answer has not started
        data = self.pending.pop(stream_id)
        try:
            while data:
                window = self.conn.local_flow_control_window(stream_id)
                if window <= 0:
                    self.pending[stream_id] = data  # resumed by WindowUpdated
                    return
                size = min(window, self.conn.max_outbound_frame_size, len(data))
                self.conn.send_data(stream_id, data[:size])
                data = data[size:]
            self.conn.end_stream(stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return

    def _reset_stream(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
