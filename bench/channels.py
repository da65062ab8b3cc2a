"""``python -m bench.channels``: the real channels against the sandbox fakes, each next to a
plain client loop to the same fake.

For email (aiosmtpd relay), APNs (HTTP/2), FCM (HTTP v1 + OAuth2 token endpoint) and Web Push
(RFC 8030/8291/8292), one sandbox process (``python -m pushguard.sandbox --no-verify``) serves
both sides, and each side runs in this process:

- ``raw``: a plain client. Email: ``--connections`` aiosmtplib sessions opened beforehand, one
  ``sendmail`` loop each, pre-built messages. APNs: a minimal client on the ``h2`` library
  (:class:`H2Client`: one connection, prior knowledge), pre-built JSON payloads, the ES256
  provider token signed once. FCM: aiohttp, pre-built v1 JSON, one bearer token fetched from
  the fake's token endpoint. Web Push: aiohttp, each payload encrypted with http_ece
  (aes128gcm, a fresh key per message as RFC 8291 requires), the VAPID JWT signed once with
  py_vapid.
- ``provider``: :meth:`Provider.send` of the real provider, configured the way the provider
  tests configure it against its fake (SMTP: ``pool_size`` = ``--connections``), at
  ``--concurrency`` sends in flight.
- ``worker_sqlite``: the real :class:`Worker` and pipeline over a real :class:`SQLStore` on a
  temp SQLite file, the channel served by that provider; N messages enqueued first (not timed),
  timed from the worker's start until none is open.

Each measure runs ``--repeat`` times in the order raw, provider, worker (so the raw loop runs
right before pushguard each round); the medians are reported. Email is also measured with DKIM
on both sides (dkimpy on the raw side) on fewer messages, as DKIM in pure Python dominates.

Writes ``bench/results/channels.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiohttp

from bench import procs
from bench.dbs import SQLiteDB
from bench.layers import Timed, drive

RESULTS = Path(__file__).resolve().parent / "results"
CHANNELS = ("email", "apns", "fcm", "webpush")
DEFAULT_N = {"email": 3000, "apns": 5000, "fcm": 5000, "webpush": 5000}
TARGET_EMAIL_RATIO = 0.6
FROM_ADDR = "news@shop.example"
FROM = f"Shop <{FROM_ADDR}>"
HELO = "bench.pushguard.test"



def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pem(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return str(key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode())


# -- the sandbox -----------------------------------------------------------------------------

@dataclass
class Fakes:
    """One sandbox process and where its fakes listen."""

    child: procs.Child
    http: str
    apns: str
    smtp_host: str
    smtp_port: int

    @classmethod
    def start(cls, logdir: Path) -> Fakes:
        # The same receiver settings as bench.run's webhook rounds (no signature checks,
        # few records kept in memory).
        child = procs.spawn("sandbox", [procs.PY, "-m", "pushguard.sandbox", "--host",
                                        "127.0.0.1", "--port", "0", "--no-verify",
                                        "--max-records", "1000"], logdir)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            urls = dict(line.split(None, 1) for line in
                        child.out.read_text(errors="replace").splitlines() if " " in line)
            if "control" in urls:
                smtp = urls["smtp"].strip().removeprefix("smtp://")
                host, _, port = smtp.rpartition(":")
                return cls(child, urls["webhook"].split("/hooks/", 1)[0],
                           urls["apns"].split("/3/", 1)[0], host, int(port))
            if not child.alive():
                raise RuntimeError(f"sandbox exited: {child.stderr_tail()}")
            time.sleep(0.05)
        child.stop()
        raise RuntimeError("sandbox did not print its URLs within 30 s")

    def cpu(self) -> float | None:
        return procs.cpu_seconds(self.child.pid)


# -- the channels ----------------------------------------------------------------------------

class Channel:
    """One channel: its messages, its plain client loop and its pushguard provider."""

    name = ""
    channel = ""
    ptype = ""

    def __init__(self, fakes: Fakes, tmp: Path) -> None:
        self.fakes = fakes
        self.tmp = tmp

    def to(self, i: int) -> str:
        raise NotImplementedError

    def content(self, i: int) -> dict[str, Any]:
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        raise NotImplementedError

    async def raw(self, n: int, concurrency: int) -> Timed:
        raise NotImplementedError

    def describe(self, concurrency: int) -> str:
        return f"{concurrency} in flight on both sides"

    async def check(self) -> None:
        """Set the fake up to check (some of) what both sides send, before any measure."""

    def provider_config(self) -> Any:
        from pushguard.config import ProviderConfig

        return ProviderConfig(self.name, self.ptype, self.options(), timeout=15.0)


class Email(Channel):
    name, channel, ptype = "mail", "email", "smtp"

    def __init__(self, fakes: Fakes, tmp: Path, connections: int, dkim_key: str | None = None,
                 pool_size: int | None = None) -> None:
        super().__init__(fakes, tmp)
        self.connections = connections
        self.pool_size = pool_size or connections
        self.dkim_key = dkim_key

    def to(self, i: int) -> str:
        return f"customer{i}@example.com"

    def content(self, i: int) -> dict[str, Any]:
        return {
            "subject": f"Your order #{100000 + i} has shipped",
            "text": f"Hello,\n\nyour order #{100000 + i} is on its way.\n\n" + "Thanks for "
            "shopping with us. Track the parcel from your account page.\n" * 4,
            "html": f"<p>Hello,</p><p>your order <b>#{100000 + i}</b> is on its way.</p>"
            + "<p>Thanks for shopping with us. Track the parcel from your account page.</p>" * 4,
        }

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"host": self.fakes.smtp_host, "port": self.fakes.smtp_port,
                                "security": "none", "from": FROM, "helo_name": HELO,
                                "pool_size": self.pool_size}
        if self.dkim_key is not None:
            opts["dkim"] = {"selector": "bench", "domain": "shop.example",
                            "private_key": self.dkim_key}
        return opts

    def describe(self, concurrency: int) -> str:
        pool = f"pool_size {self.pool_size}"
        return (f"raw: {self.connections} aiosmtplib sessions; pushguard: {pool}, "
                f"{concurrency} sends in flight")

    def message(self, i: int) -> bytes:
        """What a plain client sends: the same headers and parts, built beforehand."""
        c = self.content(i)
        msg = EmailMessage()
        msg["From"] = FROM
        msg["To"] = self.to(i)
        msg["Subject"] = c["subject"]
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = f"<raw-{i}@shop.example>"
        msg.set_content(c["text"])
        msg.add_alternative(c["html"], subtype="html")
        return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))

    async def raw(self, n: int, concurrency: int) -> Timed:
        import aiosmtplib

        messages = [(self.to(i), self.message(i)) for i in range(n)]
        sign: Callable[[bytes], bytes] | None = None
        if self.dkim_key is not None:
            import dkim

            key = self.dkim_key.encode()
            names = [h.encode() for h in ("From", "To", "Subject", "Date", "Message-ID",
                                          "MIME-Version", "Content-Type")]

            def sign(data: bytes) -> bytes:
                sig = dkim.sign(data, b"bench", b"shop.example", key, include_headers=names,
                                canonicalize=(b"relaxed", b"relaxed"), linesep=b"\r\n")
                return bytes(sig) + data

        sessions = []
        for _ in range(self.connections):
            smtp = aiosmtplib.SMTP(hostname=self.fakes.smtp_host, port=self.fakes.smtp_port,
                                   start_tls=False, use_tls=False, local_hostname=HELO)
            await smtp.connect()
            sessions.append(smtp)
        it = iter(messages)

        async def loop(smtp: aiosmtplib.SMTP) -> None:
            for to, data in it:
                errors, reply = await smtp.sendmail(
                    FROM_ADDR, [to], data if sign is None else sign(data))
                assert not errors and reply.startswith("2"), (errors, reply)

        try:
            t0, c0 = time.perf_counter(), time.process_time()
            await asyncio.gather(*(loop(s) for s in sessions))
            return time.perf_counter() - t0, time.process_time() - c0
        finally:
            for smtp in sessions:
                await smtp.quit()


class Apns(Channel):
    name, channel, ptype = "apns", "apns", "apns"
    TEAM, KEY_ID, TOPIC = "TEAM123456", "KEY1234567", "com.example.shop"

    def __init__(self, fakes: Fakes, tmp: Path) -> None:
        super().__init__(fakes, tmp)
        from cryptography.hazmat.primitives.asymmetric import ec

        self.key = ec.generate_private_key(ec.SECP256R1())

    def to(self, i: int) -> str:
        return f"{i + 1:064x}"  # never all zeros: no device has that token (the live check's)

    def content(self, i: int) -> dict[str, Any]:
        return {"title": "Your order shipped", "body": f"Order #{100000 + i} is on its way",
                "data": {"order": 100000 + i}}

    def options(self) -> dict[str, Any]:
        return {"team_id": self.TEAM, "key_id": self.KEY_ID, "private_key": pem(self.key),
                "topic": self.TOPIC, "environment": "sandbox", "base_url": self.fakes.apns}

    def describe(self, concurrency: int) -> str:
        return f"{concurrency} streams in flight; one HTTP/2 connection on both sides"

    async def raw(self, n: int, concurrency: int) -> Timed:
        import jwt

        token = jwt.encode({"iss": self.TEAM, "iat": int(time.time())}, self.key,
                           algorithm="ES256", headers={"kid": self.KEY_ID})
        expires = str(int(time.time()) + 86400)
        requests = []
        for i in range(n + concurrency):
            c = self.content(i % n)
            payload = json.dumps({"aps": {"alert": {"title": c["title"], "body": c["body"]}},
                                  **c["data"]}, separators=(",", ":")).encode()
            headers = [("authorization", f"bearer {token}"), ("apns-topic", self.TOPIC),
                       ("apns-push-type", "alert"), ("apns-priority", "10"),
                       ("apns-expiration", expires), ("apns-id", str(uuid.uuid4()))]
            requests.append((f"/3/device/{self.to(i % n)}", headers, payload))
        host, port = self.fakes.apns.removeprefix("http://").rsplit(":", 1)
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(lambda: H2Client(self.fakes.apns), host,
                                                 int(port))
        try:
            await client.ready

            async def one(r: tuple[str, list[tuple[str, str]], bytes]) -> None:
                status, body = await client.post(*r)
                assert status == 200, (status, body)

            await drive(requests[n:], concurrency, one)
            return await drive(requests[:n], concurrency, one)
        finally:
            client.close()


class H2Client(asyncio.Protocol):
    """The least an HTTP/2 client does, with the ``h2`` library's defaults: one connection,
    a stream per request, responses matched by stream id, no retries.

    (httpx with ``http2=True`` cannot be the baseline here: it opens each stream's window with
    a WINDOW_UPDATE, which the sandbox's APNs fake answers with an empty DATA frame ending the
    stream before its HEADERS, and httpx then fails with "cannot receive data before headers".)
    """

    def __init__(self, origin: str) -> None:
        import h2.config
        import h2.connection

        self.authority = origin.split("://", 1)[1]
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.waiting: dict[int, tuple[asyncio.Future[tuple[int, bytes]], list[Any]]] = {}
        self.window = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        import h2.events

        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.RemoteSettingsChanged) and not self.ready.done():
                self.ready.set_result(None)
            elif isinstance(ev, h2.events.ResponseReceived):
                self.waiting[ev.stream_id or 0][1][0] = int(dict(ev.headers or [])[":status"])
            elif isinstance(ev, h2.events.DataReceived):
                self.waiting[ev.stream_id or 0][1].append(ev.data)
                self.conn.acknowledge_received_data(ev.flow_controlled_length or 0,
                                                    ev.stream_id or 0)
            elif isinstance(ev, h2.events.StreamEnded):
                fut, got = self.waiting.pop(ev.stream_id or 0)
                fut.set_result((got[0], b"".join(got[1:])))
            elif isinstance(ev, h2.events.StreamReset):
                fut, _ = self.waiting.pop(ev.stream_id or 0)
                fut.set_exception(ConnectionError(f"stream reset: {ev.error_code}"))
            elif isinstance(ev, h2.events.WindowUpdated):
                self.window.set()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        for fut, _ in self.waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError(f"connection lost: {exc}"))
        self.waiting.clear()

    def _flush(self) -> None:
        if self.transport is not None:
            self.transport.write(self.conn.data_to_send())

    async def post(self, path: str, headers: list[tuple[str, str]],
                   body: bytes) -> tuple[int, bytes]:
        sid = self.conn.get_next_available_stream_id()
        fut = asyncio.get_running_loop().create_future()
        self.waiting[sid] = (fut, [0])
        self.conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"),
                                     (":authority", self.authority), (":path", path),
                                     *headers])
        while self.conn.local_flow_control_window(sid) < len(body):
            self._flush()
            self.window.clear()
            await self.window.wait()
        self.conn.send_data(sid, body, end_stream=True)
        self._flush()
        result: tuple[int, bytes] = await fut
        return result

    def close(self) -> None:
        self.conn.close_connection()
        self._flush()
        if self.transport is not None:
            self.transport.close()


class Fcm(Channel):
    name, channel, ptype = "fcm", "fcm", "fcm"
    EMAIL = "pushguard@bench.iam.gserviceaccount.com"

    def __init__(self, fakes: Fakes, tmp: Path) -> None:
        super().__init__(fakes, tmp)
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.account = tmp / "service-account.json"
        self.account.write_text(json.dumps({
            "type": "service_account", "project_id": "bench", "private_key_id": "kid-1",
            "private_key": pem(self.key), "client_email": self.EMAIL,
            "token_uri": "https://oauth2.googleapis.com/token",
        }))

    def to(self, i: int) -> str:
        return f"cTok3n{i:08d}:APA91b" + "x" * 134

    def content(self, i: int) -> dict[str, Any]:
        return {"title": "Your order shipped", "body": f"Order #{100000 + i} is on its way",
                "data": {"order": str(100000 + i)}}

    def options(self) -> dict[str, Any]:
        return {"service_account": str(self.account), "base_url": f"{self.fakes.http}/fcm",
                "token_uri": f"{self.fakes.http}/fcm/token"}

    def describe(self, concurrency: int) -> str:
        return f"{concurrency} in flight; aiohttp, up to {concurrency} connections on both sides"

    async def raw(self, n: int, concurrency: int) -> Timed:
        import jwt

        from pushguard.providers.fcm import JWT_BEARER, SCOPE

        url = f"{self.fakes.http}/fcm/v1/projects/bench/messages:send"
        bodies = []
        for i in range(n):
            c = self.content(i)
            message = {"token": self.to(i),
                       "notification": {"title": c["title"], "body": c["body"]},
                       "data": c["data"], "android": {"priority": "NORMAL", "ttl": "86400s"}}
            bodies.append(json.dumps({"message": message}, separators=(",", ":")).encode())
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=concurrency)) as s:
            now = int(time.time())
            assertion = jwt.encode({"iss": self.EMAIL, "scope": SCOPE, "iat": now,
                                    "aud": f"{self.fakes.http}/fcm/token", "exp": now + 3600},
                                   self.key, algorithm="RS256", headers={"kid": "kid-1"})
            async with s.post(f"{self.fakes.http}/fcm/token",
                              data={"grant_type": JWT_BEARER, "assertion": assertion}) as r:
                access = (await r.json())["access_token"]
            headers = {"Authorization": f"Bearer {access}",
                       "Content-Type": "application/json; charset=UTF-8"}

            async def one(body: bytes) -> None:
                async with s.post(url, data=body, headers=headers) as r:
                    await r.read()
                    assert r.status == 200, r.status

            await drive(bodies[:concurrency], concurrency, one)
            return await drive(bodies, concurrency, one)


class WebPush(Channel):
    name, channel, ptype = "push", "webpush", "webpush"
    SUBJECT = "mailto:ops@shop.example"
    BROWSERS = 50

    def __init__(self, fakes: Fakes, tmp: Path, verify: bool = False) -> None:
        super().__init__(fakes, tmp)
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        self.verify = verify
        self.vapid = ec.generate_private_key(ec.SECP256R1())
        point = serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        self.server_key = b64(self.vapid.public_key().public_bytes(*point))
        self.browsers: list[dict[str, Any]] = []
        for k in range(self.BROWSERS):
            key, auth = ec.generate_private_key(ec.SECP256R1()), os.urandom(16)
            self.browsers.append({
                "name": f"bench-{k}", "private": key, "auth": auth,
                "sub": {"endpoint": f"{fakes.http}/webpush/bench-{k}",
                        "keys": {"p256dh": b64(key.public_key().public_bytes(*point)),
                                 "auth": b64(auth)}},
            })
        self._to: list[str] = []

    def to(self, i: int) -> str:
        if not self._to:
            from pushguard.addresses import normalize_address
            from pushguard.ssrf import OutboundGuard

            guard = OutboundGuard.from_env("127.0.0.1")
            self._to = [normalize_address("webpush", json.dumps(b["sub"]), guard=guard)
                        for b in self.browsers]
        return self._to[i % len(self._to)]

    def content(self, i: int) -> dict[str, Any]:
        return {"title": "Your order shipped", "body": f"Order #{100000 + i} is on its way",
                "url": f"/orders/{100000 + i}"}

    def options(self) -> dict[str, Any]:
        return {"vapid_private_key": b64(self.vapid.private_numbers().private_value
                                         .to_bytes(32, "big")),
                "vapid_subject": self.SUBJECT}

    def describe(self, concurrency: int) -> str:
        what = "decrypts and verifies" if self.verify else "checks headers only (--verify: all)"
        return (f"{concurrency} in flight; aiohttp on both sides; {self.BROWSERS} subscriptions; "
                f"the fake {what}")

    async def register(self, browsers: Iterable[dict[str, Any]]) -> None:
        async with aiohttp.ClientSession() as s:
            for b in browsers:
                body = {"private_key": b64(b["private"].private_numbers().private_value
                                           .to_bytes(32, "big")),
                        "auth": b64(b["auth"]), "application_server_key": self.server_key}
                async with s.put(f"{self.fakes.http}/_sandbox/webpush/subscriptions/"
                                 f"{b['name']}", json=body) as r:
                    assert r.status == 200, await r.text()

    async def check(self) -> None:
        # The first subscription is always registered: its pushes are decrypted and their
        # VAPID verified, so a broken raw loop (or provider) cannot pass unnoticed.
        await self.register(self.browsers if self.verify else self.browsers[:1])

    async def raw(self, n: int, concurrency: int) -> Timed:
        import http_ece
        from cryptography.hazmat.primitives.asymmetric import ec
        from py_vapid.jwt import sign as sign_jwt

        origin = self.fakes.http
        receivers = [(b["sub"]["endpoint"],
                      ec.EllipticCurvePublicKey.from_encoded_point(
                          ec.SECP256R1(), base64.urlsafe_b64decode(
                              b["sub"]["keys"]["p256dh"] + "==")),
                      b["auth"]) for b in self.browsers]
        payloads = [json.dumps(self.content(i), separators=(",", ":")).encode()
                    for i in range(n)]
        cached: dict[str, str] = {}

        def vapid() -> str:  # signed once per origin, as any reasonable client does
            if origin not in cached:
                claims = {"aud": origin, "exp": int(time.time()) + 12 * 3600,
                          "sub": self.SUBJECT}
                cached[origin] = f"vapid t={sign_jwt(claims, self.vapid)}, k={self.server_key}"
            return cached[origin]

        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=concurrency)) as s:
            async def one(i: int) -> None:
                endpoint, dh, auth = receivers[i % len(receivers)]
                body = http_ece.encrypt(payloads[i], private_key=ec.generate_private_key(
                    ec.SECP256R1()), dh=dh, auth_secret=auth, version="aes128gcm")
                headers = {"TTL": "86400", "Urgency": "normal", "Content-Encoding": "aes128gcm",
                           "Content-Type": "application/octet-stream", "Authorization": vapid()}
                async with s.post(endpoint, data=body, headers=headers) as r:
                    await r.read()
                    assert r.status == 201, (r.status, await r.text())

            await drive(range(concurrency), concurrency, one)
            return await drive(range(n), concurrency, one)


# -- pushguard's side ------------------------------------------------------------------------

def _app(ch: Channel) -> Any:
    from pushguard.app import App
    from pushguard.config import Config
    from pushguard.settings import Settings

    settings = Settings(outbound_allow="127.0.0.1", log_level="WARNING")
    config = Config(channels={ch.channel: (ch.name,)}, providers={ch.name: ch.provider_config()})
    return App(settings=settings, store=None, config=config)  # type: ignore[arg-type]


def _delivery(ch: Channel, i: int) -> Any:
    from pushguard.providers.base import Delivery

    return Delivery(message_id=f"msg_{i:08d}", channel=ch.channel, to=ch.to(i),
                    content=ch.content(i), topic=None, attempt=1, priority=1,
                    expires_at=time.time() + 86400)


async def provider_send(ch: Channel, n: int, concurrency: int) -> Timed:
    provider = _app(ch).build_providers()[ch.name]
    await provider.start()
    try:
        async def one(d: Any) -> None:
            await provider.send(d)

        warm = [_delivery(ch, n + i) for i in range(concurrency)]
        await drive(warm, concurrency, one)
        return await drive([_delivery(ch, i) for i in range(n)], concurrency, one)
    finally:
        await provider.close()


def enqueue(ch: Channel, url: str, n: int) -> Any:
    from pushguard.models import NewMessage
    from pushguard.store.sql import SQLStore

    store = SQLStore(url)
    store.migrate()
    for s in range(0, n, 5000):
        store.enqueue([NewMessage(channel=ch.channel, to=ch.to(i), content=ch.content(i))
                       for i in range(s, min(n, s + 5000))], scope="bench")
    return store


async def worker_sqlite(ch: Channel, n: int, concurrency: int) -> Timed:
    from pushguard.worker import Worker

    app = _app(ch)
    providers = app.build_providers()
    for p in providers.values():
        await p.start()
    db = SQLiteDB()
    store = enqueue(ch, db.url, n)
    worker = Worker(store, app.build_pipeline(providers), concurrency=concurrency,
                    batch=concurrency)
    stop = asyncio.Event()
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        task = asyncio.create_task(worker.run(stop))
        while db.open_count() > 0:
            if task.done():
                await task
                raise RuntimeError("the worker stopped early")
            await asyncio.sleep(0.02)
        timed = time.perf_counter() - t0, time.process_time() - c0
        stop.set()
        await task
        states = db.states()
        if states.get("delivered", 0) != n:
            raise RuntimeError(f"not all delivered: {states}")
        return timed
    finally:
        for p in providers.values():
            await p.close()
        store.close()
        db.close()


MEASURES: dict[str, Callable[[Channel, int, int], Awaitable[Timed]]] = {
    "raw": lambda ch, n, c: ch.raw(n, c),
    "provider": provider_send,
    "worker_sqlite": worker_sqlite,
}


def _quiet_logs() -> None:
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))


def measure(ch: Channel, fakes: Fakes, which: str, n: int, concurrency: int) -> dict[str, Any]:
    """One measure in a fresh event loop: rate, CPU per message here and in the sandbox."""
    fn = MEASURES[which]
    sb0 = fakes.cpu()

    async def timed() -> Timed:
        return await asyncio.wait_for(fn(ch, n, concurrency), timeout=max(90.0, n / 20))

    seconds, cpu = asyncio.run(timed())
    sb = fakes.cpu()
    return {"per_s": n / seconds, "seconds": seconds, "cpu_us_per_msg": 1e6 * cpu / n,
            "sandbox_cpu_us_per_msg": None if sb is None or sb0 is None
            else 1e6 * (sb - sb0) / n}


def rounds(ch: Channel, fakes: Fakes, n: int, concurrency: int, repeat: int,
           label: str) -> dict[str, Any]:
    """``repeat`` rounds of raw, provider, worker; medians, and ratios to the raw median."""
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in MEASURES}
    errors: list[str] = []
    for r in range(repeat):
        for which in MEASURES:
            try:
                res = measure(ch, fakes, which, n, concurrency)
            except Exception as exc:  # report it and go on with the other measures
                errors.append(f"round {r + 1} {which}: {type(exc).__name__}: {exc}"[:500])
                log(f"{label} {which} round {r + 1} FAILED: {exc}")
                continue
            runs[which].append(res)
            log(f"{label} {which:<13} round {r + 1}/{repeat}: {res['per_s']:>7,.0f}/s, "
                f"{res['cpu_us_per_msg']:,.0f} us CPU/msg here, "
                f"{res['sandbox_cpu_us_per_msg'] or 0:,.0f} in the sandbox")
    out: dict[str, Any] = {"n": n, "concurrency": concurrency, "setup": ch.describe(concurrency),
                           "measures": {}, "errors": errors}
    for which, rs in runs.items():
        if not rs:
            continue
        med = {k: statistics.median(x[k] for x in rs)
               for k in ("per_s", "cpu_us_per_msg", "sandbox_cpu_us_per_msg")
               if all(x[k] is not None for x in rs)}
        out["measures"][which] = {**med, "per_s_per_round": [round(x["per_s"]) for x in rs]}
    m = out["measures"]
    if "raw" in m:
        out["ratios"] = {f"{k}/raw": m[k]["per_s"] / m["raw"]["per_s"] for k in m if k != "raw"}
    return out


def profile_worker(ch: Channel, fakes: Fakes, n: int, concurrency: int, top: int = 35) -> str:
    """cProfile of the event loop's thread during one worker_sqlite run."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    try:
        res = measure(ch, fakes, "worker_sqlite", n, concurrency)
    finally:
        prof.disable()
    buf = io.StringIO()
    buf.write(f"{ch.channel} worker_sqlite under cProfile: {res['per_s']:,.0f}/s\n")
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


