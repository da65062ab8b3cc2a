"""The SMTP fake, driven by aiosmtplib over loopback."""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib
import pytest

from pushguard.sandbox import Sandbox


def message(to: str = "alice@example.com") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "news@shop.example"
    msg["To"] = to
    msg["Subject"] = "Spring sale"
    msg["Message-ID"] = "<m1@shop.example>"
    msg["List-Unsubscribe"] = "<https://shop.example/u/abc>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["DKIM-Signature"] = "v=1; a=rsa-sha256; d=shop.example; s=s1; b=abc"
    msg.set_content("Hello!\n")
    return msg


async def test_accepted_mail_is_recorded(sandbox: Sandbox) -> None:
    errors, reply = await aiosmtplib.send(
        message(), hostname=sandbox.smtp_host, port=sandbox.smtp_port, start_tls=False
    )
    assert errors == {} and "OK" in reply
    [rcpt] = sandbox.recorder.records("smtp")
    assert (rcpt.address, rcpt.outcome) == ("alice@example.com", "250")
    meta = rcpt.meta
    assert meta["from"] == "news@shop.example" and meta["rcpts"] == ["alice@example.com"]
    assert meta["subject"] == "Spring sale"
    assert meta["list_unsubscribe"] == "<https://shop.example/u/abc>"
    assert meta["list_unsubscribe_post"] == "List-Unsubscribe=One-Click"
    assert meta["dkim_signature"] is True
    assert rcpt.size > 100


@pytest.mark.parametrize(
    ("address", "rate", "code", "text"),
    [
        ("dead@example.com", None, 550, "5.1.1"),
        ("invalid@example.com", None, 553, "5.1.3"),
        ("bob@example.com", "429", 450, "4.2.1"),
        ("bob@example.com", "503", 421, "4.3.0"),
    ],
)
async def test_recipient_refused(
    sandbox: Sandbox, address: str, rate: str | None, code: int, text: str
) -> None:
    if rate:
        sandbox.set_profile({"rates": {rate: 1.0}}, "smtp")
    smtp = aiosmtplib.SMTP(hostname=sandbox.smtp_host, port=sandbox.smtp_port, start_tls=False)
    await smtp.connect()
    try:
        await smtp.mail("news@shop.example")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await smtp.rcpt(address)
        assert refused.value.code == code
        assert text in refused.value.message
    finally:
        smtp.close()
    assert sandbox.recorder.records("smtp")[0].outcome == str(code)


async def test_partial_refusal_still_delivers_to_the_rest(sandbox: Sandbox) -> None:
    errors, _ = await aiosmtplib.send(
        message(),
        recipients=["alice@example.com", "dead@example.com"],
        hostname=sandbox.smtp_host,
        port=sandbox.smtp_port,
        start_tls=False,
    )
    assert errors["dead@example.com"].code == 550
    assert sandbox.recorder.records("smtp")[-1].meta["rcpts"] == ["alice@example.com"]


async def test_reset_closes_the_connection(sandbox: Sandbox) -> None:
    sandbox.set_profile({"rates": {"reset": 1.0}}, "smtp")
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await aiosmtplib.send(
            message(), hostname=sandbox.smtp_host, port=sandbox.smtp_port, start_tls=False
        )


async def test_auth() -> None:
    async with Sandbox(smtp_credentials=("mailer", "s3cret")) as sb:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await aiosmtplib.send(
                message(), hostname=sb.smtp_host, port=sb.smtp_port, start_tls=False
            )
        assert refused.value.code == 530
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await aiosmtplib.send(
                message(),
                hostname=sb.smtp_host,
                port=sb.smtp_port,
                start_tls=False,
                username="mailer",
                password="wrong",
            )
        errors, _ = await aiosmtplib.send(
            message(),
            hostname=sb.smtp_host,
            port=sb.smtp_port,
            start_tls=False,
            username="mailer",
            password="s3cret",
        )
        assert errors == {}
