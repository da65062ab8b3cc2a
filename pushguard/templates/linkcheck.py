"""Links and images in rendered templates, checked over HTTP.

Every URL is a request to somewhere a template author chose, so each one goes through the
outbound guard (GUARANTEES.md §4.2): the URL is checked (scheme, credentials, host, resolved
addresses) before the request, the connection resolves through
:class:`~pushguard.providers.resolver.GuardedResolver` so it is pinned to checked addresses,
and redirects are never followed by aiohttp: each ``Location`` is checked the same way before it is
requested, at most ``max_redirects`` times, and a URL seen twice is a loop.

Checks run concurrently (``concurrency`` at once, ``per_host`` per host), each URL once per
run, each within ``timeout`` seconds however many redirects it takes. Results are kept for
``ttl`` seconds (failures for ``failure_ttl``), so linting again, or another template with the
same footer, does not ask again. Only an image's body is read, and only up to
``max_image_bytes`` + 1 when the server does not say its length.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from html.parser import HTMLParser

import aiohttp
from yarl import URL

from pushguard.exceptions import InputError
from pushguard.providers.resolver import GuardedResolver
from pushguard.ssrf import OutboundGuard, find_refusal

REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_LINKS = 200
_TEXT_URL = re.compile(r"https?://[^\s<>\"'{}|\\^`\[\]]+")
_TRAILING = ".,;:!?)"
CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class LinkResult:
    """What one URL answered. ``code`` is ``ok`` or what is wrong: ``http_error``,
    ``timeout``, ``unreachable``, ``unsafe``, ``redirect_loop``, ``too_many_redirects``,
    ``bad_redirect``, ``not_image``, ``image_too_large``."""

    url: str
    image: bool
    code: str
    problem: str | None = None
    status: int | None = None
    final_url: str | None = None
    content_type: str | None = None
    size: int | None = None
    redirects: int = 0
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.code == "ok"

    def as_dict(self) -> dict[str, object]:
        return {"url": self.url, "image": self.image, "code": self.code,
                "problem": self.problem, "status": self.status, "final_url": self.final_url,
                "content_type": self.content_type, "size": self.size,
                "redirects": self.redirects, "cached": self.cached}


def usable(url: str) -> bool:
    """An absolute http(s) URL with no template placeholder left in it."""
    return url.startswith(("http://", "https://")) and not any(c in url for c in "{} \t\n")


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, bool, int]] = []

    def _add(self, url: str | None, image: bool) -> None:
        if url:
            self.found.append((url.strip(), image, self.getpos()[0]))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "href" and tag in ("a", "area"):
                self._add(value, False)
            elif name == "src" and tag == "img":
                self._add(value, True)
            elif name == "srcset" and tag in ("img", "source") and value:
                for part in value.split(","):
                    words = part.split()
                    if words:
                        self._add(words[0], True)
            elif name == "background":
                self._add(value, True)


def from_html(html: str) -> list[tuple[str, bool, int]]:
    """``(url, is_image, line)`` for every link and image in an HTML body."""
    parser = _Collector()
    parser.feed(html)
    parser.close()
    return [f for f in parser.found if usable(f[0])]


def from_text(text: str) -> list[tuple[str, bool, int]]:
    """``(url, False, line)`` for every http(s) URL in plain text."""
    out = []
    for m in _TEXT_URL.finditer(text):
        url = m.group(0).rstrip(_TRAILING)
        if usable(url):
            out.append((url, False, text.count("\n", 0, m.start()) + 1))
    return out


class LinkChecker:
    def __init__(self, guard: OutboundGuard, *, timeout: float = 5.0, concurrency: int = 8,
                 per_host: int = 4, max_redirects: int = 5, max_image_bytes: int = 1 << 20,
                 ttl: float = 600.0, failure_ttl: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.guard = guard
        self.timeout = timeout
        self.concurrency = concurrency
        self.per_host = per_host
        self.max_redirects = max_redirects
        self.max_image_bytes = max_image_bytes
        self.ttl = ttl
        self.failure_ttl = failure_ttl
        self._clock = clock
        self._cache: dict[tuple[str, bool], tuple[float, LinkResult]] = {}
        # API requests lint on different threads' event loops; the cache is shared.
        self._lock = threading.Lock()

    def cached(self, url: str, image: bool) -> LinkResult | None:
        with self._lock:
            hit = self._cache.get((url, image))
            if hit is None:
                return None
            if hit[0] <= self._clock():
                del self._cache[(url, image)]
                return None
            return replace(hit[1], cached=True)

    def _remember(self, result: LinkResult) -> None:
        ttl = self.ttl if result.ok else self.failure_ttl
        with self._lock:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[(result.url, result.image)] = (self._clock() + ttl, result)

    async def check(self, links: Iterable[tuple[str, bool]]) -> dict[tuple[str, bool],
                                                                      LinkResult]:
        """Check each distinct ``(url, is_image)`` once; cached answers are reused."""
        out: dict[tuple[str, bool], LinkResult] = {}
        todo: list[tuple[str, bool]] = []
        for key in dict.fromkeys(links):
            hit = self.cached(*key)
            if hit is not None:
                out[key] = hit
            else:
                todo.append(key)
        if not todo:
            return out
        resolver = GuardedResolver(self.guard)
        connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=self.per_host,
                                         resolver=resolver, ttl_dns_cache=60)
        gate = asyncio.Semaphore(self.concurrency)
        try:
            async with aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": "pushguard-linkcheck/0.1"},
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as session:
                async def one(key: tuple[str, bool]) -> None:
                    async with gate:
                        result = await self._timed(session, *key)
                    self._remember(result)
                    out[key] = result

                await asyncio.gather(*(one(k) for k in todo))
        finally:
            await resolver.close()
        return out

    async def _timed(self, session: aiohttp.ClientSession, url: str, image: bool) -> LinkResult:
        try:
            return await asyncio.wait_for(self._follow(session, url, image), self.timeout)
        except TimeoutError:
            return LinkResult(url, image, "timeout", f"no answer within {self.timeout:g} s")

    async def _follow(self, session: aiohttp.ClientSession, url: str,
                      image: bool) -> LinkResult:
        seen = [url]
        current = url
        while True:
            hops = len(seen) - 1
            try:
                current = await self.guard.check_url_async(current, field="url")
            except InputError as exc:
                where = "" if current == url else f" (redirected to {current})"
                if exc.problem.endswith("does not resolve"):
                    return LinkResult(url, image, "unreachable", f"{exc.problem}{where}",
                                      final_url=current, redirects=hops)
                return LinkResult(url, image, "unsafe", f"refused by the outbound guard"
                                  f"{where}: {exc.problem}", final_url=current, redirects=hops)
            try:
                async with session.get(current, allow_redirects=False) as resp:
                    if resp.status in REDIRECTS:
                        nxt = self._next(current, resp.headers.get("Location"))
                    else:
                        return await self._judge(url, image, resp, current, hops)
            except aiohttp.ClientError as exc:
                refusal = find_refusal(exc)
                if refusal is not None:
                    return LinkResult(url, image, "unsafe", f"refused by the outbound guard: "
                                      f"{refusal.problem}", final_url=current, redirects=hops)
                return LinkResult(url, image, "unreachable",
                                  f"could not connect: {type(exc).__name__}: {exc}",
                                  final_url=current, redirects=hops)
            if nxt is None:
                return LinkResult(url, image, "bad_redirect", "a redirect without a usable "
                                  "Location header", final_url=current, redirects=hops)
            if nxt in seen:
                return LinkResult(url, image, "redirect_loop", "redirects in a loop: "
                                  + " -> ".join([*seen[seen.index(nxt):], nxt]),
                                  final_url=nxt, redirects=hops + 1)
            if hops + 1 > self.max_redirects:
                return LinkResult(url, image, "too_many_redirects", f"more than "
                                  f"{self.max_redirects} redirects", final_url=nxt,
                                  redirects=hops + 1)
            seen.append(nxt)
            current = nxt

    @staticmethod
    def _next(current: str, location: str | None) -> str | None:
        if not location:
            return None
        try:
            return str(URL(current).join(URL(location)))
        except (ValueError, TypeError):
            return None

    async def _judge(self, url: str, image: bool, resp: aiohttp.ClientResponse, final: str,
                     hops: int) -> LinkResult:
        ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower() or None
        base = LinkResult(url, image, "ok", status=resp.status, final_url=final,
                          content_type=ctype, redirects=hops)
        if resp.status >= 400:
            return replace(base, code="http_error", problem=f"answers HTTP {resp.status}")
        if not image:
            return base
        if not ctype or not ctype.startswith("image/"):
            return replace(base, code="not_image",
                           problem=f"is served as {ctype or 'no content type'}, not an image")
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit():
            size, what = int(declared), f"{int(declared)} bytes"
        else:
            size = 0
            async for chunk in resp.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > self.max_image_bytes:
                    break
            what = f"more than {self.max_image_bytes} bytes"
        if size > self.max_image_bytes:
            return replace(base, code="image_too_large", size=size,
                           problem=f"the image is {what}; keep images under "
                           f"{self.max_image_bytes} bytes")
        return replace(base, size=size)
