"""The outbound URL guard: refuses requests to loopback, private and other internal addresses.

Webhook URLs, Web Push endpoints and chat URLs come from tenants, so every outbound request is
a server-side request forgery (SSRF) risk (GUARANTEES.md §4.2). The guard checks twice:

* **at intake**, :meth:`OutboundGuard.check_url` parses the URL with yarl (the parser aiohttp
  uses for the request), turns any IP literal into the address it denotes, including legacy
  forms such as ``2130706433``, ``0x7f000001``, ``0177.0.0.1`` and ``127.1``, and resolves
  host names. It refuses the URL if any address is internal.
* **at send time**, :class:`~pushguard.providers.resolver.GuardedResolver` sits inside
  aiohttp's connector and drops every internal address from each DNS answer. aiohttp
  connects only to addresses its resolver returned, so the connection is pinned to addresses
  that were checked at that moment. A DNS rebinding between intake and send gains nothing.

aiohttp does not call its resolver for hosts that are IP literals, so a provider must call
:meth:`OutboundGuard.check_connect_target` before each request. Redirects must stay disabled
(``allow_redirects=False``): a redirect to an IP literal would skip the resolver as well.

Operators can allow particular hosts, IPs or CIDR blocks with ``PUSHGUARD_OUTBOUND_ALLOW``, for
example a webhook receiver on the same machine in development.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from yarl import URL

from pushguard.exceptions import ConfigError, HeaderInjection, UnsafeURL

__all__ = [
    "ALLOWED_SCHEMES",
    "ALLOW_ENV",
    "IPAddress",
    "MAX_URL_LENGTH",
    "OutboundGuard",
    "OutboundRefused",
    "check_url_text",
    "find_refusal",
    "is_blocked_ip",
    "parse_ip_literal",
]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

#: the setting named in error messages, so the person reading one knows how to allow a host.
ALLOW_ENV = "PUSHGUARD_OUTBOUND_ALLOW"
MAX_URL_LENGTH = 2048
ALLOWED_SCHEMES = frozenset({"http", "https"})

_LOOPBACK = "loopback address"
_PRIVATE = "private address"
_RESERVED = "reserved address"

# First match wins, so narrower ranges come before the ranges that contain them.
_V4_RANGES: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(net), reason)
    for net, reason in (
        # Linux connects 0.0.0.0 to the local host, so "this network" is as bad as loopback.
        ("0.0.0.0/8", "unspecified address"),
        ("127.0.0.0/8", _LOOPBACK),
        ("10.0.0.0/8", _PRIVATE),
        ("172.16.0.0/12", _PRIVATE),
        ("192.168.0.0/16", _PRIVATE),
        ("100.64.0.0/10", "carrier-grade NAT address"),
        ("169.254.169.254/32", "link-local address (cloud metadata service)"),
        ("169.254.0.0/16", "link-local address"),
        ("224.0.0.0/4", "multicast address"),
        ("255.255.255.255/32", "broadcast address"),
        ("240.0.0.0/4", _RESERVED),
        ("192.0.0.0/24", _RESERVED),
        ("192.0.2.0/24", "documentation address"),
        ("198.51.100.0/24", "documentation address"),
        ("203.0.113.0/24", "documentation address"),
        ("198.18.0.0/15", _RESERVED),
        ("192.88.99.0/24", _RESERVED),
    )
)

_V6_RANGES: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(net), reason)
    for net, reason in (
        ("::/128", "unspecified address"),
        ("::1/128", _LOOPBACK),
        # IPv4-compatible addresses are deprecated; nothing public lives there.
        ("::/96", _RESERVED),
        ("64:ff9b:1::/48", "private address (local-use NAT64)"),
        ("100::/64", _RESERVED),
        ("2001:db8::/32", "documentation address"),
        ("fc00::/7", "private address (unique local)"),
        ("fe80::/10", "link-local address"),
        ("fec0::/10", "private address (site-local)"),
        ("ff00::/8", "multicast address"),
    )
)

_NAT64 = IPv6Network("64:ff9b::/96")

_HOST_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")
_IPV4_PART = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)\Z")
# Characters that may never appear in a URL we send: whitespace, controls and invisible format
# characters (bidi overrides, zero-width), which also make a URL read differently than it acts.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def _article(noun: str) -> str:
    return "an" if noun[:1] in "aeiou" else "a"


def _embedded_v4(ip: IPv6Address) -> tuple[IPv4Address, str] | None:
    """The IPv4 address an IPv6 address reaches, for the transition forms that carry one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, "IPv4-mapped"
    if ip in _NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF), "via NAT64"
    if ip.sixtofour is not None:
        return ip.sixtofour, "via 6to4"
    return None


