"""SES notifications through SNS, end to end: the signing certificate is fetched over HTTP from
an allow-listed loopback host, the signature and topic are checked, and a permanent bounce and
a complaint land in the message's history and on the email suppression list. A forged or
foreign-topic notification changes nothing."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from pushguard.app import App
from pushguard.models import Attempt, NewMessage, Outcome
from pushguard.receipts.ses import canonical_string
from pushguard.settings import Settings
from pushguard.states import State
from tests.conftest import serve_api

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-feedback"


@pytest.fixture(scope="module")
def signer() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return key, cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def cert_server(signer: tuple[rsa.RSAPrivateKey, bytes]) -> Iterator[str]:
    pem = signer[1]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.end_headers()
            self.wfile.write(pem)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def sns(key: rsa.RSAPrivateKey, host: str, ses: dict[str, Any],
        topic: str = TOPIC) -> dict[str, Any]:
    msg = {
        "Type": "Notification", "MessageId": "5b0c7a1e-0000-4000-8000-000000000001",
        "TopicArn": topic, "Message": json.dumps(ses),
        "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "SignatureVersion": "2", "SigningCertURL": f"http://{host}/SimpleNotificationService.pem",
    }
    sig = key.sign(canonical_string(msg), padding.PKCS1v15(), hashes.SHA256())
    return {**msg, "Signature": base64.b64encode(sig).decode()}


def test_ses_bounce_and_complaint_are_recorded(tmp_path: Path, cert_server: str,
                                               signer: tuple[rsa.RSAPrivateKey, bytes]) -> None:
    key = signer[0]
    app = App.from_settings(Settings(
        database_url=f"sqlite:///{tmp_path}/ses.db", outbound_allow="127.0.0.1",
        sns_cert_hosts=cert_server, ses_topic_arns=TOPIC, webhook_secret="",
    ))
    store = app.store
    store.migrate()
    ids = {}
    for to in ("gone@example.com", "angry@example.com"):
        (acc,) = store.enqueue([NewMessage("email", to, {"subject": "s"})], scope="t")
        ids[to] = acc.id  # type: ignore[union-attr]
    for job in store.claim("w", 10, 30):
        store.record("w", [Outcome(job.id, State.DELIVERED, "delivered via smtp",
                                   attempt=Attempt(1, time.time(), "smtp", "delivered"),
                                   provider="smtp",
                                   provider_message_id=f"<{job.id}@shop.example>")])

    def mail(mid: str) -> dict[str, Any]:
        return {"messageId": "0100018f-ses",
                "commonHeaders": {"messageId": f"<{mid}@shop.example>"}}

    bounce = {"notificationType": "Bounce", "mail": mail(ids["gone@example.com"]),
              "bounce": {"bounceType": "Permanent", "bounceSubType": "NoEmail",
                         "bouncedRecipients": [{"emailAddress": "gone@example.com",
                                                "status": "5.1.1",
                                                "diagnosticCode": "smtp; 550 5.1.1 no such user"}]},
              "newFieldSesMayAdd": {"x": 1}}
    complaint = {"notificationType": "Complaint", "mail": mail(ids["angry@example.com"]),
                 "complaint": {"complainedRecipients": [{"emailAddress": "angry@example.com"}],
                               "complaintFeedbackType": "abuse"}}
    with serve_api(app) as url:
        r1 = httpx.post(f"{url}/v1/receipts/ses", content=json.dumps(sns(key, cert_server, bounce)),
                        headers={"Content-Type": "text/plain"})
        r2 = httpx.post(f"{url}/v1/receipts/ses",
                        content=json.dumps(sns(key, cert_server, complaint)))
        forged = sns(key, cert_server, bounce)
        forged["Message"] = forged["Message"].replace("NoEmail", "General")
        r3 = httpx.post(f"{url}/v1/receipts/ses", content=json.dumps(forged))
        foreign = httpx.post(f"{url}/v1/receipts/ses", content=json.dumps(
            sns(key, cert_server, bounce, topic="arn:aws:sns:eu-west-1:999999999999:evil")))
        garbage = httpx.post(f"{url}/v1/receipts/ses", content=b"not json")
    assert r1.status_code == 200 and r1.json()["bounces"][0]["cause"] == "INVALID_RECIPIENT"
    assert r2.status_code == 200 and r2.json()["bounces"][0]["cause"] == "NO_CONSENT"
    assert r3.status_code == 401 and foreign.status_code == 401
    assert garbage.status_code == 422 and garbage.json()["error"]["fields"][0]["field"] == "body"
    sups = {(s.address, s.reason) for s in store.suppressions()}
    assert sups == {("gone@example.com", "INVALID_RECIPIENT"), ("angry@example.com", "NO_CONSENT")}
    view = store.get(ids["gone@example.com"])
    assert view is not None and view.state is State.DELIVERED
    assert any(t.src is None and "5.1.1" in t.reason for t in view.history)
