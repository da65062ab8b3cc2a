"""The outbound URL guard: address ranges, encodings, allow-list, DNS and aiohttp's resolver."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from pushguard.exceptions import ConfigError, HeaderInjection, UnsafeURL
from pushguard.providers.resolver import GuardedResolver
from pushguard.ssrf import (
    ALLOW_ENV,
    MAX_URL_LENGTH,
    OutboundGuard,
    OutboundRefused,
    find_refusal,
    is_blocked_ip,
    parse_ip_literal,
)

PUBLIC_V4 = "93.184.215.14"

# (address, words the refusal reason must contain)
BLOCKED = [
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.255", "carrier-grade NAT"),
    ("169.254.0.1", "link-local"),
    ("169.254.169.254", "cloud metadata"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"),
    ("192.0.0.8", "reserved"),
    ("198.18.0.1", "reserved"),
    ("192.0.2.1", "documentation"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("fe80::1", "link-local"),
    ("febf::1", "link-local"),
    ("fec0::1", "private"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("::7f00:1", "reserved"),
    ("2001::1", "reserved"),  # Teredo
    ("2001:2::1", "reserved"),  # benchmarking
    ("::ffff:127.0.0.1", "loopback address (IPv4-mapped 127.0.0.1)"),
    ("::ffff:10.0.0.1", "private address (IPv4-mapped 10.0.0.1)"),
    ("::ffff:169.254.169.254", "cloud metadata"),
    ("64:ff9b::7f00:1", "loopback address (via NAT64 127.0.0.1)"),
    ("2002:c0a8:0101::1", "private address (via 6to4 192.168.1.1)"),
]

PUBLIC = [
    "8.8.8.8",
    PUBLIC_V4,
    "1.1.1.1",
    "172.32.0.1",
    "100.128.0.1",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
]


# --- address ranges ---------------------------------------------------------------------


@pytest.mark.parametrize(("address", "words"), BLOCKED)
def test_blocked_ranges_are_named(address: str, words: str) -> None:
    reason = is_blocked_ip(address)
    assert reason is not None
    assert words in reason


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_not_blocked(address: str) -> None:
    assert is_blocked_ip(address) is None
    assert is_blocked_ip(ip_address(address)) is None


def test_is_blocked_ip_refuses_non_addresses() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        is_blocked_ip("example.com")


@pytest.mark.parametrize(("address", "words"), BLOCKED)
def test_blocked_literal_urls_are_refused(address: str, words: str) -> None:
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(UnsafeURL) as info:
        OutboundGuard().check_url(f"https://{host}/hook")
    assert info.value.field == "to"
    assert words in info.value.problem
    assert "outbound requests to internal addresses are refused" in info.value.problem
    assert ALLOW_ENV in info.value.problem


@pytest.mark.parametrize("address", PUBLIC)
def test_public_literal_urls_pass(address: str) -> None:
    host = f"[{address}]" if ":" in address else address
    assert OutboundGuard().check_url(f"https://{host}/hook").startswith("https://")


# --- alternate encodings ----------------------------------------------------------------

ENCODINGS = [
    ("2130706433", "127.0.0.1"),
    ("0x7f000001", "127.0.0.1"),
    ("0X7F000001", "127.0.0.1"),
    ("0177.0.0.1", "127.0.0.1"),
    ("0177.0.0.01", "127.0.0.1"),
    ("127.1", "127.0.0.1"),
    ("127.0.1", "127.0.0.1"),
    ("0x7f.1", "127.0.0.1"),
    ("0x7f.0x0.0x0.0x1", "127.0.0.1"),
    ("127.0.0.1.", "127.0.0.1"),
    ("0", "0.0.0.0"),
    ("0x", "0.0.0.0"),
    ("2852039166", "169.254.169.254"),
    ("0xa9fea9fe", "169.254.169.254"),
    ("0251.0376.0251.0376", "169.254.169.254"),
    ("169.254.43518", "169.254.169.254"),
    ("10.1", "10.0.0.1"),
    ("[::1]", "::1"),
    ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
    ("[0:0:0:0:0:0:0:1]", "::1"),
]


@pytest.mark.parametrize(("host", "expected"), ENCODINGS)
def test_parse_ip_literal_reads_legacy_forms(host: str, expected: str) -> None:
    assert parse_ip_literal(host) == ip_address(expected)


@pytest.mark.parametrize(
    "host",
    ["example.com", "256.0.0.1", "1.2.3.4.5", "08.0.0.1", "0x1.0x100.1.1", "4294967296", "[::g]"],
)
def test_parse_ip_literal_rejects_non_addresses(host: str) -> None:
    assert parse_ip_literal(host) is None


# glibc's inet_aton refuses a trailing dot and a bare "0x"; we read them as addresses anyway
# (as browsers do), which can only refuse more, never less.
LIBC_FORMS = [h for h, _ in ENCODINGS if not h.startswith("[") and h not in ("127.0.0.1.", "0x")]


@pytest.mark.parametrize("host", [*LIBC_FORMS, "1.2.3", "0x0.0x0", "017700000001"])
def test_parse_ip_literal_agrees_with_inet_aton(host: str) -> None:
    # Whatever the C library would connect to, we must see as the same address.
    assert parse_ip_literal(host) == IPv4Address(socket.inet_aton(host))


@pytest.mark.parametrize(("host", "expected"), ENCODINGS)
def test_encoded_hosts_are_refused_as_the_address_they_denote(host: str, expected: str) -> None:
    reason = is_blocked_ip(expected)
    assert reason is not None
    with pytest.raises(UnsafeURL) as info:
        OutboundGuard().check_url(f"http://{host}/", resolve=False)
    assert reason in info.value.problem
    assert str(ip_address(expected)) in info.value.problem


def test_fullwidth_digits_are_read_as_ascii_digits() -> None:
    with pytest.raises(UnsafeURL, match="loopback"):
        OutboundGuard().check_url("http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/", resolve=False)


@pytest.mark.parametrize("host", ["1.2.3.4.5", "256.0.0.1", "08.0.0.1", "1.2.3.0x100"])
def test_numeric_hosts_that_are_not_addresses_are_refused(host: str) -> None:
    with pytest.raises(UnsafeURL, match="not a valid IPv4 address"):
        OutboundGuard().check_url(f"http://{host}/", resolve=False)


def test_invalid_host_names_are_refused() -> None:
    with pytest.raises(UnsafeURL, match="not a valid host name"):
        OutboundGuard().check_url("http://exa..mple.com/", resolve=False)
    with pytest.raises(UnsafeURL, match="not a valid host name"):
        OutboundGuard().check_url("http://%65xample.com/", resolve=False)
    with pytest.raises(UnsafeURL, match="not a valid IPv4 address"):
        OutboundGuard().check_url("http://%31%32%37.0.0.1/", resolve=False)


# --- URL shape --------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["ftp", "file", "gopher", "dict", "ws", "javascript"])
def test_only_http_and_https_schemes(scheme: str) -> None:
    with pytest.raises(UnsafeURL) as info:
        OutboundGuard().check_url(f"{scheme}://{PUBLIC_V4}/x")
    assert info.value.problem == f"scheme {scheme!r} is not allowed; use http or https"


def test_url_without_scheme_is_refused() -> None:
    with pytest.raises(UnsafeURL, match="no scheme"):
        OutboundGuard().check_url(f"//{PUBLIC_V4}/x")


@pytest.mark.parametrize(
    "url",
    [f"https://user:secret@{PUBLIC_V4}/", f"https://user@{PUBLIC_V4}/", f"http://:pw@{PUBLIC_V4}/"],
)
def test_credentials_in_url_are_refused(url: str) -> None:
    with pytest.raises(UnsafeURL, match="credentials"):
        OutboundGuard().check_url(url)


def test_userinfo_cannot_disguise_the_host() -> None:
    with pytest.raises(UnsafeURL):
        OutboundGuard().check_url("http://example.com@127.0.0.1/")
    with pytest.raises(UnsafeURL):
        OutboundGuard().check_url("http://example.com\\@127.0.0.1/")


def test_url_without_host_is_refused() -> None:
    with pytest.raises(UnsafeURL, match="no host"):
        OutboundGuard().check_url("http:///path")


def test_port_zero_is_refused() -> None:
    with pytest.raises(UnsafeURL, match="port 0"):
        OutboundGuard().check_url(f"http://{PUBLIC_V4}:0/")


def test_url_length_limit() -> None:
    base = f"https://{PUBLIC_V4}/"
    at_limit = base + "a" * (MAX_URL_LENGTH - len(base))
    assert OutboundGuard().check_url(at_limit) == at_limit
    with pytest.raises(UnsafeURL, match="2049 characters long; the limit is 2048"):
        OutboundGuard().check_url(at_limit + "a")


@pytest.mark.parametrize(
    ("char", "problem"),
    [
        ("\r", "contains a line break (CR or LF)"),
        ("\n", "contains a line break (CR or LF)"),
        ("\r\n", "contains a line break (CR or LF)"),
        ("\x00", "contains a NUL byte"),
    ],
)
def test_line_breaks_and_nul_are_header_injection(char: str, problem: str) -> None:
    with pytest.raises(HeaderInjection) as info:
        OutboundGuard().check_url(f"https://{PUBLIC_V4}/a{char}X-Evil: 1", field="url")
    assert info.value.field == "url"
    assert info.value.problem == problem


@pytest.mark.parametrize("char", [" ", "\t", "\x01", "\x7f", "\u200b", "\u202e", "\u00a0"])
def test_spaces_and_control_characters_are_refused(char: str) -> None:
    with pytest.raises(UnsafeURL, match=f"U\\+{ord(char):04X}"):
        OutboundGuard().check_url(f"https://{PUBLIC_V4}/a{char}b")


def test_not_a_string_is_refused() -> None:
    with pytest.raises(UnsafeURL, match="must be a string"):
        OutboundGuard().check_url(b"https://x/")  # type: ignore[arg-type]


def test_url_is_returned_normalized() -> None:
    guard = OutboundGuard()
    assert guard.check_url(f"HTTPS://{PUBLIC_V4}:443/a?b=1#c") == f"https://{PUBLIC_V4}/a?b=1#c"


def test_field_is_reported() -> None:
    with pytest.raises(UnsafeURL) as info:
        OutboundGuard().check_url("ftp://x/", field="endpoint.url")
    assert info.value.field == "endpoint.url"
    assert info.value.as_dict()["field"] == "endpoint.url"


# --- allow-list -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allow", "url"),
    [
        (["127.0.0.1"], "http://127.0.0.1:8080/x"),
        (["127.0.0.0/8"], "http://127.9.9.9/x"),
        (["10.0.0.0/8"], "http://10.1.2.3/x"),
        (["::1"], "http://[::1]:8080/x"),
        (["[::1]"], "http://[::1]:8080/x"),
        (["fd00::/8"], "http://[fd00::5]/x"),
        (["127.0.0.1"], "http://[::ffff:127.0.0.1]/x"),
        (["127.0.0.1"], "http://2130706433/x"),
        (["127.1"], "http://127.0.0.1/x"),
        (["169.254.169.254"], "http://169.254.169.254/latest"),
    ],
)
def test_allow_list_by_ip_and_cidr(allow: list[str], url: str) -> None:
    assert OutboundGuard(allow).check_url(url, resolve=False)


@pytest.mark.parametrize(
    ("allow", "url"),
    [
        (["127.0.0.1"], "http://127.0.0.2/"),
        (["127.0.0.1"], "http://10.0.0.1/"),
        (["10.0.0.0/16"], "http://10.1.0.1/"),
        (["::1"], "http://127.0.0.1/"),
        (["hooks.internal"], "http://127.0.0.1/"),
    ],
)
def test_allow_list_allows_nothing_else(allow: list[str], url: str) -> None:
    with pytest.raises(UnsafeURL):
        OutboundGuard(allow).check_url(url, resolve=False)


def test_allowed_legacy_ipv4_is_returned_canonical() -> None:
    # aiohttp refuses "127.1"; the URL we hand on must be one it will send.
    assert OutboundGuard(["127.0.0.0/8"]).check_url("http://127.1:8080/x") == (
        "http://127.0.0.1:8080/x"
    )


def test_allowed_names_match_exactly_and_case_insensitively() -> None:
    guard = OutboundGuard(["Hooks.Internal", "localhost."])
    assert guard.is_allowed("hooks.internal")
    assert guard.is_allowed("HOOKS.INTERNAL.")
    assert guard.is_allowed("localhost")
    assert not guard.is_allowed("x.hooks.internal")
    assert not guard.is_allowed("hooks.internal.evil.com")
    assert not guard.is_allowed("127.0.0.1")


def test_from_env_parses_the_setting() -> None:
    guard = OutboundGuard.from_env(" localhost , 10.0.0.0/8,,::1, hooks.internal ")
    assert guard.allowed_names == frozenset({"localhost", "hooks.internal"})
    assert {str(n) for n in guard.allowed_networks} == {"10.0.0.0/8", "::1/128"}


@pytest.mark.parametrize("value", [None, "", " , "])
def test_from_env_empty_allows_nothing(value: str | None) -> None:
    guard = OutboundGuard.from_env(value)
    assert not guard.allowed_names
    assert not guard.allowed_networks
    with pytest.raises(UnsafeURL):
        guard.check_url("http://127.0.0.1/")


@pytest.mark.parametrize("entry", ["*", "http://localhost", "10.0.0.0/33", "a b", "1.2.3.4.5"])
def test_from_env_refuses_bad_entries(entry: str) -> None:
    with pytest.raises(ConfigError) as info:
        OutboundGuard.from_env(f"localhost,{entry}")
    assert info.value.location == ALLOW_ENV
    assert repr(entry) in info.value.message


# --- DNS --------------------------------------------------------------------------------


def test_name_resolving_to_loopback_is_refused() -> None:
    with pytest.raises(UnsafeURL) as info:
        OutboundGuard().check_url("http://localhost:8080/hook")
    assert info.value.problem == (
        "URL host 'localhost' resolves to a loopback address (127.0.0.1); outbound requests "
        "to internal addresses are refused (allow it with PUSHGUARD_OUTBOUND_ALLOW)"
    )


@pytest.mark.parametrize("allow", ["localhost", "127.0.0.1", "127.0.0.0/8"])
def test_name_resolving_to_loopback_passes_when_allowed(allow: str) -> None:
    url = "http://localhost:8080/hook"
    assert OutboundGuard.from_env(allow).check_url(url) == url


def test_localhost_is_refused_even_without_resolving() -> None:
    for host in ("localhost", "LOCALHOST.", "api.localhost"):
        with pytest.raises(UnsafeURL, match="loopback"):
            OutboundGuard().check_url(f"http://{host}/", resolve=False)


def test_localhost_without_resolving_follows_the_loopback_allow_list() -> None:
    for allow in ("127.0.0.1", "::1", "localhost"):
        guard = OutboundGuard.from_env(allow)
        assert guard.check_url("http://localhost:1/", resolve=False) == "http://localhost:1/"
    with pytest.raises(UnsafeURL):
        OutboundGuard.from_env("127.0.0.2").check_url("http://localhost:1/", resolve=False)


def test_unresolved_names_pass_when_not_resolving() -> None:
    url = "https://nohost.invalid/hook"
    assert OutboundGuard().check_url(url, resolve=False) == url


def test_unresolvable_host_is_refused() -> None:
    with pytest.raises(UnsafeURL) as info:
        OutboundGuard().check_url("https://nohost.invalid/hook")
    assert info.value.problem == "host 'nohost.invalid' does not resolve"


class CountingGetaddrinfo:
    """Wraps the real ``socket.getaddrinfo`` to count lookups per name."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.real = socket.getaddrinfo

    def __call__(self, host: str, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(host)
        return self.real(host, *args, **kwargs)


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> CountingGetaddrinfo:
    spy = CountingGetaddrinfo()
    monkeypatch.setattr(socket, "getaddrinfo", spy)
    return spy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_resolutions_are_cached_for_the_ttl(lookups: CountingGetaddrinfo) -> None:
    clock = Clock()
    guard = OutboundGuard(["127.0.0.1"], clock=clock)
    for _ in range(5):
        guard.check_url("http://localhost:8080/a")
    assert lookups.calls == ["localhost"]
    clock.now += 59.9
    guard.check_url("http://LOCALHOST:8080/b")
    assert lookups.calls == ["localhost"]
    clock.now += 0.2
    guard.check_url("http://localhost:8080/c")
    assert lookups.calls == ["localhost", "localhost"]


def test_cached_answers_are_still_judged(lookups: CountingGetaddrinfo) -> None:
    # The cache holds addresses, not verdicts: a refused name stays refused on a cache hit.
    guard = OutboundGuard()
    for _ in range(3):
        with pytest.raises(UnsafeURL, match="loopback"):
            guard.check_url("http://localhost/")
    assert lookups.calls == ["localhost"]


def test_failures_are_cached_briefly(lookups: CountingGetaddrinfo) -> None:
    clock = Clock()
    guard = OutboundGuard(clock=clock, negative_ttl=5.0)
    for _ in range(2):
        with pytest.raises(UnsafeURL, match="does not resolve"):
            guard.check_url("http://nohost.invalid/")
    assert lookups.calls == ["nohost.invalid"]
    clock.now += 5.0
    with pytest.raises(UnsafeURL, match="does not resolve"):
        guard.check_url("http://nohost.invalid/")
    assert lookups.calls == ["nohost.invalid", "nohost.invalid"]


def test_cache_is_bounded(lookups: CountingGetaddrinfo) -> None:
    guard = OutboundGuard(cache_size=2, negative_ttl=60.0)
    for name in ("a.invalid", "b.invalid", "c.invalid", "c.invalid", "a.invalid"):
        with pytest.raises(UnsafeURL):
            guard.check_url(f"http://{name}/")
    # "a" was the oldest entry when "c" arrived, so it had to be looked up again.
    assert lookups.calls == ["a.invalid", "b.invalid", "c.invalid", "a.invalid"]


def test_clear_cache(lookups: CountingGetaddrinfo) -> None:
    guard = OutboundGuard(["localhost"])
    guard.resolve("localhost")
    guard.clear_cache()
    guard.resolve("localhost")
    assert lookups.calls == ["localhost", "localhost"]


def test_refused_if_any_resolved_address_is_internal(monkeypatch: pytest.MonkeyPatch) -> None:
    # A name with one public and one private answer: no real DNS server can serve this here.
    def two_answers(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_V4, 0)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fd00::7", 0, 0, 0)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", two_answers)
    with pytest.raises(UnsafeURL) as info:
        OutboundGuard().check_url("https://mixed.example/hook")
    assert "resolves to a private address (unique local) (fd00::7)" in info.value.problem
    assert OutboundGuard(["fd00::/8"]).check_url("https://mixed.example/hook")