def _v4_reason(ip: IPv4Address) -> str | None:
    for net, reason in _V4_RANGES:
        if ip in net:
            return reason
    # The table names the common ranges; anything else IANA marks non-global is refused too.
    return None if ip.is_global else _RESERVED


def is_blocked_ip(ip: IPAddress | str) -> str | None:
    """Why ``ip`` must not be reached from pushguard, such as ``"loopback address"``, or None.

    ``ip`` may be an address object or any text :func:`parse_ip_literal` accepts. IPv6 forms
    that carry an IPv4 address (``::ffff:127.0.0.1``, NAT64, 6to4) are judged by that address.
    The allow-list is not consulted here; see :meth:`OutboundGuard.refusal_reason`.
    """
    if isinstance(ip, str):
        parsed = parse_ip_literal(ip)
        if parsed is None:
            raise ValueError(f"{ip!r} is not an IP address")
        ip = parsed
    if isinstance(ip, IPv4Address):
        return _v4_reason(ip)
    embedded = _embedded_v4(ip)
    if embedded is not None:
        v4, how = embedded
        reason = _v4_reason(v4)
        return None if reason is None else f"{reason} ({how} {v4})"
    for net, reason in _V6_RANGES:
        if ip in net:
            return reason
    # Teredo, ORCHID, benchmarking and other IETF blocks: not where webhooks live.
    return None if ip.is_global else _RESERVED


def _ends_in_number(host: str) -> bool:
    labels = host.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()
    return _IPV4_PART.match(labels[-1]) is not None


def _parse_ipv4(host: str) -> IPv4Address | None:
    """Parse IPv4 the way ``inet_aton`` and the WHATWG URL standard do, legacy forms included.

    One to four parts, each decimal, octal (leading ``0``) or hex (``0x``); the last part fills
    the remaining bytes, so ``127.1`` is 127.0.0.1 and ``2130706433`` is 127.0.0.1 too.
    """
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    if not 1 <= len(parts) <= 4:
        return None
    numbers: list[int] = []
    for part in parts:
        if _IPV4_PART.match(part) is None:
            return None
        if part[:2] in ("0x", "0X"):
            numbers.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part[0] == "0":
            if not set(part) <= set("01234567"):
                return None
            numbers.append(int(part, 8))
        else:
            numbers.append(int(part))
    *head, last = numbers
    if any(n > 0xFF for n in head) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for index, n in enumerate(head):
        value |= n << (8 * (3 - index))
    return IPv4Address(value)


def parse_ip_literal(host: str) -> IPAddress | None:
    """The IP address ``host`` denotes, or None if it is a name (or not an address at all).

    Accepts bracketed or bare IPv6 (with an optional ``%zone``, raw or URL-encoded as ``%25``)
    and every IPv4 spelling that ``inet_aton`` resolves.
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        try:
            return IPv6Address(text.replace("%25", "%", 1))
        except ValueError:
            return None
    return _parse_ipv4(text)


class OutboundRefused(OSError):
    """A connection refused by :class:`GuardedResolver` because every address was internal.

    It is an :class:`OSError` because aiohttp expects resolvers to raise one; aiohttp wraps it in
    ``aiohttp.ClientConnectorError`` (as ``os_error``). Use :func:`find_refusal` to tell it apart
    from an ordinary DNS failure: it is a permanent validation failure, not a network one.
    """

    def __init__(self, host: str, problem: str) -> None:
        # (errno, strerror) form, so aiohttp's "Cannot connect to host ..." text carries it.
        super().__init__(None, f"blocked outbound connection to {host!r}: {problem}")
        self.host = host
        self.problem = problem


def find_refusal(exc: BaseException) -> OutboundRefused | None:
    """The :class:`OutboundRefused` behind ``exc`` (through ``os_error`` and causes), if any."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OutboundRefused):
            return current
        os_error = getattr(current, "os_error", None)
        if isinstance(os_error, BaseException):
            stack.append(os_error)
        stack.extend((current.__cause__, current.__context__))
    return None


def _refused(subject: str, reason: str) -> str:
    return (
        f"{subject} {_article(reason)} {reason}; outbound requests to internal addresses are "
        f"refused (allow it with {ALLOW_ENV})"
    )


