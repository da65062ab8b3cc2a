"""Every error pushguard raises, in one tree.

::

    PushguardError
    ├── ConfigError                  settings or pushguard.toml are wrong
    ├── StoreError                   the database failed (driver errors wrapped here)
    │   └── IdempotencyConflict      same idempotency key, different request body
    ├── InputError                   a request is invalid; carries the field and the problem
    │   ├── InvalidAddress           `to` is not an address of that channel
    │   ├── UnsafeURL                an outbound URL is refused by the SSRF guard
    │   └── HeaderInjection          CR, LF or NUL in a header-bound field
    ├── AuthError                    missing or wrong API key
    ├── RateLimited                  this API key sends faster than its limit
    ├── NotFound                     no such object
    ├── Conflict                     the object is not in a state that allows this
    │   └── Blocked                  a campaign's pre-flight found blocking problems
    └── DeliveryError                a provider did not take a message (see `taxonomy.Cause`)

A provider's ``send`` returns a receipt or raises :class:`DeliveryError`; the pipeline decides
what happens next from the error's cause alone. Third-party errors are translated into these at
the boundary, once, with the original kept as ``__cause__``.

Each class's docstring is its default message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pushguard.taxonomy import Cause


class PushguardError(Exception):
    """Something went wrong in pushguard."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip().splitlines()[0])

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(PushguardError):
    """The configuration is invalid."""

    def __init__(self, message: str | None = None, *, location: str = "") -> None:
        super().__init__(message)
        self.location = location

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class StoreError(PushguardError):
    """The database did not answer as expected."""


class IdempotencyConflict(StoreError):
    """This idempotency key was already used with a different request body."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was already used with a different request body"
        )
        self.key = key


class InputError(PushguardError):
    """The request is invalid."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "problem": self.problem}


class InvalidAddress(InputError):
    """The address is not valid for this channel."""


class UnsafeURL(InputError):
    """The URL is refused by the outbound (SSRF) guard."""


class HeaderInjection(InputError):
    """A header-bound field contains CR, LF or NUL."""


class AuthError(PushguardError):
    """Missing or invalid API key."""


class RateLimited(PushguardError):
    """Too many requests for this API key."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many requests for this API key; retry in {retry_after:.1f} s")
        self.retry_after = retry_after


class NotFound(PushguardError):
    """No such object."""


class Conflict(PushguardError):
    """The object is not in a state that allows this."""


class Blocked(Conflict):
    """The pre-flight check found problems that block sending; fix them, or override with a
    reason (the override is recorded)."""

    def __init__(self, message: str, findings: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.findings = findings


class DeliveryError(PushguardError):
    """The provider did not accept the message.

    ``cause`` is one of the taxonomy's causes; ``provider_code`` is the provider's own code or
    reason string (e.g. ``UNREGISTERED``, ``550 5.1.1``, ``HTTP 503``); ``retry_after`` is the
    provider's requested delay in seconds; ``maybe_sent`` marks an ambiguous outcome (the
    request may have reached the provider before the failure); ``scope`` says what a rate
    limit applies to (``recipient``, ``provider``, ``domain``, ``topic``).
    """

    def __init__(
        self,
        cause: Cause,
        detail: str,
        *,
        provider_code: str | None = None,
        status: int | None = None,
        raw: str | None = None,
        retry_after: float | None = None,
        maybe_sent: bool = False,
        scope: str | None = None,
        suppress: bool | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{cause.name}: {detail}")
        self.cause = cause
        self.detail = detail
        self.provider_code = provider_code
        self.status = status
        self.raw = raw
        self.retry_after = retry_after
        self.maybe_sent = maybe_sent
        self.scope = scope
        #: overrides the cause's default: False keeps the address usable after this failure.
        self.suppress = suppress
        self.extra = extra or {}
