"""The HTTP plumbing shared by HTTP providers: one aiohttp session per provider, the SSRF guard
on every connection, and transport errors translated into taxonomy causes once, here.

aiohttp, not httpx: on this kind of machine aiohttp sustains ~10k requests/s to a local server
where httpx manages ~0.5k, and delivery is our hot path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

import aiohttp
from multidict import CIMultiDictProxy

from pushguard import taxonomy
from pushguard.exceptions import DeliveryError, InputError
from pushguard.providers.resolver import GuardedResolver
from pushguard.ssrf import OutboundGuard, find_refusal

if TYPE_CHECKING:
    from pushguard.config import ProviderConfig
    from pushguard.providers.base import ProviderContext

#: provider error bodies are stored for diagnosis, but bounded.
MAX_RAW = 2048


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    latency: float

    @property
    def text(self) -> str:
        return self.body[:MAX_RAW].decode("utf-8", "replace")

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class HttpClient:
    """A pooled, guarded HTTP client for one provider."""

    def __init__(
        self, *, guard: OutboundGuard, timeout: float, concurrency: int, provider: str
    ) -> None:
        self.guard = guard
        self.timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 10.0))
        self.concurrency = concurrency
        self.provider = provider
        self._session: aiohttp.ClientSession | None = None
        self._resolver: GuardedResolver | None = None
        self._targets: dict[str, str | None] = {}

    @classmethod
    def for_provider(cls, config: ProviderConfig, context: ProviderContext) -> HttpClient:
        """The client a provider's config asks for: its timeout and connection limit."""
        return cls(guard=context.guard, timeout=config.timeout,
                   concurrency=config.concurrency, provider=config.name)

    async def start(self) -> None:
        if self._session is None:
            self._resolver = GuardedResolver(self.guard)
            connector = aiohttp.TCPConnector(
                limit=self.concurrency,
                resolver=self._resolver,
                ttl_dns_cache=60,
                enable_cleanup_closed=True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self.timeout,
                headers={"User-Agent": "pushguard/0.1"},
                auto_decompress=True,
                # Each request stands alone: a cookie one receiver sets must not ride along
                # to the next request, or to another tenant's receiver on the same domain.
                cookie_jar=aiohttp.DummyCookieJar(),
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None

    def _check_target(self, url: str) -> None:
        """The SSRF check for IP-literal hosts, remembered per scheme and host: the guard's
        verdict on a host cannot change while the process runs (names are re-checked by the
        resolver at every new connection)."""
        origin = url.split("/", 3)[2] if url.count("/") >= 2 else url
        problem = self._targets.get(origin, "?")
        if problem == "?":
            try:
                self.guard.check_connect_target(url)
                problem = None
            except InputError as exc:
                problem = exc.problem
            if len(self._targets) > 10_000:
                self._targets.clear()
            self._targets[origin] = problem
        if problem is not None:
            raise DeliveryError(taxonomy.VALIDATION_ERROR, problem, provider_code="SSRF_BLOCKED")

    async def post(self, url: str, *, data: bytes, headers: dict[str, str],
                   max_body: int = 64 * 1024) -> Response:
        return await self.request("POST", url, data=data, headers=headers, max_body=max_body)

    async def get(self, url: str, *, headers: dict[str, str],
                  max_body: int = 64 * 1024) -> Response:
        """A read-only call, such as a live check of credentials."""
        return await self.request("GET", url, data=None, headers=headers, max_body=max_body)

    async def request(
        self, method: str, url: str, *, data: bytes | None, headers: dict[str, str],
        max_body: int = 64 * 1024,
    ) -> Response:
        """Send and return the response, or raise ``DeliveryError`` for transport failures.

        A failure after the request was written is an ambiguous outcome (``maybe_sent``): the
        provider may have acted on it, so the retry must carry the same idempotency id.
        """
        if self._session is None:
            await self.start()
        assert self._session is not None
        self._check_target(url)
        started = time.perf_counter()
        try:
            async with self._session.request(
                method, url, data=data, headers=headers, allow_redirects=False
            ) as resp:
                body = await resp.content.read(max_body)
                return Response(resp.status, resp.headers, body, time.perf_counter() - started)
        except TimeoutError as exc:
            raise DeliveryError(
                taxonomy.NETWORK_TIMEOUT,
                f"no answer within {self.timeout.total:g} s",
                provider_code="TIMEOUT",
                maybe_sent=True,
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            refusal = find_refusal(exc)
            if refusal is not None:
                raise DeliveryError(
                    taxonomy.VALIDATION_ERROR, refusal.problem, provider_code="SSRF_BLOCKED"
                ) from exc
            raise DeliveryError(
                taxonomy.NETWORK_TIMEOUT,
                f"cannot connect: {exc.os_error or exc}",
                provider_code="CONNECT_ERROR",
            ) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise DeliveryError(
                taxonomy.NETWORK_TIMEOUT,
                f"connection reset ({type(exc).__name__})",
                provider_code="CONNECTION_RESET",
                maybe_sent=True,
            ) from exc
        except aiohttp.ClientPayloadError as exc:
            raise DeliveryError(
                taxonomy.NETWORK_TIMEOUT,
                "connection dropped while reading the answer",
                provider_code="CONNECTION_RESET",
                maybe_sent=True,
            ) from exc
        except aiohttp.ClientError as exc:
            raise DeliveryError(
                taxonomy.UNKNOWN, f"HTTP client error: {exc}", provider_code=type(exc).__name__
            ) from exc
