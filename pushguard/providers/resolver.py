"""The SSRF guard at connect time: an aiohttp resolver that drops internal addresses.

Kept apart from :mod:`pushguard.ssrf` (the policy) so that what only checks URLs, the API and
the CLI among them, does not import aiohttp.
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from pushguard.ssrf import OutboundGuard, OutboundRefused, resolved_problem


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that returns only addresses the guard permits.

    Pass it to ``aiohttp.TCPConnector(resolver=...)``. Each lookup goes to ``inner`` (aiohttp's
    default resolver unless given) and internal addresses are dropped from the answer; if
    none is left it raises :class:`OutboundRefused`. Hosts in the allow-list are passed through
    unfiltered. The connector does not close a resolver it was given: close the session's
    connector *and* this resolver (which closes ``inner``).

    IP-literal hosts never reach a resolver; see :meth:`OutboundGuard.check_connect_target`.
    """

    def __init__(self, guard: OutboundGuard, inner: AbstractResolver | None = None) -> None:
        self.guard = guard
        # DefaultResolver needs a running loop, which __init__ may not have; create it lazily.
        self._inner = inner

    @property
    def inner(self) -> AbstractResolver:
        """The wrapped resolver."""
        if self._inner is None:
            self._inner = DefaultResolver()
        return self._inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve ``host`` and keep only the addresses the guard permits."""
        answers = await self.inner.resolve(host, port, family)
        if self.guard.is_allowed(host):
            return answers
        kept: list[ResolveResult] = []
        problem = f"host {host!r} resolved to no usable address"
        for answer in answers:
            try:
                ip = ipaddress.ip_address(answer["host"])
            except ValueError:
                continue
            reason = self.guard.refusal_reason(ip)
            if reason is None:
                kept.append(answer)
            else:
                problem = resolved_problem(host, ip, reason)
        if not kept:
            raise OutboundRefused(host, problem)
        return kept

    async def close(self) -> None:
        """Close the wrapped resolver."""
        if self._inner is not None:
            await self._inner.close()
