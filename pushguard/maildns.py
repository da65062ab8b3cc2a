"""Optional at intake: does an email address's domain accept mail at all?

``PUSHGUARD_EMAIL_DNS_CHECK=true`` asks DNS, through ``email-validator``'s deliverability check:
a domain that does not exist, or that publishes a null MX (RFC 7505), is refused with a 422
before anything is queued. A DNS timeout or server failure never refuses an address: the
answer is unknown, and the message is accepted. Answers are cached per domain, one hour when
the domain accepts mail and five minutes when it does not.
"""

from __future__ import annotations

import time

import dns.resolver
from email_validator import EmailNotValidError, EmailUndeliverableError, validate_email

from pushguard.exceptions import InvalidAddress

OK_TTL = 3600.0
BAD_TTL = 300.0


class MailDomains:
    def __init__(self, nameservers: str = "", *, timeout: float = 3.0) -> None:
        """``nameservers``: ``host[:port],...``; empty means the system's resolver."""
        servers = [s.strip() for s in nameservers.split(",") if s.strip()]
        self.resolver = dns.resolver.Resolver(configure=not servers)
        if servers:
            host, _, port = servers[0].rpartition(":") if ":" in servers[0] else (
                servers[0], "", "53")
            self.resolver.nameservers = [host.strip("[]")]
            self.resolver.port = int(port)
        self.resolver.lifetime = timeout
        self.timeout = timeout
        self._cache: dict[str, tuple[float, str | None]] = {}

    def check(self, address: str, field: str) -> None:
        """Raise ``InvalidAddress`` when the address's domain cannot receive mail."""
        domain = address.rpartition("@")[2].lower()
        now = time.monotonic()
        hit = self._cache.get(domain)
        if hit is None or hit[0] < now:
            problem = self._ask(address)
            self._cache[domain] = (now + (BAD_TTL if problem else OK_TTL), problem)
            if len(self._cache) > 100_000:
                self._cache.clear()
            hit = self._cache[domain]
        if hit[1]:
            raise InvalidAddress(field, f"{address!r}: {hit[1]}")

    def _ask(self, address: str) -> str | None:
        try:
            validate_email(address, check_deliverability=True, dns_resolver=self.resolver)
        except EmailUndeliverableError as exc:
            return str(exc)
        except EmailNotValidError:
            return None  # syntax was checked before; not this check's business
        return None