async def test_async_check_has_the_same_rules() -> None:
    guard = OutboundGuard()
    with pytest.raises(UnsafeURL, match="resolves to a loopback address"):
        await guard.check_url_async("http://localhost:8080/")
    with pytest.raises(UnsafeURL, match="does not resolve"):
        await guard.check_url_async("http://nohost.invalid/")
    with pytest.raises(UnsafeURL, match="is not allowed"):
        await guard.check_url_async("gopher://localhost/")
    with pytest.raises(UnsafeURL, match="loopback"):
        await guard.check_url_async("http://0x7f000001/")
    with pytest.raises(HeaderInjection):
        await guard.check_url_async("http://localhost/\n")
    assert await guard.check_url_async(f"http://{PUBLIC_V4}/") == f"http://{PUBLIC_V4}/"
    allowed = OutboundGuard(["localhost"])
    assert await allowed.check_url_async("http://localhost:1/") == "http://localhost:1/"


async def test_async_check_uses_the_cache(lookups: CountingGetaddrinfo) -> None:
    clock = Clock()
    guard = OutboundGuard(["127.0.0.1"], clock=clock)
    guard.check_url("http://localhost/")
    await guard.check_url_async("http://localhost/")
    assert lookups.calls == ["localhost"]


# --- send time: check_connect_target and GuardedResolver ---------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "127.0.0.1",
        "::1",
        "[::1]",
        "10.0.0.1",
        "169.254.169.254",
        "2130706433",
        "localhost",
        "http://127.0.0.1:8080/x",
        "https://[::ffff:10.0.0.1]/x",
    ],
)
def test_check_connect_target_refuses_internal_literals(target: str) -> None:
    with pytest.raises(UnsafeURL):
        OutboundGuard().check_connect_target(target)


