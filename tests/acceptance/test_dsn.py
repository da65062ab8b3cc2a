"""Email bounces that arrive later (RFC 3464 DSNs) are matched to the message by its
Message-ID, added to its history, and hard bounces for bad addresses suppress the address."""

from __future__ import annotations

import time

from pushguard.models import Attempt, NewMessage, Outcome
from pushguard.states import State
from tests.acceptance.conftest import LiveAPI

DSN = """\
From: MAILER-DAEMON@mx.example.net
To: bounces@shop.example
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

The mail system could not deliver your message.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
Arrival-Date: Sun, 22 Nov 2026 03:00:00 +0000

Final-Recipient: rfc822; {rcpt}
Action: {action}
Status: {status}
Diagnostic-Code: smtp; {diag}

--B
Content-Type: text/rfc822-headers

From: Shop <news@shop.example>
To: {rcpt}
Subject: Your order
Message-ID: <{mid}@shop.example>

--B--
"""


def delivered_email(live_api: LiveAPI, to: str) -> str:
    store = live_api.app.store
    (acc,) = store.enqueue([NewMessage("email", to, {"subject": "Your order"})], scope="t")
    (job,) = [j for j in store.claim("w", 10, 30) if j.id == acc.id]  # type: ignore[union-attr]
    store.record("w", [Outcome(job.id, State.DELIVERED, "delivered via smtp",
                               attempt=Attempt(1, time.time(), "smtp", "delivered"),
                               provider="smtp",
                               provider_message_id=f"<{job.id}@shop.example>")])
    return job.id


def post(live_api: LiveAPI, text: str) -> dict:  # type: ignore[type-arg]
    with live_api.client() as c:
        r = c.post("/v1/receipts/dsn", content=text.replace("\n", "\r\n").encode(),
                   headers={"Content-Type": "message/rfc822"})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_hard_bounce_is_recorded_and_suppresses(live_api: LiveAPI) -> None:
    mid = delivered_email(live_api, "gone@example.com")
    out = post(live_api, DSN.format(rcpt="gone@example.com", action="failed", status="5.1.1",
                                    diag="550 5.1.1 The email account does not exist",
                                    mid=mid))
    (b,) = out["bounces"]
    assert b == {"message_id": mid, "recipient": "gone@example.com", "action": "failed",
                 "status": "5.1.1", "cause": "INVALID_RECIPIENT", "suppressed": True,
                 "recorded": True}
    view = live_api.app.store.get(mid)
    assert view is not None and view.state is State.DELIVERED  # history grows, state stays
    assert any(t.src is None and "5.1.1" in t.reason for t in view.history)
    sups = live_api.app.store.suppressions()
    assert [(s.channel, s.address, s.reason) for s in sups] == [
        ("email", "gone@example.com", "INVALID_RECIPIENT")]


def test_soft_bounce_is_recorded_without_suppressing(live_api: LiveAPI) -> None:
    mid = delivered_email(live_api, "full@example.com")
    out = post(live_api, DSN.format(rcpt="full@example.com", action="delayed", status="4.2.2",
                                    diag="452 4.2.2 Mailbox full", mid=mid))
    (b,) = out["bounces"]
    assert b["cause"] == "RECIPIENT_TEMPORARY" and b["suppressed"] is False and b["recorded"]
    assert live_api.app.store.suppressions() == []


def test_unknown_message_and_non_dsn(live_api: LiveAPI) -> None:
    out = post(live_api, DSN.format(rcpt="x@example.com", action="failed", status="5.1.1",
                                    diag="550 5.1.1 no", mid="msg_not_ours"))
    assert out["bounces"][0]["recorded"] is False
    with live_api.client() as c:
        r = c.post("/v1/receipts/dsn", content=b"Subject: hi\r\n\r\nnot a report",
                   headers={"Content-Type": "message/rfc822"})
        anonymous = c.post("/v1/receipts/dsn", content=b"x", headers={"Authorization": ""})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "body"
    assert anonymous.status_code == 401
