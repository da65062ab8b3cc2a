"""Contact import on real SQLite and PostgreSQL: every row checked, every problem reported
with its line, counts that add up, and nothing written for a file that cannot be imported."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from sqlalchemy import func, select

from pushguard.audience.importer import ContactImport, ImportOptions, ImportSummary, RowIssue
from pushguard.audience.models import TopicIn
from pushguard.audience.service import Audience, ConsentRecord
from pushguard.exceptions import InputError, NotFound
from pushguard.ssrf import OutboundGuard
from pushguard.store.schema import audit_log, consent_ledger, contact_addresses, contacts
from pushguard.store.sql import SQLStore


@pytest.fixture
def audience(store: SQLStore) -> Audience:
    aud = Audience(store, OutboundGuard.from_env(""))
    aud.put_topic(TopicIn(name="news", kind="marketing"))
    aud.put_topic(TopicIn(name="promo", kind="marketing", double_opt_in=True))
    return aud


def run(aud: Audience, data: bytes | str, name: str = "contacts.csv",
        **options: Any) -> tuple[ImportSummary, list[RowIssue]]:
    raw = data.encode() if isinstance(data, str) else data
    issues: list[RowIssue] = []
    s = ContactImport(aud, ImportOptions(actor="tester", **options)).run(
        io.BytesIO(raw), name, on_issue=issues.append)
    assert s.rows == s.created + s.updated + s.rejected
    return s, issues


def count(store: SQLStore, table: Any) -> int:
    with store._read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


BROKEN = (
    b"external_id,email,phone,timezone,attr.plan,consent.news.email\n"   # 1
    b"u1,Ana@Example.COM,+1 415 555 0100,Europe/Paris,gold,granted\n"    # 2 created
    b"u2,not-an-email,+14155550101,,,\n"                                 # 3 bad email
    b"u3,bob@example.com,+1415,,,\n"                                     # 4 invalid phone
    b"\n"                                                                # 5 blank
    b"u1,,,,silver,\n"                                                   # 6 duplicate of 2
    b"u4,Ana@example.com,,,,\n"                                          # 7 same email as u1
    b"u5,caf\xe9@example.com,,,,\n"                                      # 8 a latin-1 byte
    b",nobody@example.com,,,,\n"                                         # 9 no external id
    b"u6,x@example.com\n"                                                # 10 too few fields
    b'u7,"two\n'                                                         # 11 a quoted field
    b'lines@example.com",,,,\n'                                          # 12 ... over 2 lines
    b"u8,eve@example.com,0612345678,,,\n"                                # 13 no country code
    b"u9,zed@example.com,,Mars/Base,,maybe\n"                            # 14 two problems
    b" , , , , , \n"                                                     # 15 blank cells only
    b"u10,ok@example.com,,,,withdrawn\n"                                 # 16 created
)


def test_broken_rows_are_reported_by_line_and_the_counts_add_up(
        audience: Audience, store: SQLStore) -> None:
    s, issues = run(audience, BROKEN)
    errors = [(i.line, i.external_id, i.column) for i in issues if i.level == "error"]
    assert errors == [
        (3, "u2", "email"),
        (4, "u3", "phone"),
        (8, "u5", "email"),
        (9, "", "external_id"),
        (10, "u6", ""),
        (11, "u7", "email"),
        (13, "u8", "phone"),
        (14, "u9", "timezone"),
        (14, "u9", "consent.news.email"),
    ]
    text = {(i.line, i.column): i.problem for i in issues}
    assert "not a valid email address" in text[(3, "email")]
    assert "not a valid phone number" in text[(4, "phone")]
    assert text[(8, "email")].startswith("not valid UTF-8 (byte 0xE9)")
    assert text[(9, "external_id")] == "is required"
    assert text[(10, "")] == "has 2 fields; the header has 6"
    assert "line break" in text[(11, "email")]
    assert "has no country code" in text[(13, "phone")]
    assert text[(14, "timezone")].startswith("unknown IANA timezone 'Mars/Base'")
    assert text[(14, "consent.news.email")] == "'maybe' is not granted, withdrawn or empty"
    notices = [(i.line, i.column, i.problem) for i in issues if i.level == "notice"]
    assert notices == [(6, "external_id", "duplicate of line 2: merged into that contact "
                        "(later values win)")]
    warnings = [(i.line, i.external_id, i.column, i.problem) for i in issues
                if i.level == "warning"]
    assert warnings == [(7, "u4", "email", "Ana@example.com is also an address of contact "
                         "'u1' (line 2); imported, but `pushguard doctor data` will list it")]
    assert (s.rows, s.created, s.updated, s.rejected) == (12, 3, 1, 8)
    assert (s.duplicates, s.conflicts, s.blank_lines) == (1, 1, 2)
    assert (s.error_count, s.warning_count) == (9, 2)
    assert s.encoding == "UTF-8"
    u1 = audience.contact("u1")
    assert u1["attributes"] == {"plan": "silver"}  # the later row wins...
    assert u1["timezone"] == "Europe/Paris"  # ...but leaves what it does not give alone
    assert sorted(a["address"] for a in u1["addresses"]) == ["+14155550100",
                                                            "Ana@example.com"]
    assert count(store, contacts) == 3


def test_issues_come_out_in_line_order_across_batches(audience: Audience) -> None:
    _, issues = run(audience, BROKEN, batch=3)
    lines = [i.line for i in issues]
    assert lines == sorted(lines)


def test_reimport_updates_and_adds_nothing_twice(audience: Audience, store: SQLStore) -> None:
    first, _ = run(audience, BROKEN)
    addresses, ledger = count(store, contact_addresses), count(store, consent_ledger)
    again, issues = run(audience, BROKEN)
    assert (again.created, again.updated, again.rejected) == (0, 4, 8)
    assert again.consent_recorded == 0 and again.consent_unchanged == 2
    assert count(store, contact_addresses) == addresses
    assert count(store, consent_ledger) == ledger
    assert count(store, contacts) == first.created


def test_consent_columns_land_in_the_ledger_with_proof(audience: Audience) -> None:
    s, _ = run(audience, "external_id,email,consent.news.email,consent.news.sms\n"
               "a,a@example.com,granted,\n"
               "b,b@example.com,withdrawn,granted\n", name="crm.csv")
    assert s.consent_recorded == 3
    ledger = audience.ledger("a")
    assert [(r["topic"], r["channel"], r["status"], r["source"], r["proof"], r["actor"])
            for r in ledger] == [("news", "email", "granted", "import",
                                  "import crm.csv line 2", "tester")]
    b = {(c["topic"], c["channel"]): c["status"] for c in audience.contact("b")["consent"]}
    assert b == {("news", "email"): "withdrawn", ("news", "sms"): "granted"}


def test_an_import_never_grants_over_a_withdrawal_the_person_made(
        audience: Audience) -> None:
    run(audience, "external_id,email\na,a@example.com\n")
    cid = audience.resolve("a")
    audience.record_consent([ConsentRecord(cid, "news", "email", "withdrawn", "unsubscribe",
                                           1_700_000_000.0, proof="link", actor="public")])
    s, issues = run(audience, "external_id,consent.news.email\na,granted\n")
    assert s.consent_kept_withdrawn == 1 and s.consent_recorded == 0
    assert issues[0].level == "warning" and issues[0].column == "consent.news.email"
    assert "the person withdrew (unsubscribe, 2023-11-14)" in issues[0].problem
    assert audience.contact("a")["consent"][0]["status"] == "withdrawn"


def test_a_confirmed_opt_in_topic_is_imported_with_a_note(audience: Audience) -> None:
    s, _ = run(audience, "external_id,consent.promo.email\na,granted\n")
    assert s.consent_recorded == 1
    assert s.notes and "needs confirmed opt-in" in s.notes[0]


@pytest.mark.parametrize(("encoding", "options"), [
    ("utf-8-sig", {}), ("utf-16", {}), ("utf-16-le", {"encoding": "utf-16-le"}),
    ("latin-1", {"encoding": "latin-1"}), ("cp1252", {"encoding": "cp1252"}),
])
def test_encodings(audience: Audience, encoding: str, options: dict[str, str]) -> None:
    text = "external_id,email,attr.city\nzoë,zoe@example.com,Zürich\n"
    s, issues = run(audience, text.encode(encoding), **options)
    assert (s.created, s.rejected, issues) == (1, 0, [])
    assert audience.contact("zoë")["attributes"] == {"city": "Zürich"}


def test_a_bad_byte_in_utf16_spoils_only_its_row(audience: Audience) -> None:
    data = "external_id,email\na,a@example.com\n".encode("utf-16-le")
    data = b"\xff\xfe" + data + b"b\x00,\x00\x00\xdc\n\x00" + "c,c@example.com\n".encode(
        "utf-16-le")
    s, issues = run(audience, data)
    assert (s.created, s.rejected) == (2, 1)
    assert issues[0].line == 3 and issues[0].problem.startswith("not valid UTF-16")


def test_utf16_without_a_byte_order_mark_is_refused_with_a_hint(audience: Audience) -> None:
    with pytest.raises(InputError) as e:
        run(audience, "external_id\na\n".encode("utf-16-le"))
    assert e.value.field == "encoding" and "utf-16-le" in e.value.problem


@pytest.mark.parametrize(("encoding", "body"), [
    ("utf-7", b"external_id,attr.plan\nu1,a+2AA-b\n"),               # +2AA- is U+D800
    ("unicode_escape", b"external_id,attr.plan\nu1,a\\ud800b\n"),
    ("raw_unicode_escape", b"external_id,attr.plan\nu1,a\\ud800b\n"),
])
def test_codecs_that_decode_escapes_to_any_code_point_are_refused(
        audience: Audience, encoding: str, body: bytes) -> None:
    """They turn plain bytes into lone surrogates, which no database stores: one such row
    made every later read of the contacts fail."""
    assert "\ud800" in body.decode(encoding)
    with pytest.raises(InputError) as e:
        run(audience, body, encoding=encoding)
    assert e.value.field == "encoding" and "UTF-8" in e.value.problem
    with pytest.raises(NotFound):
        audience.contact("u1")


def test_an_undecodable_byte_in_the_id_is_reported_as_text(audience: Audience) -> None:
    """The row is rejected naming the byte; the id in the report shows it as U+FFFD, so the
    report (a JSON answer, an errors CSV) can be written."""
    s, issues = run(audience, b"external_id,email\nx\x80,a@example.com\nok,b@example.com\n")
    assert (s.created, s.rejected) == (1, 1)
    [issue] = issues
    assert issue.external_id == "x\ufffd" and "0x80" in issue.problem
    json.dumps(issue.external_id, ensure_ascii=False).encode("utf-8")  # no surrogate left


def test_a_nul_in_the_encoding_name_is_an_unknown_encoding(audience: Audience) -> None:
    with pytest.raises(InputError) as e:
        run(audience, "external_id\na\n", encoding="utf-8\x00")
    assert e.value.field == "encoding" and "unknown encoding" in e.value.problem


def test_region_completes_national_phone_numbers(audience: Audience) -> None:
    s, _ = run(audience, "external_id,phone\na,06 12 34 56 78\nb,+44 20 7946 0958\n"
               "c,0612\n", region="fr")
    assert (s.created, s.rejected) == (2, 1)
    assert audience.contact("a")["addresses"][0]["address"] == "+33612345678"
    assert audience.contact("b")["addresses"][0]["address"] == "+442079460958"


def test_push_token_columns(audience: Audience) -> None:
    apns = "A1" * 32
    fcm = "f" * 150
    run(audience, f"external_id,fcm_token,apns_token\na,{fcm},<{apns}>\n")
    got = {a["channel"]: a for a in audience.contact("a")["addresses"]}
    assert got["apns"]["address"] == apns.lower() and got["apns"]["platform"] == "ios"
    assert got["fcm"]["address"] == fcm


def test_duplicates_across_batches_name_the_first_line(audience: Audience) -> None:
    s, issues = run(audience, "external_id,email,locale\na,a@example.com,fr\nb,b@example.com,\n"
                    "c,c@example.com,\na,a2@example.com,\n", batch=2)
    assert (s.created, s.updated, s.duplicates) == (3, 1, 1)
    assert [(i.line, i.problem[:17]) for i in issues] == [(5, "duplicate of line")]
    assert "line 2" in issues[0].problem
    a = audience.contact("a")
    assert a["locale"] == "fr" and len(a["addresses"]) == 2


def test_progress_is_reported_per_batch(audience: Audience) -> None:
    rows = "".join(f"u{i},u{i}@example.com\n" for i in range(25))
    calls: list[tuple[int, int]] = []
    ContactImport(audience, ImportOptions(batch=10)).run(
        io.BytesIO(("external_id,email\n" + rows).encode()), "p.csv",
        progress=lambda n, b: calls.append((n, b)))
    assert [n for n, _ in calls] == [10, 20, 25]
    assert calls[-1][1] > 0


def test_an_import_is_audited(audience: Audience, store: SQLStore) -> None:
    run(audience, BROKEN)
    with store._read() as conn:
        row = conn.execute(select(audit_log).where(audit_log.c.action == "contacts.imported")
                           ).one()
    assert row.subject == "import:contacts.csv" and row.actor == "tester"
    assert '"rejected":8' in row.detail


@pytest.mark.parametrize(("data", "field", "words"), [
    ("", "file", "is empty"),
    ("email,phone\nx@example.com,\n", "external_id", "no external_id column"),
    ("external_id,emial\n", "emial", "unknown column"),
    ("external_id,email,Email\n", "Email", "appears twice"),
    ("external_id,,email\n", "header", "column 2 has no name"),
    ("external_id,consent.nope.email\n", "consent.nope.email", "unknown topic 'nope'"),
    ("external_id,consent.news.fcm\n", "consent.news.fcm", "unknown consent channel"),
    ("external_id,consent.news\n", "consent.news", "expected consent.<topic>.<channel>"),
])
def test_unusable_files_are_refused_before_anything_is_written(
        audience: Audience, store: SQLStore, data: str, field: str, words: str) -> None:
    with pytest.raises(InputError) as e:
        run(audience, data + "a,b@example.com\n" if data else data)
    assert e.value.field == field and words in e.value.problem
    assert count(store, contacts) == 0


@pytest.mark.parametrize(("options", "field"), [
    ({"region": "XX"}, "region"), ({"encoding": "klingon"}, "encoding"), ({"batch": 0}, "batch"),
])
def test_bad_options(audience: Audience, options: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as e:
        run(audience, "external_id\na\n", **options)
    assert e.value.field == field