@pytest.mark.parametrize(
    "target", [PUBLIC_V4, "example.com", f"https://{PUBLIC_V4}/x", "https://nohost.invalid/x"]
)
def test_check_connect_target_passes_public_literals_and_names(
    target: str, lookups: CountingGetaddrinfo
) -> None:
    OutboundGuard().check_connect_target(target)
    assert lookups.calls == []  # names are left to the resolver


def test_check_connect_target_honours_the_allow_list() -> None:
    OutboundGuard(["127.0.0.1"]).check_connect_target("http://127.0.0.1:8080/x")
    OutboundGuard(["127.0.0.1"]).check_connect_target("127.0.0.1")


def test_check_connect_target_refuses_bad_schemes() -> None:
    with pytest.raises(UnsafeURL, match="scheme"):
        OutboundGuard().check_connect_target("file:///etc/passwd")


Server = tuple[int, list[str]]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    """A real HTTP server on 127.0.0.1 that records the paths it served."""
    hits: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port, hits
    finally:
        await runner.cleanup()


async def fetch(guard: OutboundGuard, url: str, resolver: AbstractResolver | None = None) -> int:
    guarded = GuardedResolver(guard, resolver)
    try:
        connector = aiohttp.TCPConnector(resolver=guarded, use_dns_cache=False)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(url, allow_redirects=False) as resp,
        ):
            return resp.status
    finally:
        await guarded.close()


