"""Delivery receipts: what a provider reports about a message *after* it accepted it.

A provider's ``send`` ends when the provider queues the message; whether a handset or mailbox
got it arrives later, as a callback to our inbound endpoint. Each module here turns one
provider's callback into a :class:`StatusReceipt` with pure functions (signature check and
parsing, no web framework), so the API layer only has to route the request and apply the
result.
"""

from __future__ import annotations

from dataclasses import dataclass

from pushguard.taxonomy import NO_CONSENT, Action, Cause

__all__ = ["StatusReceipt"]


@dataclass(frozen=True, slots=True)
class StatusReceipt:
    """One status report about one message we handed to a provider."""

    provider_message_id: str
    #: the provider's own status word, lower-cased (``sent``, ``delivered``, ``undelivered``).
    status: str
    #: the provider's error code, as sent (``"30005"``), or None.
    error_code: str | None
    #: why it failed, when it did; None while in flight, when delivered or cancelled.
    cause: Cause | None
    #: the provider will report nothing more about this message.
    terminal: bool
    #: the provider confirms the recipient got it.
    delivered: bool
    to: str | None = None
    account_sid: str | None = None

    @property
    def suppress(self) -> bool:
        """The address should go on the suppression list (invalid, opted out)."""
        if self.cause is None:
            return False
        return self.cause.action is Action.SUPPRESS or self.cause is NO_CONSENT
