"""The store interface: the durable queue and everything recorded about messages.

Every method is synchronous and does one transaction over a whole batch; the async worker
calls it from one dedicated thread, once per batch, never once per message.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from pushguard.exceptions import IdempotencyConflict
from pushguard.models import Accepted, Job, MessageView, NewMessage, Outcome


@dataclass(frozen=True, slots=True)
class QueueStats:
    by_state: dict[str, int]
    #: seconds since the most overdue ready message became due (0 when none is due).
    oldest_due_age: float
    suppressions: int


@dataclass(frozen=True, slots=True)
class Suppression:
    channel: str
    address: str
    reason: str
    source: str
    created_at: float


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    id: str
    channel: str
    state: str
    attempts: int
    first_provider: str | None
    last_provider: str | None
    cause: str | None
    provider_code: str | None
    #: the pre-send gate's rule, for messages it stopped
    rule: str | None = None


class Store(ABC):
    """What the pipeline and the edges need from a database."""

    @abstractmethod
    def migrate(self) -> None:
        """Bring the schema to the newest migration."""

    @abstractmethod
    def schema_is_current(self) -> bool: ...

    @abstractmethod
    def ping(self) -> None: ...

    @abstractmethod
    def enqueue(
        self, items: Sequence[NewMessage], *, scope: str
    ) -> list[Accepted | IdempotencyConflict]:
        """Commit new messages; replay or refuse those whose idempotency key was seen."""

    @abstractmethod
    def claim(self, owner: str, limit: int, lease: float) -> list[Job]:
        """Lease up to ``limit`` due messages, highest priority and most overdue first."""

    @abstractmethod
    def exchange(
        self, owner: str, outcomes: Sequence[Outcome], limit: int, lease: float
    ) -> list[Job]:
        """:meth:`record` then :meth:`claim`, in one transaction: one commit per cycle."""

    def exchange_nowait(
        self, owner: str, outcomes: Sequence[Outcome], limit: int, lease: float
    ) -> list[Job] | None:
        """:meth:`exchange` on the caller's thread, if it cannot wait on anything: None
        means "call :meth:`exchange` from a thread instead". A store whose writes may block
        (on a lock, the network or a disk flush) keeps this default."""
        return None

    def checkpoint(self) -> None:  # noqa: B027 - optional, with nothing to do by default
        """Housekeeping that :meth:`exchange_nowait` leaves to the caller's other thread."""

    @abstractmethod
    def reap(self, limit: int = 1000) -> int:
        """Return messages whose lease expired (their worker died) to the queue."""

    @abstractmethod
    def record(self, owner: str, outcomes: Sequence[Outcome]) -> int:
        """Write the outcomes of leased messages; returns how many were still ours."""

    @abstractmethod
    def get(self, message_id: str) -> MessageView | None: ...

    @abstractmethod
    def list_messages(
        self,
        *,
        state: str | None = None,
        cause: str | None = None,
        since: float | None = None,
        limit: int = 100,
        cursor: tuple[float, str] | None = None,
    ) -> list[MessageView]:
        """Newest first; ``cursor`` is the (created_at, id) of the last message already seen."""

    @abstractmethod
    def stats(self) -> QueueStats: ...

    @abstractmethod
    def outcomes(self, *, since: float = 0.0) -> list[OutcomeRow]:
        """One row per message created since ``since``: how it ended and through whom."""

    @abstractmethod
    def sweep_unconfirmed(self, limit: int = 500) -> int:
        """Start the fallback of delivered messages not confirmed within their window."""

    @abstractmethod
    def add_receipt(
        self, message_id: str, provider_message_id: str, note: str, *, cause: str | None = None,
        suppress: tuple[str, str] | None = None, by_provider: bool = False,
        confirmed: bool = False,
    ) -> bool:
        """Record what a provider reported after it accepted a message (an event that does
        not change the state); optionally suppress ``(channel, reason)`` for its address
        (an empty channel means the message's). ``confirmed``: the receipt says the message
        arrived (its confirmation window closes); a failure starts its fallback leg. False
        when no delivered message was sent under that provider id (or, with ``by_provider``,
        through that provider)."""

    @abstractmethod
    def suppress(self, channel: str, address: str, reason: str, source: str,
                 *, actor: str = "admin") -> None:
        """Put an address on a channel's suppression list (audited)."""

    @abstractmethod
    def unsuppress(self, channel: str, address: str, *, actor: str = "admin",
                   note: str = "") -> bool:
        """Lift a suppression; the audit log keeps what it was, who lifted it and why."""

    @abstractmethod
    def suppressions(self, limit: int = 100) -> list[Suppression]: ...

    @abstractmethod
    def create_api_key(self, name: str) -> tuple[str, str]:
        """A new key: ``(key id, plaintext key)``. Only its SHA-256 is stored."""

    @abstractmethod
    def api_key_id(self, key_hash: str) -> str | None: ...

    @abstractmethod
    def revoke_api_key(self, key_id: str) -> bool: ...

    @abstractmethod
    def api_keys(self) -> list[dict[str, object]]: ...

    @abstractmethod
    def close(self) -> None: ...