async def test_resolver_refuses_a_name_resolving_to_loopback(server: Server) -> None:
    port, hits = server
    with pytest.raises(aiohttp.ClientConnectorError) as info:
        await fetch(OutboundGuard(), f"http://localhost:{port}/hook")
    refusal = find_refusal(info.value)
    assert isinstance(refusal, OutboundRefused)
    assert refusal.host == "localhost"
    assert "loopback address (127.0.0.1)" in refusal.problem
    assert "blocked" in str(info.value.os_error)
    assert hits == []


@pytest.mark.parametrize("allow", ["localhost", "127.0.0.1", "127.0.0.0/8"])
async def test_resolver_connects_when_allowed(server: Server, allow: str) -> None:
    port, hits = server
    assert await fetch(OutboundGuard.from_env(allow), f"http://localhost:{port}/hook") == 200
    assert hits == ["/hook"]


async def test_resolver_sees_hex_hosts_that_aiohttp_does_not_treat_as_literals(
    server: Server,
) -> None:
    port, hits = server
    with pytest.raises(aiohttp.ClientConnectorError) as info:
        await fetch(OutboundGuard(), f"http://0x7f000001:{port}/hook")
    assert find_refusal(info.value) is not None
    assert hits == []


async def test_ip_literals_skip_the_resolver_so_check_connect_target_is_needed(
    server: Server,
) -> None:
    # This is why providers must call check_connect_target: aiohttp connects to IP literals
    # without asking the resolver, so GuardedResolver alone lets this one through.
    port, hits = server
    guard = OutboundGuard()
    url = f"http://127.0.0.1:{port}/literal"
    assert await fetch(guard, url) == 200
    assert hits == ["/literal"]
    with pytest.raises(UnsafeURL, match="loopback"):
        guard.check_connect_target(url)


