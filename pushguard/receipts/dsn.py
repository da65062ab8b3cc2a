"""Asynchronous email bounces: Delivery Status Notifications (RFC 3464).

A 250 from the next hop is not delivery: the final server may bounce the message hours later,
as a DSN mailed back to the envelope sender. ``parse`` reads one such report and returns one
:class:`Bounce` per recipient, with our message id recovered from the returned headers'
Message-ID (the SMTP provider derives it from the message id) and the status classified with
the same SMTP table as synchronous replies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import Message
from typing import TYPE_CHECKING, Any

from pushguard.exceptions import InputError
from pushguard.providers.smtp import classify
from pushguard.taxonomy import Action, Cause

if TYPE_CHECKING:
    from pushguard.store.base import Store

_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")
_REPLY = re.compile(r"\b([245]\d\d)\b")
_MSGID = re.compile(r"<([^@<>\s]+)@[^<>\s]+>")


@dataclass(frozen=True, slots=True)
class Bounce:
    """One recipient's fate in one DSN."""

    message_id: str | None
    provider_message_id: str | None
    recipient: str
    action: str  # failed | delayed | delivered | relayed | expanded
    status: str
    diagnostic: str
    cause: Cause | None

    @property
    def permanent(self) -> bool:
        return self.action == "failed" and self.status.startswith("5")

    @property
    def suppress(self) -> bool:
        """A hard bounce for a bad address (not for content or our own setup)."""
        return self.permanent and self.cause is not None and self.cause.action is Action.SUPPRESS


def parse(raw: bytes) -> list[Bounce]:
    """The bounces in one DSN; ``InputError`` when it is not a delivery-status report."""
    msg = message_from_bytes(raw, policy=policy.default)
    status_part = _part(msg, "message/delivery-status")
    if status_part is None:
        raise InputError("body", "not a DSN: no message/delivery-status part (RFC 3464)")
    original = _original_message_id(msg)
    ours = None
    if original:
        found = _MSGID.search(original)
        ours = found.group(1) if found else None
    bounces = []
    for block in _blocks(status_part)[1:]:  # the first block is about the whole message
        action = str(block.get("Action", "")).strip().lower()
        status = str(block.get("Status", "")).strip()
        if not action or not _STATUS.match(status):
            continue
        recipient = str(block.get("Final-Recipient") or block.get("Original-Recipient") or "")
        recipient = recipient.split(";", 1)[-1].strip()
        diagnostic = str(block.get("Diagnostic-Code", "")).split(";", 1)[-1].strip()
        cause = None
        if action in ("failed", "delayed"):
            reply = _REPLY.match(diagnostic)
            code = int(reply.group(1)) if reply else (550 if status[0] == "5" else 450)
            text = diagnostic[reply.end():].strip() if reply else diagnostic
            # The classifier reads a server's reply text: enhanced status first, then words.
            cause = classify(code, f"{status} {text}".strip(), stage="rcpt").cause
        bounces.append(Bounce(ours, original, recipient, action, status, diagnostic, cause))
    return bounces


def record_bounces(store: Store, bounces: list[Bounce]) -> list[dict[str, Any]]:
    """Add each bounce to its message's history; suppress hard-bounced bad addresses."""
    out = []
    for b in bounces:
        recorded = False
        cause = b.cause.name if b.cause else None
        if b.message_id and b.provider_message_id:
            note = f"bounce: {b.action} {b.status} for {b.recipient}"
            if b.diagnostic:
                note += f" ({b.diagnostic[:200]})"
            recorded = store.add_receipt(
                b.message_id, b.provider_message_id, note, cause=cause,
                suppress=("email", cause) if b.suppress and cause else None,
            )
        out.append({"message_id": b.message_id, "recipient": b.recipient, "action": b.action,
                    "status": b.status, "cause": cause, "suppressed": recorded and b.suppress,
                    "recorded": recorded})
    return out


def _part(msg: Message, ctype: str) -> Message | None:
    for part in msg.walk():
        if part.get_content_type() == ctype:
            return part
    return None


def _blocks(part: Message) -> list[Message]:
    """The field blocks of a delivery-status part, whichever way the parser stored them."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    text = payload if isinstance(payload, str) else ""
    return [message_from_bytes(b.encode(), policy=policy.default)
            for b in re.split(r"\r?\n\r?\n", text.strip()) if b.strip()]


def _original_message_id(msg: Message) -> str | None:
    for ctype in ("text/rfc822-headers", "message/rfc822"):
        part = _part(msg, ctype)
        if part is None:
            continue
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            headers: Message = payload[0]
        else:
            body = part.get_payload(decode=True)
            text = body if isinstance(body, bytes) else str(payload).encode()
            headers = message_from_bytes(text, policy=policy.default)
        value = headers.get("Message-ID")
        if value:
            return str(value).strip()
    return None

