"""The provider interface.

A provider takes one :class:`Delivery` and either returns a :class:`Receipt` or raises
:class:`~pushguard.exceptions.DeliveryError` naming a taxonomy cause. It never returns a
boolean and never swallows an error: the pipeline decides what to do from the cause.

Providers are constructed from their :class:`~pushguard.config.ProviderConfig` and a
:class:`ProviderContext` (settings, SSRF guard), opened once per worker (:meth:`start`, where
connection pools are made) and closed on shutdown.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pushguard.exceptions import ConfigError

if TYPE_CHECKING:
    from pushguard.config import ProviderConfig
    from pushguard.settings import Settings
    from pushguard.ssrf import OutboundGuard


@dataclass(frozen=True)
class ProviderMeta:
    """What a provider type declares about itself."""

    type: str
    channels: frozenset[str]
    #: option names whose values are secrets: never logged, never returned by the API.
    secret_options: frozenset[str] = frozenset()
    #: largest serialized payload the provider accepts (for people and tools reading the
    #: metadata; each provider's ``validate_content`` enforces it at intake).
    max_payload_bytes: int | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message on its way to one provider."""

    message_id: str
    channel: str
    to: str
    content: Mapping[str, Any]
    topic: str | None
    attempt: int
    priority: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class Receipt:
    """The provider accepted the message."""

    status: int | None = None
    provider_message_id: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class ProviderContext:
    settings: Settings
    guard: OutboundGuard


class Provider(ABC):
    """Base class of every provider."""

    meta: ClassVar[ProviderMeta]

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        self.config = config
        self.context = context
        self.name = config.name

    @classmethod
    def check_options(cls, config: ProviderConfig, *, location: str) -> list[ConfigError]:
        """Problems with this provider's options, for ``pushguard config check``."""
        return []

    @classmethod
    def validate_content(cls, channel: str, content: Mapping[str, Any]) -> None:
        """Refuse, at intake, content this provider can never send (raise ``InputError``)."""

    def breaker_key(self, delivery: Delivery) -> str:
        """What one circuit breaker covers; by default the whole provider."""
        return self.name

    async def start(self) -> None:
        """Open connection pools; called once before the first send."""

    async def close(self) -> None:
        """Release connections; called once on shutdown."""

    async def check(self) -> bool:
        """A live check of the connection and credentials that delivers nothing to anyone
        (APNs's is a push to a device token no device has): True when it passed, False when
        this type has none; raises ``DeliveryError`` when it fails."""
        return False

    @abstractmethod
    async def send(self, delivery: Delivery) -> Receipt:
        """Deliver one message, or raise ``DeliveryError``."""

    def describe(self) -> dict[str, Any]:
        """Public description with secrets masked."""
        options = {
            k: ("***" if k in self.meta.secret_options else v)
            for k, v in self.config.options.items()
        }
        return {
            "name": self.name,
            "type": self.meta.type,
            "options": options,
            "timeout": self.config.timeout,
            "rate": self.config.rate,
            "concurrency": self.config.concurrency,
        }