class ScriptedResolver(AbstractResolver):
    """An inner resolver with fixed answers: rebinding needs a DNS server we do not have."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.answers
        ]

    async def close(self) -> None:
        self.closed = True


async def test_resolver_keeps_only_permitted_addresses() -> None:
    inner = ScriptedResolver(["127.0.0.1", PUBLIC_V4, "fd00::1", "2606:4700:4700::1111"])
    resolver = GuardedResolver(OutboundGuard(), inner)
    answers = await resolver.resolve("rebind.example", 443, socket.AF_UNSPEC)
    assert [a["host"] for a in answers] == [PUBLIC_V4, "2606:4700:4700::1111"]
    assert all(a["hostname"] == "rebind.example" and a["port"] == 443 for a in answers)
    await resolver.close()
    assert inner.closed


async def test_resolver_refuses_when_every_address_is_internal() -> None:
    resolver = GuardedResolver(OutboundGuard(), ScriptedResolver(["10.0.0.1", "169.254.169.254"]))
    with pytest.raises(OSError, match="blocked outbound connection to 'rebind.example'"):
        await resolver.resolve("rebind.example", 80)


async def test_resolver_passes_allowed_hosts_and_addresses_through() -> None:
    inner = ScriptedResolver(["10.0.0.1", "10.9.0.1"])
    by_name = GuardedResolver(OutboundGuard(["hooks.internal"]), inner)
    assert len(await by_name.resolve("hooks.internal", 80)) == 2
    by_net = GuardedResolver(OutboundGuard(["10.0.0.0/16"]), inner)
    assert [a["host"] for a in await by_net.resolve("hooks.example", 80)] == ["10.0.0.1"]


async def test_resolver_passes_dns_failures_through() -> None:
    resolver = GuardedResolver(OutboundGuard())
    with pytest.raises(OSError) as info:
        await resolver.resolve("nohost.invalid", 80)
    assert not isinstance(info.value, OutboundRefused)
    await resolver.close()


def test_find_refusal_walks_causes() -> None:
    refusal = OutboundRefused("x", "because")
    try:
        try:
            raise refusal
        except OSError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as outer:
        assert find_refusal(outer) is refusal
    assert find_refusal(ValueError("no")) is None
    assert refusal.strerror == "blocked outbound connection to 'x': because"


def test_ipv6_literal_with_zone_is_judged() -> None:
    with pytest.raises(UnsafeURL, match="link-local"):
        OutboundGuard().check_url("http://[fe80::1%25eth0]/")
    assert isinstance(parse_ip_literal("[fe80::1%25eth0]"), IPv6Address)
