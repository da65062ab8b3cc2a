"""The smtp provider against the sandbox's SMTP relay (aiosmtpd) on loopback.

Accepted mail arrives as built (DKIM verified with dkimpy), sessions are reused, every fault
the relay can produce maps to the right cause, and the classifier is checked against the real
replies quoted in FAILURES.md §1.4.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from pushguard import taxonomy
from pushguard.config import ProviderConfig
from pushguard.exceptions import ConfigError, DeliveryError, HeaderInjection, InputError
from pushguard.providers.base import Delivery, ProviderContext
from pushguard.providers.email_message import MAX_BODY_BYTES
from pushguard.providers.smtp import ConnectionPool, SmtpProvider, classify
from pushguard.sandbox.profiles import Profiles
from pushguard.sandbox.recorder import Recorder
from pushguard.sandbox.smtp import SmtpServer
from pushguard.settings import Settings
from pushguard.ssrf import OutboundGuard

FROM = "Shop <news@shop.example>"
CONTEXT = ProviderContext(Settings(outbound_allow="127.0.0.1"), OutboundGuard.from_env("127.0.0.1"))
CONTENT = {"subject": "Spring sale", "text": "Hello!\n.dot line\n", "html": "<p>Hello!</p>"}


@dataclass
class Relay:
    server: SmtpServer
    port: int
    recorder: Recorder

    def last(self) -> EmailMessage:
        msg = message_from_bytes(self.server.handler.messages[-1], policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


RelayFactory = Callable[..., Awaitable[Relay]]
ProviderFactory = Callable[..., SmtpProvider]


@pytest.fixture
async def relays() -> AsyncIterator[RelayFactory]:
    started: list[Relay] = []

    async def start(profile: dict[str, Any] | None = None, **options: Any) -> Relay:
        recorder = Recorder()
        server = SmtpServer(
            Profiles.from_obj({"smtp": profile or {}}), recorder, keep_messages=50, **options
        )
        relay = Relay(server, await server.start(), recorder)
        started.append(relay)
        return relay

    yield start
    for relay in started:
        await relay.server.stop()
        relay.recorder.close()


@pytest.fixture
async def relay(relays: RelayFactory) -> Relay:
    return await relays()


@pytest.fixture
async def providers() -> AsyncIterator[ProviderFactory]:
    made: list[SmtpProvider] = []

    def make(port: int, *, timeout: float = 2.0, **options: Any) -> SmtpProvider:
        opts = {"host": "127.0.0.1", "port": port, "security": "none", "from": FROM,
                "helo_name": "client.pushguard.test", **options}
        provider = SmtpProvider(ProviderConfig("mail", "smtp", opts, timeout=timeout), CONTEXT)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.close()


def delivery(to: str = "alice@example.com", message_id: str = "msg_1", **content: Any) -> Delivery:
    return Delivery(message_id, "email", to, {**CONTENT, **content}, None, 1, 1, 2e9)


async def failure(provider: SmtpProvider, d: Delivery) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        await provider.send(d)
    return caught.value


# -- accepted mail -------------------------------------------------------------------------


async def test_accepted_mail_arrives_as_built(relay: Relay, providers: ProviderFactory) -> None:
    provider = providers(relay.port)
    await provider.start()
    receipt = await provider.send(delivery(
        reply_to="Help <help@shop.example>",
        headers={"X-Campaign": "spring-2024"},
        unsubscribe_url="https://shop.example/u/abc?t=1",
        topic_kind="marketing",
    ))  # fmt: skip
    assert receipt.status == 250 and receipt.provider_message_id == "<msg_1@shop.example>"
    [record] = relay.recorder.records("smtp")
    assert record.meta["from"] == "news@shop.example"
    assert record.meta["rcpts"] == ["alice@example.com"]
    msg = relay.last()
    assert (msg["Subject"], msg["From"], msg["To"]) == ("Spring sale", FROM, "alice@example.com")
    assert msg["Reply-To"] == "Help <help@shop.example>"
    assert msg["Message-ID"] == "<msg_1@shop.example>"
    assert msg["X-Campaign"] == "spring-2024"
    assert msg["List-Unsubscribe"] == "<https://shop.example/u/abc?t=1>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_content_type() == "multipart/alternative"
    text, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert text is not None
    assert text.get_content().replace("\r\n", "\n") == "Hello!\n.dot line\n"  # unstuffed
    assert html is not None and html.get_content().strip() == "<p>Hello!</p>"


async def test_text_only_and_html_only(relay: Relay, providers: ProviderFactory) -> None:
    provider = providers(relay.port)
    await provider.send(Delivery("m1", "email", "a@example.com", {"subject": "t", "text": "x"},
                                 None, 1, 1, 2e9))
    assert relay.last().get_content_type() == "text/plain"
    await provider.send(Delivery("m2", "email", "a@example.com", {"subject": "h", "html": "<b>"},
                                 None, 1, 1, 2e9))
    assert relay.last().get_content_type() == "text/html"


async def test_a_retry_carries_the_same_message_id(
    relay: Relay, providers: ProviderFactory
) -> None:
    provider = providers(relay.port)
    first = await provider.send(delivery(message_id="msg_0192abc"))
    again = await provider.send(delivery(message_id="msg_0192abc"))
    ids = [r.meta["message_id"] for r in relay.recorder.records("smtp")]
    assert ids == ["<msg_0192abc@shop.example>"] * 2
    assert first.provider_message_id == again.provider_message_id == ids[0]


async def test_content_from_and_a_long_unsubscribe_url_stay_readable(
    relay: Relay, providers: ProviderFactory
) -> None:
    url = "https://shop.example/unsubscribe/" + "a" * 300 + "?list=spring&u=42"
    await providers(relay.port).send(
        delivery(unsubscribe_url=url, **{"from": "Deals <deals@deals.example>"})
    )
    msg = relay.last()
    # Folded or RFC 2047-encoded, a receiver could not follow it; it stays one plain line.
    assert msg["List-Unsubscribe"] == f"<{url}>"
    assert msg["Message-ID"] == "<msg_1@deals.example>"
    assert relay.recorder.records("smtp")[0].meta["from"] == "deals@deals.example"


async def test_non_ascii_mailbox_goes_with_smtputf8(
    relay: Relay, providers: ProviderFactory
) -> None:
    await providers(relay.port).send(delivery(to="jörg@example.com", subject="Grüße"))
    assert relay.recorder.records("smtp")[0].meta["rcpts"] == ["jörg@example.com"]
    assert relay.last()["Subject"] == "Grüße"


# -- DKIM ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dkim_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def dns_for(key: rsa.RSAPrivateKey) -> Callable[..., bytes | None]:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)

    def txt(name: bytes, timeout: float = 5) -> bytes | None:
        return record if name == b"s2024._domainkey.shop.example." else None

    return txt


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def signed_headers(raw: bytes) -> list[str]:
    found = re.search(rb"DKIM-Signature:(.*?)\r\n(?=\S)", raw, re.DOTALL)
    assert found is not None
    tags = dict(
        part.strip().split("=", 1)
        for part in re.sub(r"\s+", "", found.group(1).decode()).split(";")
        if part
    )
    return tags["h"].split(":")


async def test_dkim_signature_verifies_and_covers_list_unsubscribe(
    relay: Relay, providers: ProviderFactory, dkim_key: rsa.RSAPrivateKey
) -> None:
    key = {"selector": "s2024", "domain": "shop.example", "private_key": pem(dkim_key)}
    provider = providers(relay.port, dkim=key)
    await provider.send(delivery(unsubscribe_url="https://shop.example/u/abc"))
    raw = relay.server.handler.messages[-1]
    assert relay.recorder.records("smtp")[0].meta["dkim_signature"] is True
    assert dkim.verify(raw, dnsfunc=dns_for(dkim_key))
    signed = signed_headers(raw)
    for name in ("from", "subject", "list-unsubscribe", "list-unsubscribe-post", "message-id"):
        assert name in signed
    # ...so a relay that rewrites the unsubscribe link breaks the signature.
    tampered = raw.replace(b"https://shop.example/u/abc", b"https://evil.example/u/abc")
    assert not dkim.verify(tampered, dnsfunc=dns_for(dkim_key))


async def test_dkim_key_from_env_with_escaped_newlines(
    relay: Relay,
    providers: ProviderFactory,
    dkim_key: rsa.RSAPrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOP_DKIM_KEY", pem(dkim_key).replace("\n", "\\n"))
    provider = providers(relay.port, dkim={
        "selector": "s2024", "domain": "shop.example", "private_key": "env:SHOP_DKIM_KEY",
        "headers": ["From", "To"],
    })  # fmt: skip
    await provider.send(delivery(unsubscribe_url="https://shop.example/u/abc"))
    raw = relay.server.handler.messages[-1]
    assert dkim.verify(raw, dnsfunc=dns_for(dkim_key))
    # From, Subject and the List-Unsubscribe pair are signed whatever the option says.
    assert {"from", "to", "subject", "list-unsubscribe", "list-unsubscribe-post"} <= set(
        signed_headers(raw)
    )
    assert "***" in str(provider.describe()["options"]["dkim"])


# -- connection pool -------------------------------------------------------------------------


async def test_sessions_are_reused_within_pool_size(
    relay: Relay, providers: ProviderFactory
) -> None:
    provider = providers(relay.port, pool_size=2)
    sends = [provider.send(delivery(f"u{i}@example.com", f"m{i}")) for i in range(12)]
    await asyncio.gather(*sends)
    for i in range(6):
        await provider.send(delivery(f"v{i}@example.com", f"n{i}"))
    assert len(relay.recorder.records("smtp")) == 18
    assert relay.server.connections <= 2 and provider.pool.opened == relay.server.connections


async def test_a_refusal_keeps_the_session_a_reset_replaces_it(
    relay: Relay, providers: ProviderFactory
) -> None:
    provider = providers(relay.port, pool_size=1)
    dead = await failure(provider, delivery("dead@example.com"))
    assert dead.cause is taxonomy.INVALID_RECIPIENT
    await provider.send(delivery())
    assert relay.server.connections == 1  # RSET, then the same session carried on
    relay.server.handler.profiles.set({"rates": {"reset": 1.0}}, "smtp")
    assert (await failure(provider, delivery())).cause is taxonomy.NETWORK_TIMEOUT
    relay.server.handler.profiles.set({}, "smtp")
    await provider.send(delivery())
    assert relay.server.connections == 2


async def test_a_session_the_relay_closed_is_replaced(
    relay: Relay, providers: ProviderFactory
) -> None:
    provider = providers(relay.port)
    await provider.send(delivery(message_id="m1"))
    relay.server.drop_connections()  # what a relay's idle timeout does
    await provider.send(delivery(message_id="m2"))
    assert [r.outcome for r in relay.recorder.records("smtp")] == ["250", "250"]
    assert relay.server.connections == 2


async def test_pool_waits_for_a_free_slot_then_gives_up() -> None:
    pool = ConnectionPool(1)
    assert await pool.acquire(1.0) is None  # a slot, and no idle session yet
    with pytest.raises(DeliveryError) as caught:
        await pool.acquire(0.05)
    assert (caught.value.cause, caught.value.provider_code, caught.value.maybe_sent) == (
        taxonomy.NETWORK_TIMEOUT, "POOL_TIMEOUT", False
    )
    pool.release(None, keep=False)
    assert await pool.acquire(0.05) is None


# -- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "profile", "cause", "code", "scope"),
    [
        ("dead@example.com", {}, taxonomy.INVALID_RECIPIENT, "550 5.1.1", None),
        ("invalid@example.com", {}, taxonomy.INVALID_RECIPIENT, "553 5.1.3", None),
        ("bob@example.com", {"rates": {"410": 1.0}}, taxonomy.INVALID_RECIPIENT, "550 5.1.1", None),
        ("bob@example.com", {"rates": {"429": 1.0}}, taxonomy.RATE_LIMITED, "450 4.2.1",
         "recipient"),
        ("bob@example.com", {"rates": {"503": 1.0}}, taxonomy.PROVIDER_OUTAGE, "421 4.3.0", None),
        ("bob@example.com", {"rates": {"500": 1.0}}, taxonomy.PROVIDER_OUTAGE, "421 4.3.0", None),
        ("bob@example.com", {"rates": {"html": 1.0}}, taxonomy.PROVIDER_OUTAGE, "421 4.3.0", None),
        ("bob@example.com", {"rates": {"401": 1.0}}, taxonomy.AUTH_CREDENTIALS, "535 5.7.8", None),
        ("bob@example.com", {"rates": {"403": 1.0}}, taxonomy.CONTENT_REJECTED, "550 5.7.1", None),
        ("bob@example.com", {"rates": {"413": 1.0}}, taxonomy.CONTENT_REJECTED, "552 5.3.4", None),
        ("bob@example.com", {"rates": {"400": 1.0}}, taxonomy.UNKNOWN, "501 5.5.4", None),
    ],
)  # fmt: skip
async def test_relay_refusals(
    relays: RelayFactory,
    providers: ProviderFactory,
    to: str,
    profile: dict[str, Any],
    cause: taxonomy.Cause,
    code: str,
    scope: str | None,
) -> None:
    relay = await relays(profile)
    err = await failure(providers(relay.port), delivery(to))
    assert (err.cause, err.provider_code, err.scope, err.maybe_sent) == (cause, code, scope, False)
    assert err.status == int(code[:3]) and err.raw and code[4:] in err.raw
    assert not relay.server.handler.messages  # nothing was taken


async def test_reset_before_data_was_not_sent(
    relays: RelayFactory, providers: ProviderFactory
) -> None:
    relay = await relays({"rates": {"reset": 1.0}})
    err = await failure(providers(relay.port), delivery())
    assert (err.cause, err.provider_code, err.maybe_sent) == (
        taxonomy.NETWORK_TIMEOUT, "CONNECTION_RESET", False
    )


async def test_a_hanging_relay_times_out(relays: RelayFactory, providers: ProviderFactory) -> None:
    relay = await relays({"timeout_s": 10})
    err = await failure(providers(relay.port, timeout=0.5), delivery("slow@example.com"))
    assert (err.cause, err.provider_code, err.maybe_sent) == (
        taxonomy.NETWORK_TIMEOUT, "TIMEOUT", False
    )


async def test_connection_dropped_after_data_may_have_been_sent(
    relay: Relay, providers: ProviderFactory
) -> None:
    err = await failure(providers(relay.port), delivery("dropdata@example.com"))
    assert (err.cause, err.provider_code, err.maybe_sent) == (
        taxonomy.NETWORK_TIMEOUT, "CONNECTION_RESET", True
    )
    [record] = relay.recorder.records("smtp")
    assert record.outcome == "dropdata"  # the relay did get the whole message


async def test_connection_refused(providers: ProviderFactory) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = await failure(providers(port), delivery())
    assert (err.cause, err.provider_code, err.maybe_sent) == (
        taxonomy.NETWORK_TIMEOUT, "CONNECT_ERROR", False
    )


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[bytes], Awaitable[int]]]:
    """A listener that greets every connection with fixed bytes, then waits."""
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(greeting: bytes) -> int:
        async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            writer.write(greeting)
            await writer.drain()

        server = await asyncio.start_server(greet, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for writer in writers:
        writer.close()
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("greeting", "cause", "code"),
    [
        (b"<html><body>502 Bad Gateway</body></html>\r\n", taxonomy.UNKNOWN, "BAD_RESPONSE"),
        (b"421 4.3.0 Service not available, try later\r\n", taxonomy.PROVIDER_OUTAGE, "421 4.3.0"),
        (b"554 5.7.1 Your IP is on our block list\r\n", taxonomy.SENDER_CONFIG, "554 5.7.1"),
    ],
)
async def test_greeting(
    raw_server: Callable[[bytes], Awaitable[int]],
    providers: ProviderFactory,
    greeting: bytes,
    cause: taxonomy.Cause,
    code: str,
) -> None:
    err = await failure(providers(await raw_server(greeting)), delivery())
    assert (err.cause, err.provider_code, err.maybe_sent) == (cause, code, False)


async def test_relay_host_refused_by_the_ssrf_guard(providers: ProviderFactory) -> None:
    err = await failure(providers(25, host="10.1.2.3", security="tls"), delivery())
    assert (err.cause, err.provider_code) == (taxonomy.SENDER_CONFIG, "SSRF_BLOCKED")


# -- AUTH ------------------------------------------------------------------------------------


async def test_auth(relays: RelayFactory, providers: ProviderFactory) -> None:
    relay = await relays(credentials=("mailer", "s3cret-pw"))
    await providers(relay.port, username="mailer", password="s3cret-pw").send(delivery())
    wrong = await failure(providers(relay.port, username="mailer", password="wrong-pw"), delivery())
    assert (wrong.cause, wrong.provider_code) == (taxonomy.AUTH_CREDENTIALS, "535 5.7.8")
    assert "wrong-pw" not in f"{wrong} {wrong.raw} {wrong.detail}"
    missing = await failure(providers(relay.port), delivery())
    assert (missing.cause, missing.provider_code) == (taxonomy.AUTH_CREDENTIALS, "530 5.7.0")
    assert len(relay.recorder.records("smtp")) == 1


async def test_password_from_env_is_masked(
    relay: Relay, providers: ProviderFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "from-env")
    provider = providers(relay.port, username="u", password="env:SMTP_PASSWORD")
    assert provider.options.password == "from-env"
    assert provider.describe()["options"]["password"] == "***"
    assert "from-env" not in repr(provider.options)


# -- TLS -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A TLS context with a self-signed certificate for 127.0.0.1."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.pushguard.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    folder: Path = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_text(pem(key))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


async def test_implicit_tls(
    relays: RelayFactory, providers: ProviderFactory, server_tls: ssl.SSLContext
) -> None:
    relay = await relays(ssl_context=server_tls)
    await providers(relay.port, security="tls", tls_verify=False).send(delivery())
    assert relay.recorder.records("smtp")[0].meta["tls"] is True
    err = await failure(providers(relay.port, security="tls"), delivery())  # verify by default
    assert (err.cause, err.provider_code) == (taxonomy.SENDER_CONFIG, "TLS_CERT")


async def test_starttls(
    relays: RelayFactory, providers: ProviderFactory, server_tls: ssl.SSLContext
) -> None:
    relay = await relays(starttls_context=server_tls, credentials=("mailer", "pw"))
    provider = providers(
        relay.port, security="starttls", tls_verify=False, username="mailer", password="pw"
    )
    await provider.send(delivery())
    assert relay.recorder.records("smtp")[0].meta["tls"] is True


async def test_tls_that_cannot_happen_is_a_config_problem(
    relay: Relay, providers: ProviderFactory
) -> None:
    no_starttls = await failure(providers(relay.port, security="starttls"), delivery())
    assert (no_starttls.cause, no_starttls.provider_code) == (
        taxonomy.SENDER_CONFIG, "STARTTLS_UNSUPPORTED"
    )
    plain_port = await failure(providers(relay.port, security="tls", tls_verify=False), delivery())
    assert (plain_port.cause, plain_port.provider_code) == (taxonomy.SENDER_CONFIG, "TLS_ERROR")
    assert relay.recorder.records("smtp") == []


# -- the classifier, on the replies quoted in FAILURES.md §1.4 ------------------------------


@pytest.mark.parametrize(
    ("code", "text", "cause", "scope"),
    [
        (421, "4.3.0 Temporary System Problem. Try again later.", "PROVIDER_OUTAGE", None),
        (421, "4.4.5 Server busy, try again later.", "PROVIDER_OUTAGE", None),
        (421, "4.7.0 Our system has detected an unusual rate of unsolicited mail originating "
              "from your IP address. To protect our users from spam, mail sent from your IP "
              "address has been temporarily blocked.", "RATE_LIMITED", "domain"),
        (421, "4.7.28 Our system has detected an unusual rate of unsolicited mail originating "
              "from your IP address; temporarily rate limited.", "RATE_LIMITED", "domain"),
        (421, "4.7.0 [TSS04] Messages from 203.0.113.5 temporarily deferred due to unexpected "
              "volume or user complaints", "RATE_LIMITED", "domain"),
        (421, "4.7.0 This message is suspicious due to the very low reputation of the sending "
              "domain.", "RATE_LIMITED", "domain"),
        (421, "4.7.0 This message is suspicious due to the nature of the content and/or the "
              "links within.", "CONTENT_REJECTED", None),
        (421, "4.7.32 Your email has been rate limited because the From: header (RFC5322) in "
              "this message isn't aligned with either the authenticated SPF or DKIM "
              "organizational domain.", "SENDER_CONFIG", None),
        (450, "4.2.1 The user you are trying to contact is receiving mail at a rate that "
              "prevents additional messages from being delivered.", "RATE_LIMITED", "recipient"),
        (451, "4.4.2 Timeout - closing connection.", "NETWORK_TIMEOUT", None),
        (451, "4.3.0 Mail server temporarily rejected message.", "PROVIDER_OUTAGE", None),
        (452, "4.2.2 The email account that you tried to reach is over quota.",
         "RECIPIENT_TEMPORARY", None),
        (452, "4.5.3 Your message has too many recipients.", "UNKNOWN", None),
        (451, "4.7.1 Greylisted, please try again in 300 seconds", "RECIPIENT_TEMPORARY", None),
        (454, "4.7.0 Throttling failure: Maximum sending rate exceeded.", "RATE_LIMITED",
         "provider"),
        (450, "Mailbox busy", "RECIPIENT_TEMPORARY", None),
        (421, "4.7.0 Try again later, closing connection.", "PROVIDER_OUTAGE", None),
        (451, "4.7.1 Please try again later", "UNKNOWN", None),
        (499, "4.9.9 something new", "UNKNOWN", None),
        (550, "5.1.1 The email account that you tried to reach does not exist.",
         "INVALID_RECIPIENT", None),
        (553, "5.1.2 We weren't able to find the recipient domain.", "INVALID_RECIPIENT", None),
        (553, "5.1.3 bad address syntax", "INVALID_RECIPIENT", None),
        (550, "5.1.6 Recipient address has changed", "INVALID_RECIPIENT", None),
        (550, "5.2.1 The email account that you tried to reach is disabled.",
         "INVALID_RECIPIENT", None),
        (552, "5.2.2 The email account that you tried to reach is over quota.",
         "RECIPIENT_TEMPORARY", None),
        (552, "5.2.3 Message exceeds the recipient's size limit", "CONTENT_REJECTED", None),
        (552, "5.3.4 Your message exceeded Google's message size limits.", "CONTENT_REJECTED",
         None),
        (553, "5.6.7 Non-ASCII addresses are not permitted", "INVALID_RECIPIENT", None),
        (550, "5.7.1 Our system has detected that this message is likely unsolicited mail.",
         "CONTENT_REJECTED", None),
        (554, "5.7.1 Message rejected due to content restrictions", "CONTENT_REJECTED", None),
        (554, "5.7.1 <bob@example.com>: Relay access denied", "SENDER_CONFIG", None),
        (550, "5.7.23 The message was not sent because SPF validation failed.",
         "SENDER_CONFIG", None),
        (550, "5.7.26 This mail has been blocked because the sender is unauthenticated.",
         "SENDER_CONFIG", None),
        (550, "5.7.27 The sender domain does not pass SPF.", "SENDER_CONFIG", None),
        (535, "5.7.8 Username and Password not accepted.", "AUTH_CREDENTIALS", None),
        (530, "5.7.0 Authentication Required.", "AUTH_CREDENTIALS", None),
        (550, "Requested action not taken: user unknown", "INVALID_RECIPIENT", None),
        (550, "Requested action not taken: mailbox unavailable", "CONTENT_REJECTED", None),
        (500, "5.5.1 Command unrecognized", "UNKNOWN", None),
        (599, "5.9.9 something new", "CONTENT_REJECTED", None),
    ],
)  # fmt: skip
def test_classify(code: int, text: str, cause: str, scope: str | None) -> None:
    err = classify(code, text)
    assert (err.cause.name, err.scope, err.status) == (cause, scope, code)
    expected = f"{code} {text.split()[0]}" if text[0].isdigit() else str(code)
    assert err.provider_code == expected
    assert err.raw == text and f"({err.provider_code})" in err.detail


def test_classify_by_stage() -> None:
    assert classify(550, "5.1.1 No such user", stage="mail").cause is taxonomy.SENDER_CONFIG
    assert classify(550, "5.1.1 No such user", stage="data").cause is taxonomy.INVALID_RECIPIENT
    assert classify(552, "5.3.4 Too big", stage="mail").cause is taxonomy.CONTENT_REJECTED
    assert classify(554, "No SMTP service here", stage="connect").cause is taxonomy.SENDER_CONFIG
    assert classify(421, "Too busy", stage="connect").cause is taxonomy.PROVIDER_OUTAGE
    assert classify(454, "4.7.0 Temporary auth failure", stage="auth").cause is (
        taxonomy.PROVIDER_OUTAGE
    )
    assert classify(550, "4.2.2 classes disagree").provider_code == "550"
    assert len(classify(550, "5.1.1 " + "x" * 10_000).raw or "") == 2048


# -- validate_content ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ({"text": "x"}, "content.subject"),
        ({"subject": "  ", "text": "x"}, "content.subject"),
        ({"subject": "s" * 999, "text": "x"}, "content.subject"),
        ({"subject": 5, "text": "x"}, "content.subject"),
        ({"subject": "s"}, "content.text"),
        ({"subject": "s", "text": "x" * (MAX_BODY_BYTES + 1)}, "content.text"),
        ({"subject": "s", "text": "x", "headers": {"Bcc": "a@example.com"}},
         "content.headers.Bcc"),
        ({"subject": "s", "text": "x", "headers": {"X-A": 1}}, "content.headers.X-A"),
        ({"subject": "s", "text": "x", "headers": ["X-A"]}, "content.headers"),
        ({"subject": "s", "text": "x", "from": "not an address"}, "content.from"),
        ({"subject": "s", "text": "x", "reply_to": "a@example.com, b@example.com"},
         "content.reply_to"),
        ({"subject": "s", "text": "x", "unsubscribe_url": "http://shop.example/u"},
         "content.unsubscribe_url"),
        ({"subject": "s", "text": "x", "unsubscribe_url": "https://shop.example/u>, <x"},
         "content.unsubscribe_url"),
        ({"subject": "s", "text": "x", "topic_kind": "newsletter"}, "content.topic_kind"),
        ({"subject": "s", "text": "x", "attachments": []}, "content.attachments"),
    ],
)  # fmt: skip
def test_validate_content_refuses(content: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as caught:
        SmtpProvider.validate_content("email", content)
    assert caught.value.field == field


@pytest.mark.parametrize("bad", ["a\r\nBcc: x@example.com", "a\nb", "a\rb", "a\x00b", "a\u2028b"])
@pytest.mark.parametrize(
    "where", ["subject", "from", "reply_to", "unsubscribe_url", "header_value", "header_name"]
)
def test_header_injection_is_refused(bad: str, where: str) -> None:
    content: dict[str, Any] = {"subject": "s", "text": "x"}
    if where == "header_value":
        content["headers"] = {"X-Campaign": bad}
    elif where == "header_name":
        content["headers"] = {"X-" + bad: "v"}
    else:
        content[where] = bad if where == "subject" else f"a@example.com{bad}"
    with pytest.raises(InputError) as caught:
        SmtpProvider.validate_content("email", content)
    assert where.split("_")[0] in caught.value.field or "headers" in caught.value.field
    if where != "header_name":
        assert isinstance(caught.value, HeaderInjection)


def test_validate_content_accepts_the_full_schema() -> None:
    SmtpProvider.validate_content("email", {
        **CONTENT, "from": FROM, "reply_to": "help@shop.example",
        "headers": {"X-Campaign": "spring", "x-list": "a"},
        "unsubscribe_url": "https://shop.example/u/1", "topic_kind": "transactional",
    })  # fmt: skip


# -- options ---------------------------------------------------------------------------------


def problems(**options: Any) -> list[str]:
    base = {"host": "smtp.example.com", "from": FROM}
    config = ProviderConfig("mail", "smtp", {**base, **options})
    return [e.location.rsplit(".", 1)[-1] for e in SmtpProvider.check_options(config, location="p")]


def test_check_options() -> None:
    assert problems() == []
    assert problems(host=None) == ["host"]
    assert problems(security="ssl") == ["security"]
    assert problems(security="none") == ["security"]  # clear text only to loopback
    assert problems(host="127.0.0.1", security="none") == []
    assert problems(port=0) == ["port"]
    assert problems(pool_size=0) == ["pool_size"]
    assert problems(tls_verify="no") == ["tls_verify"]
    assert problems(username="u") == ["password"]
    assert problems(password="p") == ["username"]
    assert problems(helo_name="bad name\r\nRSET") == ["helo_name"]
    assert problems(**{"from": "nobody"}) == ["from"]
    assert problems(passwd="x") == ["passwd"]
    assert problems(unsubscribe={"url_template": "https://x/{id}"}) == ["url_template"]
    assert problems(dkim={"selector": "s", "domain": "d"}) == ["private_key"]
    assert problems(dkim={"selector": "s", "domain": "d", "private_key": "nope"}) == [
        "private_key"
    ]
    assert problems(password="env:PUSHGUARD_NOT_SET_ANYWHERE", username="u") == ["password"]


def test_constructor_raises_the_first_problem() -> None:
    with pytest.raises(ConfigError, match="host"):
        SmtpProvider(ProviderConfig("mail", "smtp", {"from": FROM}), CONTEXT)


async def test_content_that_skipped_intake_is_refused_at_send(
    relay: Relay, providers: ProviderFactory
) -> None:
    bad = Delivery("m1", "email", "a@example.com", {"subject": "a\r\nBcc: x@example.com",
                                                    "text": "x"}, None, 1, 1, 2e9)
    err = await failure(providers(relay.port), bad)
    assert (err.cause, err.provider_code) == (taxonomy.VALIDATION_ERROR, "BAD_CONTENT")
    assert relay.server.connections == 0
