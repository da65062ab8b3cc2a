"""The story of one message in words: a delivered attempt names its protocol's status."""

from __future__ import annotations

import pytest

from pushguard.explain import explain
from pushguard.models import Attempt, MessageView
from pushguard.states import State


def delivered(channel: str, status: int, detail: str) -> MessageView:
    return MessageView(
        id="msg_1", channel=channel, to="x", content={}, topic=None, priority=1,
        state=State.DELIVERED, created_at=0.0, updated_at=1.0, next_at=0.0, expires_at=9.0,
        attempts_count=1, idempotency_key=None, last_provider="p", provider_message_id=None,
        delivered_at=1.0, failure=None,
        attempts=[Attempt(1, 0.5, "p", "delivered", 12.0, status, None, None, False, detail)])


@pytest.mark.parametrize(("channel", "status", "detail", "label"), [
    ("email", 250, "250 2.0.0 Ok: queued as 4F1", "SMTP 250"),
    ("webhook", 200, "HTTP 200", "HTTP 200"),
    ("fcm", 200, "accepted by FCM", "HTTP 200"),
    ("email", 202, "HTTP 202", "HTTP 202"),  # an HTTP gateway serving email
])
def test_a_delivery_names_its_protocols_status(channel: str, status: int, detail: str,
                                               label: str) -> None:
    steps = explain(delivered(channel, status, detail))["steps"]
    assert any(f"attempt 1 via p: delivered ({label}) in 12 ms" in s for s in steps), steps
