"""Email through an SMTP relay (aiosmtplib), over a small pool of kept-open connections.

Each send is one ``MAIL FROM`` / ``RCPT TO`` / ``DATA`` transaction for one recipient on a
pooled session (at most ``pool_size`` sessions; a broken one is discarded and the next send
opens a new one; an idle one the relay closed is replaced transparently). Replies are
classified by their RFC 3463 enhanced status code first, then the reply code, per FAILURES.md
§1.4 (:func:`classify`). A connection lost after the message went out, before the final
reply, is an ambiguous outcome (``maybe_sent``); before that, nothing was sent.

Options (``[providers.NAME]``, ``type = "smtp"``): ``host``, ``port``, ``security``
(``starttls`` default, ``tls``, or ``none`` for loopback relays only), ``tls_verify``
(default true), ``username``, ``password`` (secret), ``from`` (the default sender),
``envelope_from``, ``pool_size`` (default 4), ``helo_name`` and ``dkim`` (secret:
``{selector, domain, private_key, headers}``, see :class:`~.email_message.DkimSigner`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import TYPE_CHECKING, Any

import aiosmtplib
import dkim

from pushguard import taxonomy
from pushguard.config import resolve
from pushguard.exceptions import ConfigError, DeliveryError, InputError
from pushguard.providers import email_message
from pushguard.providers.base import Delivery, Provider, ProviderContext, ProviderMeta, Receipt
from pushguard.taxonomy import Cause

if TYPE_CHECKING:
    from pushguard.config import ProviderConfig

__all__ = [
    "ConnectionPool", "SmtpOptions", "SmtpProvider", "classify", "parse_options", "translate",
]  # fmt: skip

DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
_KNOWN = frozenset(
    {"host", "port", "security", "tls_verify", "username", "password", "from", "envelope_from",
     "pool_size", "helo_name", "dkim", "unsubscribe"}
)  # fmt: skip


@dataclass(frozen=True)
class SmtpOptions:
    """The checked options of one ``smtp`` provider."""

    host: str
    port: int
    security: str
    sender: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    envelope_from: str | None = None
    pool_size: int = 4
    helo_name: str | None = None
    tls_verify: bool = True
    dkim: email_message.DkimSigner | None = field(default=None, repr=False)


_HELO = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})\Z")


def _is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_options(
    options: Mapping[str, Any], *, location: str
) -> tuple[SmtpOptions | None, list[ConfigError]]:
    """The options checked and resolved (``env:`` references), or every problem found."""
    problems: list[ConfigError] = []

    def bad(key: str, message: str) -> None:
        problems.append(ConfigError(message, location=f"{location}.{key}"))

    for key in sorted(set(options) - _KNOWN):
        bad(key, f"unknown option; expected one of: {', '.join(sorted(_KNOWN))}")
    try:
        opts = resolve(dict(options), location=location)
    except ConfigError as exc:
        return None, [exc]
    host = opts.get("host")
    if not isinstance(host, str) or not host.strip():
        bad("host", "'host' is required (the SMTP relay, e.g. smtp.example.com)")
        host = ""
    security = opts.get("security", "starttls")
    if security not in DEFAULT_PORTS:
        bad("security", "must be 'starttls', 'tls' or 'none'")
        security = "starttls"
    elif security == "none" and host and not _is_loopback(host):
        bad("security", "'none' (no TLS) is only allowed for a relay on loopback")
    port = opts.get("port", DEFAULT_PORTS[security])
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        bad("port", "must be a port number (1-65535)")
    pool_size = opts.get("pool_size", 4)
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or not 1 <= pool_size <= 100:
        bad("pool_size", "must be an integer from 1 to 100")
    tls_verify = opts.get("tls_verify", True)
    if not isinstance(tls_verify, bool):
        bad("tls_verify", "must be true or false")
    user, password, helo = opts.get("username"), opts.get("password"), opts.get("helo_name")
    for key, value in (("username", user), ("password", password), ("helo_name", helo)):
        if value is not None and not isinstance(value, str):
            bad(key, "must be a string")
    if (user is None) != (password is None):
        bad("password" if user is not None else "username", "username and password go together")
    if isinstance(helo, str) and not _HELO.match(helo):
        bad("helo_name", "must be a host name (letters, digits, dots and dashes)")
    sender = opts.get("from")
    for key in ("from", "envelope_from"):
        value = opts.get(key)
        if value is None and key == "envelope_from":
            continue
        try:
            email_message.parse_mailbox(value if isinstance(value, str) else "", key)
        except InputError:
            bad(key, "must be one email address, e.g. \"Shop <news@shop.example>\"")
    unsubscribe = opts.get("unsubscribe")
    if isinstance(unsubscribe, Mapping) and unsubscribe.get("url_template"):
        bad("unsubscribe.url_template",
            "is not supported yet; put the link in each message's content.unsubscribe_url")
    signer = None
    if opts.get("dkim") is not None:
        try:
            signer = email_message.DkimSigner.from_options(opts["dkim"], f"{location}.dkim")
        except ConfigError as exc:
            problems.append(exc)
    if problems:
        return None, problems
    return SmtpOptions(
        host=host.strip(), port=port, security=security, sender=sender, username=user,
        password=password, envelope_from=opts.get("envelope_from"), pool_size=pool_size,
        helo_name=helo, tls_verify=tls_verify, dkim=signer,
    ), []  # fmt: skip


MAX_RAW = 2048
_ENHANCED = re.compile(r"(?m)^\s*#?([245])\.(\d{1,3})\.(\d{1,3})\b")
_RELAY_DENIED = re.compile(
    r"relay(?:ing)?\s+(?:access\s+)?(?:denied|not\s+permitted|not\s+allowed)|unable\s+to\s+relay",
    re.IGNORECASE,
)
_NO_SUCH_USER = re.compile(
    r"user\s+unknown|unknown\s+user|no\s+such\s+(?:user|mailbox|recipient)|does\s*n[o']t\s+exist"
    r"|mailbox\s+not\s+found|invalid\s+(?:recipient|mailbox)",
    re.IGNORECASE,
)
_RELAY_THROTTLE = re.compile(r"throttl|sending\s+rate|message\s+quota", re.IGNORECASE)
_THROTTLED = re.compile(r"unusual\s+rate|rate.?limit|too\s+many|tss04|complaint|reputation", re.I)
_CONTENT = re.compile(r"\bcontent\b|\blinks\b", re.IGNORECASE)
_GREYLIST = re.compile(r"gr[ae]y.?list", re.IGNORECASE)

IR, RT, CR = taxonomy.INVALID_RECIPIENT, taxonomy.RECIPIENT_TEMPORARY, taxonomy.CONTENT_REJECTED
#: enhanced status code -> (cause, what it means, rate-limit scope), FAILURES.md §1.4
_RULES: dict[str, tuple[Cause, str, str | None]] = {
    "4.2.1": (taxonomy.RATE_LIMITED, "the recipient is receiving mail too fast", "recipient"),
    "4.2.2": (RT, "the recipient's mailbox is over quota", None),
    "4.3.0": (taxonomy.PROVIDER_OUTAGE, "temporary system problem at the relay", None),
    "4.4.1": (taxonomy.NETWORK_TIMEOUT, "the next hop did not answer", None),
    "4.4.2": (taxonomy.NETWORK_TIMEOUT, "the connection to the next hop timed out", None),
    "4.4.5": (taxonomy.PROVIDER_OUTAGE, "the relay is busy", None),
    "4.5.3": (taxonomy.UNKNOWN, "too many recipients, though we send one per message", None),
    "4.7.28": (taxonomy.RATE_LIMITED, "the receiving domain is rate-limiting us", "domain"),
    "5.1.1": (IR, "the mailbox does not exist", None),
    "5.1.2": (IR, "the recipient's domain does not exist or takes no mail", None),
    "5.1.3": (IR, "the recipient address is malformed", None),
    "5.1.6": (IR, "the mailbox has moved", None),
    "5.1.10": (IR, "the recipient's domain takes no mail (null MX)", None),
    "5.1.7": (taxonomy.SENDER_CONFIG, "our sender address is malformed", None),
    "5.1.8": (taxonomy.SENDER_CONFIG, "our sender's domain is refused", None),
    "5.2.1": (IR, "the mailbox is disabled", None),
    "5.2.2": (RT, "the recipient's mailbox is full", None),  # soft, whatever the 5
    "5.2.3": (CR, "the message is larger than the mailbox takes", None),
    "5.3.4": (CR, "the message is too large for the relay", None),
    "5.6.7": (IR, "the receiver does not take this non-ASCII address", None),
    "5.7.1": (CR, "the receiver refused the message (policy or spam filter)", None),
}


def _decide(code: int, enhanced: str, text: str, stage: str) -> tuple[Cause, str, str | None]:
    transient = 400 <= code < 500
    subject, detail = (int(x) for x in enhanced.split(".")[1:]) if enhanced else (-1, -1)
    if code in (530, 534, 535) or (subject, detail) in ((7, 8), (7, 9)) or (
        stage == "auth" and not transient
    ):
        return taxonomy.AUTH_CREDENTIALS, "the relay refused our SMTP credentials", None
    if code == 538:
        return taxonomy.SENDER_CONFIG, "the relay wants TLS before AUTH (set security)", None
    if stage in ("connect", "starttls", "auth"):
        if transient:
            return taxonomy.PROVIDER_OUTAGE, "the relay is not taking sessions right now", None
        return taxonomy.SENDER_CONFIG, "the relay refused our session", None
    if subject == 7 and (20 <= detail <= 27 or detail == 32):
        return taxonomy.SENDER_CONFIG, "sender authentication failed (SPF/DKIM/DMARC)", None
    if _RELAY_DENIED.search(text):
        return taxonomy.SENDER_CONFIG, "the relay does not relay for us (authenticate)", None
    if transient:
        if _RELAY_THROTTLE.search(text):
            return taxonomy.RATE_LIMITED, "the relay's rate or quota is exceeded", "provider"
        if subject in (-1, 7) and _CONTENT.search(text):
            return CR, "the receiver deferred us for the content or links", None
        if subject in (-1, 7) and _THROTTLED.search(text):
            return taxonomy.RATE_LIMITED, "the receiving domain is throttling us", "domain"
        if _GREYLIST.search(text):
            return RT, "greylisted; a later retry passes", None
    if enhanced in _RULES:
        cause, meaning, scope = _RULES[enhanced]
    elif transient:
        cause, meaning, scope = _transient_default(code, subject)
    elif subject == 5 or 500 <= code <= 504:
        cause, meaning, scope = taxonomy.UNKNOWN, "SMTP protocol error (a bug on one side)", None
    elif (code in (551, 553) or _NO_SUCH_USER.search(text)) and subject in (-1, 1):
        cause, meaning, scope = IR, "the recipient address was refused", None
    elif code == 552:
        cause, meaning, scope = CR, "the message is too large", None
    else:
        # Permanent for this message but unexplained: failing it (not retrying the same bytes,
        # not suppressing the address) is what a 5xx asks for.
        cause, meaning, scope = CR, "the relay refused the message permanently", None
    if stage == "mail" and cause in (IR, CR) and subject not in (2, 3) and code != 552:
        return taxonomy.SENDER_CONFIG, "the relay refused our sender (MAIL FROM)", None
    return cause, meaning, scope


def _transient_default(code: int, subject: int) -> tuple[Cause, str, str | None]:
    if subject == 2 or (subject == -1 and code == 450):
        return RT, "the mailbox is temporarily unavailable", None
    # 421 is the relay closing the session (RFC 5321 3.8), whatever the enhanced code says.
    if subject == 3 or code == 421 or (subject == -1 and code in (451, 452)):
        return taxonomy.PROVIDER_OUTAGE, "the relay has a temporary problem", None
    if subject == 4:
        return taxonomy.NETWORK_TIMEOUT, "a network or routing problem past the relay", None
    return taxonomy.UNKNOWN, "temporary refusal with an unrecognised code", None


def classify(code: int, message: str, *, stage: str = "rcpt") -> DeliveryError:
    """The failure an SMTP reply means (FAILURES.md §1.4).

    ``stage`` is where it came: ``connect``, ``starttls``, ``auth``, ``mail``, ``rcpt`` or
    ``data``. A refusal at ``mail`` is about our sender, never the recipient.
    """
    found = _ENHANCED.search(message)
    enhanced = ""
    if found and found.group(1) == str(code)[:1]:  # RFC 3463: the classes must agree
        enhanced = ".".join(str(int(g)) for g in found.groups())
    cause, meaning, scope = _decide(code, enhanced, message, stage)
    provider_code = f"{code} {enhanced}".strip()
    return DeliveryError(
        cause, f"{meaning} ({provider_code})", provider_code=provider_code, status=code,
        raw=message[:MAX_RAW], scope=scope,
    )  # fmt: skip


def _find(exc: BaseException, kind: type[ssl.SSLError]) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None or isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def translate(exc: BaseException, *, stage: str, host: str) -> DeliveryError:
    """The failure an aiosmtplib or socket error at ``stage`` means; ``maybe_sent`` after DATA."""
    sent = stage == "data"
    tls = _find(exc, ssl.SSLError)
    if tls is not None and not isinstance(tls, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        if isinstance(tls, ssl.SSLCertVerificationError):
            return DeliveryError(
                taxonomy.SENDER_CONFIG,
                f"the TLS certificate of {host} was refused ({tls.verify_message}); fix it, or "
                "set tls_verify = false for a test relay",
                provider_code="TLS_CERT",
            )
        return DeliveryError(
            taxonomy.SENDER_CONFIG,
            f"TLS with {host} failed ({tls.reason}); check security and port (tls is usually "
            "465, starttls 587)",
            provider_code="TLS_ERROR",
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code > 0:
        return classify(exc.code, exc.message, stage=stage)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return DeliveryError(
            taxonomy.UNKNOWN, f"{host} answered with something that is not SMTP",
            provider_code="BAD_RESPONSE", raw=exc.message[:MAX_RAW], maybe_sent=sent,
        )  # fmt: skip
    lost = "after the whole message was sent; it may have been delivered" if sent else stage
    if isinstance(exc, TimeoutError):
        return DeliveryError(
            taxonomy.NETWORK_TIMEOUT, f"no answer from {host} in time ({lost})",
            provider_code="TIMEOUT", maybe_sent=sent,
        )  # fmt: skip
    if isinstance(exc, aiosmtplib.SMTPConnectError):
        return DeliveryError(
            taxonomy.NETWORK_TIMEOUT, f"cannot connect: {exc}", provider_code="CONNECT_ERROR"
        )
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | OSError):
        return DeliveryError(
            taxonomy.NETWORK_TIMEOUT, f"connection to {host} lost ({lost})",
            provider_code="CONNECTION_RESET", maybe_sent=sent,
        )  # fmt: skip
    if stage in ("starttls", "auth"):
        # Refusing to go on beats sending in clear or unauthenticated.
        return DeliveryError(
            taxonomy.SENDER_CONFIG, f"{host} cannot do {stage.upper()}: {exc}",
            provider_code=f"{stage.upper()}_UNSUPPORTED",
        )  # fmt: skip
    return DeliveryError(
        taxonomy.UNKNOWN, f"SMTP client error: {exc}", provider_code=type(exc).__name__,
        maybe_sent=sent,
    )  # fmt: skip


class ConnectionPool:
    """At most ``size`` SMTP sessions, kept open between sends.

    A send takes a slot (waiting at most its timeout) and, if there is one, the most recently
    used idle session; it gives both back with :meth:`release`, keeping the session only if
    it is still sound. Sessions idle longer than ``max_idle`` are closed rather than reused,
    since relays drop idle clients (Postfix after 300 s, many hosted relays sooner).
    """

    def __init__(self, size: int, *, max_idle: float = 30.0) -> None:
        self.size = size
        self.max_idle = max_idle
        #: sessions opened so far
        self.opened = 0
        self._slots = asyncio.Semaphore(size)
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._closed = False

    async def acquire(self, wait: float) -> aiosmtplib.SMTP | None:
        """Take a slot and a live idle session, or None when the caller must open one."""
        try:
            async with asyncio.timeout(wait):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise DeliveryError(
                taxonomy.NETWORK_TIMEOUT,
                f"all {self.size} SMTP connections stayed busy for {wait:g} s",
                provider_code="POOL_TIMEOUT",
            ) from exc
        now = time.monotonic()
        while self._idle:
            smtp, since = self._idle.pop()
            if smtp.is_connected and now - since < self.max_idle:
                return smtp
            smtp.close()
        return None

    def release(self, smtp: aiosmtplib.SMTP | None, *, keep: bool) -> None:
        """Give the slot back, and the session too when ``keep`` (otherwise it is closed)."""
        if smtp is not None:
            if keep and not self._closed and smtp.is_connected:
                self._idle.append((smtp, time.monotonic()))
            else:
                smtp.close()
        self._slots.release()

    async def close(self) -> None:
        """Say QUIT to every idle session; sessions in use are closed when released."""
        self._closed = True
        idle, self._idle = self._idle, []
        for smtp, _ in idle:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await smtp.quit()
            smtp.close()


class SmtpProvider(Provider):
    """Sends the ``email`` channel through one SMTP relay."""

    meta = ProviderMeta(
        type="smtp",
        channels=frozenset({"email"}),
        secret_options=frozenset({"password", "dkim"}),
        max_payload_bytes=email_message.MAX_BODY_BYTES,
        description="SMTP relay (STARTTLS/TLS, pooled connections, DKIM, one-click unsubscribe)",
    )

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        options, problems = parse_options(config.options, location=f"providers.{config.name}")
        if options is None:
            raise problems[0]
        self.options = options
        self.pool = ConnectionPool(options.pool_size)
        self._helo = options.helo_name

    @classmethod
    def check_options(cls, config: ProviderConfig, *, location: str) -> list[ConfigError]:
        return parse_options(config.options, location=location)[1]

    @classmethod
    def validate_content(cls, channel: str, content: Mapping[str, Any]) -> None:
        email_message.validate_content(content)

    async def start(self) -> None:
        if self._helo is None:
            # Once per provider: aiosmtplib would otherwise look it up on every connection.
            self._helo = await asyncio.to_thread(socket.getfqdn)

    async def close(self) -> None:
        await self.pool.close()

    def compose(self, delivery: Delivery) -> email_message.Outgoing:
        """The signed message for ``delivery`` (raises ``DeliveryError`` if it cannot be)."""
        try:
            return email_message.build(
                delivery.to,
                delivery.content,
                message_id=delivery.message_id,
                default_from=self.options.sender,
                envelope_from=self.options.envelope_from,
                signer=self.options.dkim,
            )
        except InputError as exc:
            raise DeliveryError(
                taxonomy.VALIDATION_ERROR, str(exc), provider_code="BAD_CONTENT"
            ) from exc
        except dkim.DKIMException as exc:
            raise DeliveryError(
                taxonomy.SENDER_CONFIG, f"DKIM signing failed: {exc}", provider_code="DKIM"
            ) from exc

    async def send(self, delivery: Delivery) -> Receipt:
        out = self.compose(delivery)
        timeout = self.config.timeout
        smtp = await self.pool.acquire(timeout)
        # One deadline for connecting and the whole transaction, so a send cannot outlive it.
        deadline = asyncio.get_running_loop().time() + timeout
        keep = False
        try:
            reply = None
            if smtp is not None:
                reply = await self._transact(smtp, out, deadline, reused=True)
            if reply is None:
                if smtp is not None:
                    smtp.close()  # the relay closed it while it sat idle
                    smtp = None
                smtp = await self._connect(deadline)
                reply = await self._transact(smtp, out, deadline, reused=False)
            assert reply is not None
            keep = True
        except DeliveryError as err:
            keep = smtp is not None and await self._recover(smtp, err)
            raise
        finally:
            self.pool.release(smtp, keep=keep)
        return Receipt(
            status=reply.code,
            provider_message_id=out.message_id,
            detail=f"{reply.code} {reply.message}"[:200],
        )

    async def check(self) -> bool:
        """Connect, STARTTLS and log in as a send would, then QUIT."""
        smtp = await self._connect(asyncio.get_running_loop().time() + self.config.timeout)
        try:
            await smtp.quit()
        except Exception:  # the check passed; a relay closing rudely at QUIT is not its fault
            smtp.close()
        return True

    async def _connect(self, deadline: float) -> aiosmtplib.SMTP:
        o = self.options
        if self._helo is None:
            await self.start()
        try:
            await self.context.guard.check_host_async(o.host, field=f"providers.{self.name}.host")
        except InputError as exc:
            raise DeliveryError(
                taxonomy.SENDER_CONFIG, exc.problem, provider_code="SSRF_BLOCKED"
            ) from exc
        smtp = aiosmtplib.SMTP(
            hostname=o.host,
            port=o.port,
            timeout=self.config.timeout,
            use_tls=o.security == "tls",
            start_tls=False,
            validate_certs=o.tls_verify,
            local_hostname=self._helo,
        )
        stage = "connect"
        try:
            async with asyncio.timeout_at(deadline):
                await smtp.connect()
                if o.security == "starttls":
                    stage = "starttls"
                    await smtp.starttls()
                if o.username is not None:
                    stage = "auth"
                    await smtp.login(o.username, o.password or "")
                stage = "connect"
                if smtp.is_ehlo_or_helo_needed:
                    await smtp.ehlo()  # the extensions (SIZE, SMTPUTF8) are needed before MAIL
        except Exception as exc:
            smtp.close()
            raise translate(exc, stage=stage, host=o.host) from exc
        except BaseException:  # cancelled: leave no half-open session behind
            smtp.close()
            raise
        self.pool.opened += 1
        return smtp

    async def _transact(
        self, smtp: aiosmtplib.SMTP, out: email_message.Outgoing, deadline: float, *, reused: bool
    ) -> aiosmtplib.SMTPResponse | None:
        """The reply to DATA; None when a reused connection turned out to be closed."""
        options, encoding = [], "ascii"
        if out.smtputf8:
            if not smtp.supports_extension("smtputf8"):
                raise DeliveryError(
                    taxonomy.CONTENT_REJECTED,
                    "an address has a non-ASCII local part and the relay lacks SMTPUTF8",
                    provider_code="SMTPUTF8_UNSUPPORTED",
                )
            options.append("SMTPUTF8")
            encoding = "utf-8"
        if smtp.supports_extension("size"):
            options.append(f"SIZE={len(out.data)}")  # lets the relay refuse a too-big message early
        stage = "mail"
        try:
            async with asyncio.timeout_at(deadline):
                await smtp.mail(out.envelope_from, options=options, encoding=encoding)
                stage = "rcpt"
                await smtp.rcpt(out.to, encoding=encoding)
                stage = "data"
                return await smtp.data(out.data)
        except Exception as exc:
            if reused and stage == "mail" and _closed_while_idle(exc):
                return None
            raise translate(exc, stage=stage, host=self.options.host) from exc

    @staticmethod
    async def _recover(smtp: aiosmtplib.SMTP, err: DeliveryError) -> bool:
        """After a refusal the session is still sound: RSET it and keep it in the pool."""
        if err.status is None or err.status == 421 or not smtp.is_connected:
            return False
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await smtp.rset()
            return True
        return False


def _closed_while_idle(exc: BaseException) -> bool:
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return True
    return isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code == 421
