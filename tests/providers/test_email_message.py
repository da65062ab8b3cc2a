"""How an email is written: :func:`mime` gives the stdlib's bytes exactly, for every shape of
content the provider accepts, and the shortcuts around the stdlib change nothing."""

from __future__ import annotations

import itertools
import random
from email import message_from_bytes, policy
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage
from typing import Any

import pytest

from pushguard.providers import email_message as em

TEXTS = [None, "Hello!\n.dot line\n", "plain, no newline", "x" * 200, "a\r\nb\rc\n\nend",
         "Ünïcode ✓\n", "é" * 100, "From the start\n>From\n", "trailing   \n\ttab\n", "a\n" * 30,
         "\n", "=?utf-8?q?x?=\n", "ünï\n" + "long " * 40, "😀 emoji\n" * 12, "\x0bvt\x0cff\n",
         "=" * 20 + "\n", "-- \nsig\n"]  # fmt: skip
HTMLS = [None, "<p>Hello!</p>", "<p>" + "long " * 50 + "</p>", "<p>Ünïcode</p>\n" * 20]
SUBJECTS = ["Spring sale", "Ünïcode subject ✓", "A" * 120, "Re: =?utf-8?q?x?= odd", "x" * 60
            + " " + "y" * 30, "Sale: 50% off, today only!", "tab\there"]  # fmt: skip
SENDERS = ["Shop <news@shop.example>", "news@shop.example", '"Doe, John" <j@shop.example>',
           "Café Ünï <a@shop.example>", "A. B. <ab@shop.example>", "x@bücher.example"]
EXTRAS: list[dict[str, Any]] = [
    {}, {"reply_to": "Help <help@shop.example>"},
    {"unsubscribe_url": "https://shop.example/u/abc?t=1&x=" + "y" * 120},
    {"headers": {"X-Campaign": "spring-2024", "X-Long": "v " * 60, "X-Uni": "ünï"}},
    {"reply_to": "Ünï <r@shop.example>", "unsubscribe_url": "http://127.0.0.1/u"},
]  # fmt: skip
TOS = ["alice@example.com", "bob@bücher.example", "üser@example.com",
       "very.long." + "x" * 60 + "@example.com"]


def cases(n: int) -> list[tuple[Any, ...]]:
    """``n`` combinations spread over all of them (the full product is ~15,000)."""
    every = [c for c in itertools.product(TEXTS, HTMLS, SUBJECTS, SENDERS, EXTRAS, TOS)
             if c[0] or c[1]]
    return random.Random(7).sample(every, n)


@pytest.mark.parametrize("i", range(6))
def test_mime_writes_the_stdlib_bytes(i: int) -> None:
    for text, html, subject, sender_text, extra, to in cases(600)[i * 100:(i + 1) * 100]:
        content = {"subject": subject, **extra}
        content.update({k: v for k, v in (("text", text), ("html", html)) if v})
        em.validate_content(content)
        sender = em._sender(sender_text)
        to = em.ascii_domain(to)
        utf8 = not (to.isascii() and sender.addr_spec.isascii())
        fields = em._fields(content, sender, to, em.message_id_for("m-1", sender.domain),
                            "Sun, 22 Nov 2026 05:38:47 GMT")
        kw: dict[str, Any] = {"policy": em.POLICY_UTF8 if utf8 else em.POLICY,
                              "boundary": em._boundary(str(text), str(html))}
        assert em.mime(fields, text, html, **kw) == em.mime_stdlib(fields, text, html, **kw), (
            content, sender_text, to)


@pytest.mark.parametrize("stdlib", [False, True], ids=["mime", "mime_stdlib"])
def test_build_reads_back(stdlib: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if stdlib:  # a Python without contentmanager._encode_text
        monkeypatch.setattr(em, "_encode_text", None)
    out = em.build("alice@example.com", {"subject": "Hi", "text": "Hello\n", "html": "<p>Hi</p>"},
                   message_id="msg_1", default_from="Shop <news@shop.example>")
    msg = message_from_bytes(out.data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    assert (msg["From"], msg["To"], msg["Message-ID"]) == (
        "Shop <news@shop.example>", "alice@example.com", "<msg_1@shop.example>")
    plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain is not None and plain.get_content() == "Hello\r\n"
    assert html is not None and html.get_content() == "<p>Hi</p>\r\n"
    assert not msg.defects


def test_a_boundary_found_in_the_content_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    picks = iter([1, 2])
    monkeypatch.setattr(em.random, "randrange", lambda _: next(picks))
    taken = "=" * 15 + f"{1:019d}" + "=="
    assert em._boundary("text", f"<p>{taken}</p>") == "=" * 15 + f"{2:019d}" + "=="


def test_header_classes_are_made_once_and_parse_alike() -> None:
    ours, stdlib = em.POLICY.header_factory, HeaderRegistry()
    assert ours["Subject"] is ours["subject"] is ours["Subject"]
    for name, value in (("Subject", "Ünï, hi"), ("From", "A <a@b.example>"),
                        ("Date", "Sun, 22 Nov 2026 05:38:47 GMT"),
                        ("Content-Type", 'text/plain; charset="utf-8"')):
        a, b = ours(name, value), stdlib(name, value)
        assert (str(a), a.fold(policy=em.POLICY)) == (str(b), b.fold(policy=em.POLICY))