def _literal_problem(host: str, ip: IPAddress, reason: str) -> str:
    if host.strip("[]").lower() == str(ip):
        return _refused(f"URL host {ip} is", reason)
    return _refused(f"URL host {host!r} is {ip},", reason)


def resolved_problem(host: str, ip: IPAddress, reason: str) -> str:
    return (
        f"URL host {host!r} resolves to {_article(reason)} {reason} ({ip}); outbound requests "
        f"to internal addresses are refused (allow it with {ALLOW_ENV})"
    )


def _normalize_name(host: str) -> str:
    name = host.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    # "localhost." and "localhost" are the same DNS name; compare them as one.
    return name[:-1] if name.endswith(".") and len(name) > 1 else name


def _is_valid_name(name: str) -> bool:
    if not name or len(name) > 253:
        return False
    return all(_HOST_LABEL.match(label) for label in name.split("."))


def check_url_text(url: str, field: str) -> None:
    """Refuse URL text that carries line breaks, NUL, whitespace, controls or is too long."""
    if "\r" in url or "\n" in url:
        raise HeaderInjection(field, "contains a line break (CR or LF)")
    if "\x00" in url:
        raise HeaderInjection(field, "contains a NUL byte")
    for position, char in enumerate(url):
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            raise UnsafeURL(
                field,
                f"URL contains a space or control character (U+{ord(char):04X} at position "
                f"{position}); percent-encode it",
            )
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeURL(field, f"URL is {len(url)} characters long; the limit is {MAX_URL_LENGTH}")


_ResolveCache = dict[str, tuple[float, tuple[IPAddress, ...] | None]]


