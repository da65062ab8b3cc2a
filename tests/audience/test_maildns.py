"""The optional DNS check of email domains at intake, against a real DNS server on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from pushguard.exceptions import ConfigError, InvalidAddress
from pushguard.maildns import MailDomains
from pushguard.settings import Settings

ZONE = {
    ("shop-mail.com.", "MX"): "10 mx1.shop-mail.com.",
    ("shop-mail.com.", "A"): "192.0.2.10",
    ("nomail.com.", "MX"): "0 .",  # RFC 7505 null MX: accepts no mail
    ("nomail.com.", "A"): "192.0.2.11",
}


class FakeDNS:
    """Answers from ZONE; NXDOMAIN for names it does not know; counts questions."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.questions = 0
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            q = dns.message.from_wire(data)
            self.questions += 1
            r = dns.message.make_response(q)
            name = q.question[0].name.to_text()
            kind = dns.rdatatype.to_text(q.question[0].rdtype)
            known = {n for n, _ in ZONE}
            if name not in known:
                r.set_rcode(dns.rcode.NXDOMAIN)
            elif (name, kind) in ZONE:
                r.answer.append(dns.rrset.from_text(name, 300, "IN", kind, ZONE[(name, kind)]))
            self.sock.sendto(r.to_wire(), peer)

    def close(self) -> None:
        self._stop = True
        self.thread.join()
        self.sock.close()


@pytest.fixture
def fake_dns() -> Iterator[FakeDNS]:
    server = FakeDNS()
    yield server
    server.close()


def test_domains_that_cannot_receive_mail_are_refused(fake_dns: FakeDNS) -> None:
    domains = MailDomains(f"127.0.0.1:{fake_dns.port}", timeout=2)
    domains.check("ann@shop-mail.com", "to")  # has an MX
    with pytest.raises(InvalidAddress) as err:
        domains.check("ann@no-such-domain-here.com", "to")
    assert err.value.field == "to" and "does not exist" in err.value.problem
    with pytest.raises(InvalidAddress) as err:
        domains.check("bob@nomail.com", "messages[2].to")
    assert err.value.field == "messages[2].to" and "does not accept email" in err.value.problem
    asked = fake_dns.questions
    domains.check("carl@shop-mail.com", "to")  # cached per domain
    assert fake_dns.questions == asked


def test_an_unreachable_dns_server_refuses_nothing() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))  # bound, never answers
        port = s.getsockname()[1]
        MailDomains(f"127.0.0.1:{port}", timeout=1).check("ann@shop-mail.com", "to")


def test_intake_uses_it_when_enabled(fake_dns: FakeDNS, tmp_path: object) -> None:
    from pushguard.app import App
    from pushguard.config import Config, ProviderConfig
    from pushguard.store.sql import SQLStore

    settings = Settings.from_env({"PUSHGUARD_EMAIL_DNS_CHECK": "true",
                                  "PUSHGUARD_DNS_SERVER": f"127.0.0.1:{fake_dns.port}"})
    assert settings.email_dns_check is True
    store = SQLStore(f"sqlite:///{tmp_path}/x.db")
    store.migrate()
    app = App(settings=settings, store=store, config=Config(
        channels={"email": ("m",)}, providers={"m": ProviderConfig("m", "fake", {})}))
    ok = app.intake.parse({"channel": "email", "to": "a@shop-mail.com",
                           "content": {"subject": "s", "text": "t"}})
    app.intake.prepare(ok)
    bad = app.intake.parse({"channel": "email", "to": "a@nomail.com",
                            "content": {"subject": "s", "text": "t"}})
    with pytest.raises(InvalidAddress):
        app.intake.prepare(bad)
    store.close()
    with pytest.raises(ConfigError):
        Settings.from_env({"PUSHGUARD_EMAIL_DNS_CHECK": "maybe"})