# -- report ----------------------------------------------------------------------------------

def fmt(v: Any, spec: str = ",.0f") -> str:
    return "-" if v is None else f"{v:{spec}}"


def table(res: dict[str, Any]) -> str:
    head = (f"{'channel':<11} {'measure':<14} {'per s':>8} {'vs raw':>7} {'CPU us/msg':>11} "
            f"{'sandbox us/msg':>15}  rounds (per s)")
    lines = ["-" * 96, head, "-" * 96]
    for key, r in res["channels"].items():
        if "skipped" in r:
            lines.append(f"{key:<11} skipped: {r['skipped']}")
            continue
        lines.append(f"{key:<11} N={r['n']:,}; {r['setup']}")
        raw = r["measures"].get("raw", {}).get("per_s")
        for which, m in r["measures"].items():
            ratio = m["per_s"] / raw if raw else None
            lines.append(f"{'':<11} {which:<14} {fmt(m['per_s']):>8} {fmt(ratio, '.2f'):>7} "
                         f"{fmt(m.get('cpu_us_per_msg')):>11} "
                         f"{fmt(m.get('sandbox_cpu_us_per_msg')):>15}  "
                         + ", ".join(f"{x:,}" for x in m["per_s_per_round"]))
        for err in r.get("errors", []):
            lines.append(f"{'':<11} FAILED {err}")
    lines.append("-" * 96)
    t = res.get("targets", {})
    if "email_worker_ge_0.6_raw" in t:
        ok = t["email_worker_ge_0.6_raw"]
        lines.append(f"email worker_sqlite / raw (no DKIM on either side) >= {TARGET_EMAIL_RATIO}: "
                     + ("-" if ok is None else "ok" if ok else "MISSED"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.channels", description=(
        "Email, APNs, FCM and Web Push through pushguard, next to plain clients, against the "
        "sandbox fakes."))
    ap.add_argument("--n", type=int, default=0,
                    help="messages per measure (default: 3000 emails, 5000 pushes)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    ap.add_argument("--only", default="", help=f"comma-separated: {','.join(CHANNELS)}")
    ap.add_argument("--concurrency", type=int, default=100,
                    help="sends in flight (the worker's concurrency and batch)")
    ap.add_argument("--connections", type=int, default=10,
                    help="SMTP connections: the raw sessions and the provider's pool_size")
    ap.add_argument("--pool-size", type=int, default=0,
                    help="the SMTP provider's pool_size, if not --connections (its default is 4)")
    ap.add_argument("--dkim-n", type=int, default=0,
                    help="emails per DKIM measure (default N/10; 0 with --no-dkim)")
    ap.add_argument("--no-dkim", action="store_true", help="skip the email measures with DKIM")
    ap.add_argument("--verify", action="store_true",
                    help="register every Web Push subscription: the fake verifies VAPID and "
                    "decrypts every push (costs the sandbox CPU on both sides)")
    ap.add_argument("--profile", default="", choices=["", *CHANNELS, "email_dkim"],
                    help="instead of measuring: cProfile one worker_sqlite run of this channel")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    only = [c for c in args.only.split(",") if c] or list(CHANNELS)
    for c in only:
        if c not in CHANNELS:
            ap.error(f"unknown channel {c!r}; expected some of {', '.join(CHANNELS)}")
    _quiet_logs()
    from bench.run import code_state, machine

    started, when = time.perf_counter(), datetime.now(UTC)
    tmp = Path(tempfile.mkdtemp(prefix="pushguard-channels-"))
    fakes = Fakes.start(tmp)
    log(f"sandbox pid {fakes.child.pid}: http {fakes.http}, apns {fakes.apns}, "
        f"smtp {fakes.smtp_host}:{fakes.smtp_port}; logs in {tmp}")
    dkim_key = None
    if "email" in only and not args.no_dkim or args.profile == "email_dkim":
        from cryptography.hazmat.primitives.asymmetric import rsa

        dkim_key = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def make(key: str) -> Channel:
        if key in ("email", "email_dkim"):
            return Email(fakes, tmp, args.connections, pool_size=args.pool_size or None,
                         dkim_key=dkim_key if key == "email_dkim" else None)
        if key == "apns":
            return Apns(fakes, tmp)
        if key == "fcm":
            return Fcm(fakes, tmp)
        return WebPush(fakes, tmp, verify=args.verify)

    res: dict[str, Any] = {
        "params": {"repeat": args.repeat, "concurrency": args.concurrency,
                   "smtp_connections": args.connections,
                   "smtp_pool_size": args.pool_size or args.connections,
                   "webpush_verify": args.verify},
        "machine": machine(), "code": code_state(), "channels": {},
    }
    try:
        if args.profile:
            ch = make(args.profile)
            asyncio.run(ch.check())
            n = args.n or DEFAULT_N[args.profile.split("_")[0]]
            print(profile_worker(ch, fakes, n, args.concurrency))
            return 0
        for key in only:
            n = args.n or DEFAULT_N[key]
            ch = make(key)
            asyncio.run(ch.check())
            log(f"{key}: N={n:,}; {ch.describe(args.concurrency)}")
            res["channels"][key] = rounds(ch, fakes, n, args.concurrency, args.repeat, key)
            if key == "email" and dkim_key is not None:
                dn = args.dkim_n or max(50, n // 10)
                log(f"email with DKIM (dkimpy on the raw side too): N={dn:,}")
                res["channels"]["email_dkim"] = rounds(make("email_dkim"), fakes, dn,
                                                       args.concurrency, args.repeat,
                                                       "email_dkim")
        res["sandbox_exit"] = fakes.child.stop()
    finally:
        if fakes.child.alive():
            fakes.child.stop()
    email = res["channels"].get("email", {}).get("ratios", {}).get("worker_sqlite/raw")
    res["targets"] = {"email_worker_ge_0.6_raw": None if email is None
                      else email >= TARGET_EMAIL_RATIO}
    res["when"] = when.isoformat(timespec="seconds")
    res["elapsed_s"] = round(time.perf_counter() - started, 1)
    res["machine"]["loadavg_end"] = list(os.getloadavg())
    if code_state()["pushguard_sha256"] != res["code"]["pushguard_sha256"]:
        res["code"]["changed_during_run"] = True
        log("warning: pushguard/ changed while the benchmark ran; figures mix code versions")
    print()
    print(table(res))
    print(f"total {res['elapsed_s']:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(res, indent=2) + "\n"
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    (args.out / f"{stamp}-channels.json").write_text(text)
    if set(only) == set(CHANNELS) and not args.pool_size:  # only full runs replace the figures
        (args.out / "channels.json").write_text(text)
        print(f"wrote {args.out / 'channels.json'}")
    else:
        print(f"wrote {args.out / f'{stamp}-channels.json'} (channels.json kept)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
