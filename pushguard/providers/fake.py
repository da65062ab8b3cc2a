"""An in-memory provider for tests and rehearsals: no network, scripted answers.

``script`` maps an address to a list of outcomes consumed in order (the last one repeats);
an outcome is ``"ok"`` or the name of a taxonomy cause (``"PROVIDER_OUTAGE"``). Every call is
kept in :attr:`FakeProvider.sent`, so a test sees exactly what reached the "provider".
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from pushguard import taxonomy
from pushguard.exceptions import DeliveryError
from pushguard.providers.base import Delivery, Provider, ProviderContext, ProviderMeta, Receipt

if TYPE_CHECKING:
    from pushguard.config import ProviderConfig


class FakeProvider(Provider):
    meta = ProviderMeta(
        type="fake",
        channels=frozenset({"webhook", "sms", "email", "fcm", "apns", "webpush", "chat"}),
        description="in-memory scripted provider for tests",
    )

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        script = config.options.get("script", {})
        self.script: dict[str, list[str]] = {k: list(v) for k, v in dict(script).items()}
        self.default = str(config.options.get("default", "ok"))
        self.delay = float(config.options.get("delay", 0.0))
        self.retry_after = config.options.get("retry_after")
        self.sent: list[Delivery] = []

    def _next(self, address: str) -> str:
        steps = self.script.get(address)
        if not steps:
            return self.default
        return steps.pop(0) if len(steps) > 1 else steps[0]

    async def send(self, delivery: Delivery) -> Receipt:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.sent.append(delivery)
        outcome = self._next(delivery.to)
        if outcome == "ok":
            return Receipt(status=200, provider_message_id=f"fake-{len(self.sent)}")
        cause = taxonomy.get(outcome)
        raise DeliveryError(
            cause,
            f"scripted {outcome}",
            provider_code=outcome,
            retry_after=float(self.retry_after) if self.retry_after is not None else None,
        )