class OutboundGuard:
    """Decides which hosts pushguard may send requests to.

    ``allow`` entries are host names (matched exactly, case-insensitively, not their
    subdomains), IP addresses or CIDR blocks; they exempt those hosts from the internal-address
    rules. DNS answers are cached for ``cache_ttl`` seconds (failures for ``negative_ttl``),
    because intake validates many messages to the same host in one batch; ``clock`` is the
    monotonic time source for that cache.
    """

    def __init__(
        self,
        allow: Iterable[str] = (),
        *,
        cache_ttl: float = 60.0,
        negative_ttl: float = 5.0,
        cache_size: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in allow:
            entry = raw.strip()
            if not entry:
                continue
            parsed = self._parse_allow_entry(entry)
            if isinstance(parsed, str):
                names.add(parsed)
            else:
                networks.append(parsed)
        self.allowed_names: frozenset[str] = frozenset(names)
        self.allowed_networks: tuple[IPNetwork, ...] = tuple(networks)
        self.cache_ttl = cache_ttl
        self.negative_ttl = negative_ttl
        self.cache_size = cache_size
        self._clock = clock
        self._cache: _ResolveCache = {}
        # check_url may run in worker threads as well as on the event loop.
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, value: str | None, **options: Any) -> OutboundGuard:
        """Build a guard from the comma-separated ``PUSHGUARD_OUTBOUND_ALLOW`` value.

        ``options`` are passed to the constructor (cache settings, clock).
        """
        return cls((value or "").split(","), **options)

    @staticmethod
    def _parse_allow_entry(entry: str) -> str | IPNetwork:
        if "/" in entry:
            try:
                return ipaddress.ip_network(entry.strip("[]"), strict=False)
            except ValueError:
                pass
        else:
            ip = parse_ip_literal(entry)
            if ip is not None:
                return ipaddress.ip_network(str(ip).split("%")[0])
            try:
                name = _normalize_name(URL.build(scheme="http", host=entry).raw_host or "")
            except (ValueError, UnicodeError):
                name = ""
            if _is_valid_name(name) and not _ends_in_number(name):
                return name
        raise ConfigError(
            f"allow-list entry {entry!r} is not a host name, IP address or CIDR block "
            "(e.g. localhost, 127.0.0.1, 10.0.0.0/8, hooks.internal)",
            location=ALLOW_ENV,
        )

    def __repr__(self) -> str:
        allowed = sorted(self.allowed_names) + [str(n) for n in self.allowed_networks]
        return f"OutboundGuard(allow={allowed!r})"

    # -- decisions -------------------------------------------------------------------------

    def is_allowed(self, host: str) -> bool:
        """True if ``host`` (a name or an IP literal) is exempted by the allow-list."""
        name = _normalize_name(host)
        if name in self.allowed_names:
            return True
        ip = parse_ip_literal(name)
        return ip is not None and self._ip_allowed(ip)

    def _ip_allowed(self, ip: IPAddress) -> bool:
        if isinstance(ip, IPv6Address):
            # "allow 127.0.0.1" means the host, however it is spelled, ::ffff:127.0.0.1 too.
            embedded = _embedded_v4(ip)
            if embedded is not None and self._ip_allowed(embedded[0]):
                return True
        return any(ip in net for net in self.allowed_networks)

    def refusal_reason(self, ip: IPAddress) -> str | None:
        """Why the guard refuses ``ip`` (as :func:`is_blocked_ip`), or None if it may be used."""
        reason = is_blocked_ip(ip)
        if reason is None or self._ip_allowed(ip):
            return None
        return reason

    def _static_check(self, host: str, field: str) -> str | None:
        """Check what can be checked without DNS; return the name still to resolve, if any."""
        name = _normalize_name(host)
        if name in self.allowed_names:
            return None
        ip = parse_ip_literal(name)
        if ip is not None:
            reason = self.refusal_reason(ip)
            if reason is not None:
                raise UnsafeURL(field, _literal_problem(host, ip, reason))
            return None
        if ":" in name:
            raise UnsafeURL(field, f"URL host {host!r} is not a valid IPv6 address")
        if _ends_in_number(name):
            # Browsers and inet_aton read such hosts as IPv4, never as names; so do we.
            raise UnsafeURL(field, f"URL host {host!r} is not a valid IPv4 address")
        if not _is_valid_name(name):
            raise UnsafeURL(field, f"URL host {host!r} is not a valid host name")
        return name

    def _check_unresolved(self, host: str, name: str, field: str) -> None:
        # Without DNS, names that RFC 6761 reserves for the local machine are still known; they
        # pass exactly when DNS would let them pass, i.e. when a loopback address is allowed.
        if (name == "localhost" or name.endswith(".localhost")) and not (
            self._ip_allowed(IPv4Address("127.0.0.1")) or self._ip_allowed(IPv6Address("::1"))
        ):
            raise UnsafeURL(
                field,
                f"URL host {host!r} always means this machine, a loopback address; outbound "
                f"requests to internal addresses are refused (allow it with {ALLOW_ENV})",
            )

    def _check_resolved(
        self, host: str, addresses: tuple[IPAddress, ...] | None, field: str
    ) -> None:
        if not addresses:
            raise UnsafeURL(field, f"host {host!r} does not resolve")
        for ip in addresses:
            reason = self.refusal_reason(ip)
            if reason is not None:
                raise UnsafeURL(field, resolved_problem(host, ip, reason))

    # -- DNS cache -------------------------------------------------------------------------

    def _cached(self, name: str) -> tuple[bool, tuple[IPAddress, ...] | None]:
        with self._lock:
            hit = self._cache.get(name)
            if hit is None:
                return False, None
            expires, addresses = hit
            if expires <= self._clock():
                del self._cache[name]
                return False, None
            return True, addresses

    def _store(self, name: str, addresses: tuple[IPAddress, ...] | None) -> None:
        now = self._clock()
        ttl = self.cache_ttl if addresses else self.negative_ttl
        with self._lock:
            if name not in self._cache and len(self._cache) >= self.cache_size:
                for key in [k for k, (exp, _) in self._cache.items() if exp <= now]:
                    del self._cache[key]
                # Still full: drop the oldest insertion (dicts keep insertion order).
                while self._cache and len(self._cache) >= self.cache_size:
                    del self._cache[next(iter(self._cache))]
            self._cache.pop(name, None)
            self._cache[name] = (now + ttl, addresses)

    def clear_cache(self) -> None:
        """Forget every cached DNS answer."""
        with self._lock:
            self._cache.clear()

    @staticmethod
    def _addresses(infos: Sequence[tuple[object, ...]]) -> tuple[IPAddress, ...]:
        found: dict[IPAddress, None] = {}
        for info in infos:
            sockaddr = info[4]
            if isinstance(sockaddr, tuple) and sockaddr and isinstance(sockaddr[0], str):
                try:
                    found[ipaddress.ip_address(sockaddr[0])] = None
                except ValueError:
                    continue
        return tuple(found)

    def resolve(self, name: str) -> tuple[IPAddress, ...] | None:
        """The addresses ``name`` resolves to (cached), or None if it does not resolve."""
        hit, addresses = self._cached(name)
        if hit:
            return addresses
        try:
            infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            addresses = None
        else:
            addresses = self._addresses(infos) or None
        self._store(name, addresses)
        return addresses

    async def resolve_async(self, name: str) -> tuple[IPAddress, ...] | None:
        """:meth:`resolve` through the running loop's ``getaddrinfo`` (sharing the cache)."""
        hit, addresses = self._cached(name)
        if hit:
            return addresses
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            addresses = None
        else:
            addresses = self._addresses(infos) or None
        self._store(name, addresses)
        return addresses

    # -- public checks ---------------------------------------------------------------------

    def check_host(self, host: str, *, field: str = "to", resolve: bool = True) -> None:
        """Refuse ``host`` (a name or IP literal) if it is, or resolves to, an internal address.

        Raises :class:`~pushguard.exceptions.UnsafeURL`. With ``resolve=False`` only IP
        literals and ``localhost`` names (RFC 6761) are judged; other names pass unresolved.
        """
        name = self._static_check(host, field)
        if name is None:
            return
        if resolve:
            self._check_resolved(host, self.resolve(name), field)
        else:
            self._check_unresolved(host, name, field)

    async def check_host_async(self, host: str, *, field: str = "to", resolve: bool = True) -> None:
        """:meth:`check_host` without blocking the event loop on DNS."""
        name = self._static_check(host, field)
        if name is None:
            return
        if resolve:
            self._check_resolved(host, await self.resolve_async(name), field)
        else:
            self._check_unresolved(host, name, field)

    def _parse(self, url: str, field: str) -> tuple[URL, str]:
        if not isinstance(url, str):
            raise UnsafeURL(field, f"URL must be a string, not {type(url).__name__}")
        check_url_text(url, field)
        if not url:
            raise UnsafeURL(field, "URL is empty")
        try:
            parsed = URL(url)
        except (ValueError, TypeError, UnicodeError) as exc:
            raise UnsafeURL(field, f"URL cannot be parsed: {exc}") from exc
        scheme = parsed.scheme.lower()
        if not scheme:
            raise UnsafeURL(field, "URL has no scheme; use http:// or https://")
        if scheme not in ALLOWED_SCHEMES:
            raise UnsafeURL(field, f"scheme {scheme!r} is not allowed; use http or https")
        if parsed.raw_user is not None or parsed.raw_password is not None:
            raise UnsafeURL(
                field,
                "URL contains credentials (user:password@); credentials are not accepted in "
                "outbound URLs",
            )
        host = parsed.raw_host
        if not host:
            raise UnsafeURL(field, "URL has no host")
        if parsed.explicit_port == 0:
            raise UnsafeURL(field, "URL port 0 is not a usable port")
        return parsed, host

    @staticmethod
    def _canonical(parsed: URL, host: str) -> str:
        # aiohttp refuses legacy IPv4 spellings (127.1), so an allowed one is sent canonically.
        ip = parse_ip_literal(host)
        if isinstance(ip, IPv4Address) and host != str(ip):
            return str(parsed.with_host(str(ip)))
        return str(parsed)

    def check_url(self, url: str, *, field: str = "to", resolve: bool = True) -> str:
        """Validate an outbound http(s) URL and return it normalized (as yarl prints it).

        Raises :class:`~pushguard.exceptions.UnsafeURL` for a bad scheme, credentials, a
        missing host, more than 2048 characters, or a host that is (or, with ``resolve``,
        resolves to) an internal address not in the allow-list; and
        :class:`~pushguard.exceptions.HeaderInjection` for CR, LF or NUL. Refused if ANY
        resolved address is internal. Blocks on DNS: in async code use
        :meth:`check_url_async`.
        """
        parsed, host = self._parse(url, field)
        self.check_host(host, field=field, resolve=resolve)
        return self._canonical(parsed, host)

    async def check_url_async(self, url: str, *, field: str = "to", resolve: bool = True) -> str:
        """:meth:`check_url` resolving through the running loop's ``getaddrinfo``."""
        parsed, host = self._parse(url, field)
        await self.check_host_async(host, field=field, resolve=resolve)
        return self._canonical(parsed, host)

    def check_connect_target(self, target: str, *, field: str = "to") -> None:
        """Check a request target right before sending; call it before every request.

        ``target`` is a URL or a bare host. aiohttp does not consult its resolver (and so not
        :class:`GuardedResolver`) when the host is an IP literal, so this is where literal
        internal addresses are refused. It never resolves names: for those the resolver does
        the check at connect time. Raises :class:`~pushguard.exceptions.UnsafeURL`.
        """
        if "://" in target:
            _, host = self._parse(target, field)
        else:
            check_url_text(target, field)
            host = target
        self.check_host(host, field=field, resolve=False)
