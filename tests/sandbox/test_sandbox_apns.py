"""The APNs fake over real HTTP/2, driven by a tiny h2 client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import ssl
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest

from pushguard.sandbox import Sandbox

JWT = "bearer eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJURUFNIn0.c2ln"

Response = tuple[int, dict[str, str], bytes]


class H2Client:
    """Just enough HTTP/2 to send concurrent POSTs on one connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.reader, self.writer = reader, writer
        self.waiting: dict[int, asyncio.Future[Response]] = {}
        self.partial: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.window_open = asyncio.Event()
        self.settled = asyncio.Event()
        self.conn.initiate_connection()
        self._flush()
        self.task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, port: int, tls: ssl.SSLContext | None = None) -> H2Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        client = cls(reader, writer)
        await asyncio.wait_for(client.settled.wait(), 5)  # the server's stream limit
        return client

    async def post(self, path: str, headers: dict[str, str], body: bytes) -> Response:
        stream_id = self.conn.get_next_available_stream_id()
        request = [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", "localhost"),
            (":path", path),
            *headers.items(),
        ]
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.waiting[stream_id] = future
        self.conn.send_headers(stream_id, request)
        while body:
            window = self.conn.local_flow_control_window(stream_id)
            if window == 0:
                self.window_open.clear()
                await self.window_open.wait()
                continue
            size = min(window, self.conn.max_outbound_frame_size, len(body))
            self.conn.send_data(stream_id, body[:size])
            body = body[size:]
        self.conn.end_stream(stream_id)
        self._flush()
        return await future

    async def _read(self) -> None:
        try:
            while data := await self.reader.read(65536):
                for event in self.conn.receive_data(data):
                    self._on_event(event)
                self._flush()
        except OSError:
            pass
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(ConnectionResetError("connection closed"))

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            headers = {str(k): str(v) for k, v in event.headers or []}
            self.partial[event.stream_id] = (headers, bytearray())
        elif isinstance(event, h2.events.DataReceived):
            self.partial[event.stream_id][1].extend(event.data)
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            headers, data = self.partial.pop(event.stream_id)
            future = self.waiting.pop(event.stream_id)
            future.set_result((int(headers[":status"]), headers, bytes(data)))
        elif isinstance(event, h2.events.StreamReset):
            future = self.waiting.pop(event.stream_id)
            future.set_exception(ConnectionAbortedError(f"stream reset {event.error_code}"))
        elif isinstance(event, h2.events.WindowUpdated):
            self.window_open.set()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.settled.set()

    def _flush(self) -> None:
        self.writer.write(self.conn.data_to_send())

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@pytest.fixture
async def client(sandbox: Sandbox) -> Any:
    c = await H2Client.connect(sandbox.apns_port)
    try:
        yield c
    finally:
        await c.close()


def apns_headers(**extra: str) -> dict[str, str]:
    return {
        "authorization": JWT,
        "apns-topic": "com.example.app",
        "apns-push-type": "alert",
        "apns-priority": "10",
        **extra,
    }


PAYLOAD = json.dumps({"aps": {"alert": "hi"}}).encode()


async def test_success_echoes_apns_id(sandbox: Sandbox, client: H2Client) -> None:
    apns_id = str(uuid.uuid4())
    status, headers, body = await client.post(
        "/3/device/abc123", apns_headers(**{"apns-id": apns_id}), PAYLOAD
    )
    assert (status, headers["apns-id"], body) == (200, apns_id, b"")
    status, headers, _ = await client.post("/3/device/abc123", apns_headers(), PAYLOAD)
    assert status == 200 and uuid.UUID(headers["apns-id"])
    record = sandbox.recorder.records("apns")[0]
    assert (record.address, record.outcome, record.size) == ("abc123", "200", len(PAYLOAD))
    assert record.headers == {"apns-id": apns_id, "authorization": "present"}
    assert record.body == {"aps": {"alert": "hi"}}
    assert record.meta["apns-topic"] == "com.example.app"


async def test_unregistered_has_timestamp(client: H2Client) -> None:
    before = int(time.time() * 1000)
    status, headers, body = await client.post("/3/device/dead-token", apns_headers(), PAYLOAD)
    doc = json.loads(body)
    assert (status, doc["reason"]) == (410, "Unregistered")
    assert before <= doc["timestamp"] <= int(time.time() * 1000)
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("path", "headers", "payload", "status", "reason"),
    [
        ("/3/device/t", apns_headers(authorization=""), PAYLOAD, 403, "MissingProviderToken"),
        (
            "/3/device/t",
            apns_headers(authorization="bearer nope"),
            PAYLOAD,
            403,
            "InvalidProviderToken",
        ),
        ("/3/device/t", apns_headers(**{"apns-topic": ""}), PAYLOAD, 400, "MissingTopic"),
        ("/3/device/t", apns_headers(), b"x" * 4097, 413, "PayloadTooLarge"),
        ("/3/device/t", apns_headers(), b"", 400, "PayloadEmpty"),
        ("/3/device/t", apns_headers(**{"apns-id": "nope"}), PAYLOAD, 400, "BadMessageId"),
        ("/3/device/invalid-t", apns_headers(), PAYLOAD, 400, "BadDeviceToken"),
        ("/4/nowhere", apns_headers(), PAYLOAD, 404, "BadPath"),
    ],
)
async def test_request_errors(
    client: H2Client, path: str, headers: dict[str, str], payload: bytes, status: int, reason: str
) -> None:
    headers = {k: v for k, v in headers.items() if v}
    got_status, _, body = await client.post(path, headers, payload)
    assert (got_status, json.loads(body)["reason"]) == (status, reason)


