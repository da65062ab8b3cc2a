"""A fake SMTP relay built on aiosmtpd, failing recipients by the ``"smtp"`` fault profile.

The profile is applied per ``RCPT TO``, where real relays refuse recipients, with Gmail-like
replies. Accepted messages are recorded at ``DATA`` with the headers that matter for bulk
senders (List-Unsubscribe, List-Unsubscribe-Post, DKIM-Signature).

An address containing ``dropdata`` has its message taken in full at ``DATA`` and then the
connection is dropped before the final reply: the ambiguous outcome a client must report as
possibly sent. The server can speak implicit TLS or offer STARTTLS, count the connections it
accepted, keep the last raw messages (for DKIM checks) and drop every open session (what an
idle timeout does to a pooled client connection).

The server runs on the sandbox's own event loop (aiosmtpd's ``SMTP`` protocol behind
``loop.create_server``) rather than in ``aiosmtpd.controller.Controller``'s private thread,
so profiles and the recorder are only ever touched from one loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import weakref
from collections import deque
from email.parser import BytesHeaderParser
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from pushguard.sandbox.profile import Fault
from pushguard.sandbox.profiles import Profiles
from pushguard.sandbox.recorder import Recorder

GONE = "550 5.1.1 The email account that you tried to reach does not exist"
INVALID = "553 5.1.3 bad address syntax"
RATE_LIMITED = "450 4.2.1 rate limited"
TEMPORARY = "421 4.3.0 Temporary System Problem"
AUTH_REQUIRED = "530 5.7.0 Authentication required"

# status -> SMTP reply, for statuses without a more specific rule below
_REPLIES: dict[int, str] = {
    400: "501 5.5.4 Invalid command arguments",
    401: "535 5.7.8 Authentication credentials invalid",
    403: "550 5.7.1 Delivery not authorized, message refused",
    404: GONE,
    410: GONE,
    413: "552 5.3.4 Message too big for system",
    429: RATE_LIMITED,
}


def reply_for(fault: Fault) -> str:
    """The SMTP reply a refused recipient gets for a status fault."""
    if fault.reason == "invalid":
        return INVALID
    if fault.reason == "gone":
        return GONE
    # Every 5xx (and a proxy page, which SMTP cannot have) reads as the relay being in trouble.
    return _REPLIES.get(fault.status, TEMPORARY)


class SmtpHandler:
    """aiosmtpd handler: fault decisions on RCPT, recording on DATA, optional AUTH."""

    def __init__(
        self,
        profiles: Profiles,
        recorder: Recorder,
        *,
        credentials: tuple[str, str] | None = None,
        closing: asyncio.Event | None = None,
        keep_messages: int = 0,
    ) -> None:
        self.profiles = profiles
        self.recorder = recorder
        self.credentials = credentials
        self.closing = closing or asyncio.Event()
        #: the last ``keep_messages`` accepted messages, exactly as received after DATA
        self.messages: deque[bytes] = deque(maxlen=keep_messages)

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        """aiosmtpd authenticator for AUTH PLAIN/LOGIN against the configured credentials."""
        ok = (
            self.credentials is not None
            and isinstance(data, LoginPassword)
            and (data.login.decode(), data.password.decode()) == self.credentials
        )
        return AuthResult(success=ok, handled=False)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        # aiosmtpd's own auth_required warns when TLS is not required too, so enforce it here.
        if self.credentials is not None and not session.authenticated:
            return AUTH_REQUIRED
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        fault = self.profiles.get("smtp").decide(address)
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault.kind == "timeout":
            self.recorder.record("smtp", address, "timeout")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closing.wait(), fault.hang)
            return "451 4.4.2 Timeout while waiting for the next hop"
        if fault.kind == "reset":
            self.recorder.record("smtp", address, "reset")
            if isinstance(server.transport, asyncio.Transport):
                server.transport.abort()
                # connection_lost() cancels this session's task; wait here for that.
                await asyncio.sleep(3600)
            return TEMPORARY
        if fault.kind == "status":
            reply = reply_for(fault)
            self.recorder.record("smtp", address, reply[:3], meta={"reply": reply})
            if reply.startswith("421") and server.transport is not None:
                # 421 means the server is closing the channel (RFC 5321 3.8); the close is
                # queued behind the reply, which aiosmtpd writes as soon as we return it.
                asyncio.get_running_loop().call_soon(server.transport.close)
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if isinstance(envelope.content, bytes) and not raw:
            raw = envelope.content
        headers = BytesHeaderParser().parsebytes(raw)
        meta = {
            "from": envelope.mail_from,
            "rcpts": list(envelope.rcpt_tos),
            "subject": headers.get("Subject"),
            "list_unsubscribe": headers.get("List-Unsubscribe"),
            "list_unsubscribe_post": headers.get("List-Unsubscribe-Post"),
            "dkim_signature": "DKIM-Signature" in headers,
            "message_id": headers.get("Message-ID"),
            "tls": session.ssl is not None or _over_tls(server),
        }
        address = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        if self.messages.maxlen:
            self.messages.append(raw)
        if any("dropdata" in rcpt for rcpt in envelope.rcpt_tos):
            # The relay has the whole message but the client never hears so.
            self.recorder.record("smtp", address, "dropdata", size=len(raw), meta=meta)
            if isinstance(server.transport, asyncio.Transport):
                server.transport.abort()
                await asyncio.sleep(3600)
            return TEMPORARY
        self.recorder.record("smtp", address, "250", size=len(raw), meta=meta)
        return "250 2.0.0 OK queued"


def _over_tls(server: SMTP) -> bool:
    transport = server.transport
    return transport is not None and transport.get_extra_info("sslcontext") is not None


class SmtpServer:
    """Serves :class:`SmtpHandler` on a loopback port.

    ``ssl_context`` serves implicit TLS (port 465 style); ``starttls_context`` offers STARTTLS
    instead. ``keep_messages`` keeps that many raw messages on ``handler.messages``.
    """

    def __init__(
        self,
        profiles: Profiles,
        recorder: Recorder,
        *,
        credentials: tuple[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        starttls_context: ssl.SSLContext | None = None,
        keep_messages: int = 0,
    ) -> None:
        self.closing = asyncio.Event()
        self.handler = SmtpHandler(
            profiles,
            recorder,
            credentials=credentials,
            closing=self.closing,
            keep_messages=keep_messages,
        )
        self.credentials = credentials
        self.ssl_context = ssl_context
        self.starttls_context = starttls_context
        #: connections accepted so far
        self.connections = 0
        self._server: asyncio.Server | None = None
        # weak: a session object should go away with its connection
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def _factory(self) -> SMTP:
        smtp = SMTP(
            self.handler,
            hostname="sandbox.pushguard.test",
            enable_SMTPUTF8=True,
            auth_require_tls=False,
            authenticator=self.handler.authenticate,
            tls_context=self.starttls_context,
            loop=asyncio.get_running_loop(),
        )
        self.connections += 1
        self._sessions.add(smtp)
        return smtp

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Start listening; returns the bound port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._factory, host, port, ssl=self.ssl_context)
        return int(self._server.sockets[0].getsockname()[1])

    def drop_connections(self) -> None:
        """Close every open session, as a relay's idle timeout would."""
        for smtp in list(self._sessions):
            if smtp.transport is not None:
                smtp.transport.close()

    async def stop(self) -> None:
        """Close the listener and every open session."""
        self.closing.set()
        if self._server is None:
            return
        self._server.close()
        self.drop_connections()
        await self._server.wait_closed()
        self._server = None