async def test_voip_payload_limit_is_larger(client: H2Client) -> None:
    headers = apns_headers(**{"apns-push-type": "voip"})
    assert (await client.post("/3/device/t", headers, b"x" * 5000))[0] == 200


@pytest.mark.parametrize(
    ("rate", "status", "reason"),
    [
        ("429", 429, "TooManyRequests"),
        ("503", 503, "ServiceUnavailable"),
        ("500", 500, "InternalServerError"),
    ],
)
async def test_profile_faults(
    sandbox: Sandbox, client: H2Client, rate: str, status: int, reason: str
) -> None:
    sandbox.set_profile({"rates": {rate: 1.0}}, "apns")
    got, _, body = await client.post("/3/device/t", apns_headers(), PAYLOAD)
    assert (got, json.loads(body)["reason"]) == (status, reason)


async def test_many_concurrent_streams_on_one_connection(
    sandbox: Sandbox, client: H2Client
) -> None:
    sandbox.set_profile({"latency_ms": [1, 20], "seed": 5}, "apns")
    tokens = [f"tok-{i}" if i % 10 else f"dead-{i}" for i in range(300)]
    payload = json.dumps({"aps": {"alert": "x" * 3000}}).encode()  # 300 x 3 KB > the windows
    results = await asyncio.gather(
        *(client.post(f"/3/device/{t}", apns_headers(), payload) for t in tokens)
    )
    statuses = [r[0] for r in results]
    assert statuses.count(200) == 270 and statuses.count(410) == 30
    assert sandbox.recorder.stats()["apns"]["total"] == 300


async def test_reset_drops_the_connection(sandbox: Sandbox, client: H2Client) -> None:
    sandbox.set_profile({"rates": {"reset": 1.0}}, "apns")
    with pytest.raises(ConnectionError):
        await client.post("/3/device/t", apns_headers(), PAYLOAD)
    assert sandbox.recorder.records("apns")[0].outcome == "reset"


async def test_timeout_resets_the_stream(sandbox: Sandbox, client: H2Client) -> None:
    sandbox.set_profile({"rates": {"timeout": 1.0}, "timeout_s": 0.2}, "apns")
    pending = asyncio.ensure_future(client.post("/3/device/t", apns_headers(), PAYLOAD))
    done, _ = await asyncio.wait({pending}, timeout=0.05)
    assert not done  # still hanging
    with pytest.raises(ConnectionAbortedError):
        await pending  # RST_STREAM after timeout_s
    with pytest.raises(ConnectionAbortedError):
        await client.post("/3/device/slow-token", apns_headers(), PAYLOAD)
    outcomes = [r.outcome for r in sandbox.recorder.records("apns")]
    assert outcomes == ["timeout", "timeout"]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary")
async def test_tls_with_alpn(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=sandbox"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    client_ctx.set_alpn_protocols(["h2"])
    async with Sandbox(apns_ssl=server_ctx) as sb:
        assert sb.apns_url.startswith("https://")
        client = await H2Client.connect(sb.apns_port, tls=client_ctx)
        try:
            ssl_object = client.writer.get_extra_info("ssl_object")
            assert ssl_object.selected_alpn_protocol() == "h2"
            assert (await client.post("/3/device/t", apns_headers(), PAYLOAD))[0] == 200
        finally:
            await client.close()


async def test_a_window_update_before_the_request_ends_does_not_end_the_answer(
    client: H2Client,
) -> None:
    """httpx's HTTP/2 client opens the receive window of a stream while it is still sending;
    the fake once answered that with an empty DATA frame that ended the stream."""
    conn = client.conn
    stream_id = conn.get_next_available_stream_id()
    request = [(":method", "POST"), (":scheme", "http"), (":authority", "localhost"),
               (":path", "/3/device/abc123"), *apns_headers().items()]
    future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
    client.waiting[stream_id] = future
    conn.send_headers(stream_id, request)
    conn.increment_flow_control_window(1 << 20, stream_id)
    client._flush()
    await asyncio.sleep(0.05)  # the server sees the window update before the body
    conn.send_data(stream_id, PAYLOAD, end_stream=True)
    client._flush()
    status, headers, _ = await asyncio.wait_for(future, 5)
    assert status == 200 and headers["apns-id"]
