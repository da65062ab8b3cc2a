"""``pushguard contacts import`` and ``pushguard doctor data``, run as a user would."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.acceptance.conftest import CLI

BROKEN = (
    b"external_id,email,phone,attr.plan,consent.news.email\n"
    b"u1,ana@example.com,+14155550100,gold,granted\n"
    b"u2,not-an-email,,,\n"
    b"\n"
    b"u1,,,silver,\n"
    b"u3,ana@example.com,,,\n"
    b"u4,caf\xe9@example.com,,,\n"
    b"u5,eve@example.com,0612345678,,\n"
    b",x@example.com,,,\n"
)


@pytest.fixture
def ready(cli: CLI) -> CLI:
    cli("db", "upgrade")
    cli("topics", "add", "news", "--kind", "marketing")
    return cli


def test_an_import_with_broken_rows_exits_0_with_counts_and_a_report(
        ready: CLI, tmp_path: Path) -> None:
    (tmp_path / "people.csv").write_bytes(BROKEN)
    got = ready("contacts", "import", "people.csv")
    assert got.returncode == 0 and got.stderr == ""
    lines = got.stdout.splitlines()
    assert lines[0] == ("people.csv (UTF-8): 7 rows read: 3 imported (2 created, 1 updated), "
                        "4 rejected")
    assert "1 duplicate external id merged into the earlier row" in lines[1]
    assert "1 row with an address another contact holds" in lines[1]
    assert "1 blank line skipped" in lines[1]
    assert "  consent: 1 change recorded, 0 unchanged" in lines
    assert any(line.startswith("  line 7 'u4' error: email: not valid UTF-8") for line in lines)
    assert any("report: " in line and "people.errors.csv (4 errors, 2 warnings and notices)"
               in line for line in lines)
    with (tmp_path / "people.errors.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["line", "external_id", "column", "problem", "level"]
    assert [(r[0], r[1], r[2], r[4]) for r in rows[1:]] == [
        ("3", "u2", "email", "error"),
        ("5", "u1", "external_id", "notice"),
        ("6", "u3", "email", "warning"),
        ("7", "u4", "email", "error"),
        ("8", "u5", "phone", "error"),
        ("9", "", "external_id", "error"),
    ]
    shown = json.loads(ready("contacts", "show", "u1", "--json").stdout)
    assert shown["consent"][0]["status"] == "granted"

    again = ready("contacts", "import", "people.csv", "--region", "FR", "--report", "r.csv")
    assert "7 rows read: 4 imported (1 created, 3 updated), 3 rejected" in again.stdout
    assert (tmp_path / "r.csv").exists()


def test_a_clean_import_writes_no_report(ready: CLI, tmp_path: Path) -> None:
    (tmp_path / "ok.csv").write_text("external_id,email\nz,zoë@example.com\n",
                                     encoding="utf-16")
    got = ready("contacts", "import", "ok.csv")
    assert "ok.csv (UTF-16): 1 rows read: 1 imported (1 created, 0 updated), 0 rejected" \
        in got.stdout
    assert "report" not in got.stdout and not (tmp_path / "ok.errors.csv").exists()


@pytest.mark.parametrize(("args", "content", "message"), [
    (["missing.csv"], None, "error: file: missing.csv does not exist or is not a file"),
    (["f.csv"], b"email\nx@example.com\n", "error: external_id: the header has no external_id "
     "column"),
    (["f.csv"], b"external_id,consent.nope.email\n", "error: consent.nope.email: unknown "
     "topic 'nope'"),
    (["f.csv", "--region", "XX"], b"external_id\n", "error: --region: unknown region 'XX'"),
    (["f.csv", "--encoding", "klingon"], b"external_id\n", "error: --encoding: unknown "
     "encoding 'klingon'"),
])
def test_an_unusable_file_exits_1_naming_the_field(
        ready: CLI, tmp_path: Path, args: list[str], content: bytes | None,
        message: str) -> None:
    if content is not None:
        (tmp_path / "f.csv").write_bytes(content)
    got = ready("contacts", "import", *args, check=False)
    assert got.returncode == 1
    assert got.stderr.startswith(message), got.stderr


def test_doctor_lists_findings_and_applies_only_what_is_asked(
        ready: CLI, tmp_path: Path) -> None:
    (tmp_path / "people.csv").write_bytes(BROKEN)
    ready("contacts", "import", "people.csv")
    assert "no problems found" not in ready("doctor", "data").stdout
    found = json.loads(ready("doctor", "data", "--json").stdout)["findings"]
    assert [f["kind"] for f in found] == ["duplicate_contacts"]
    (f,) = found
    # created in one transaction: equally old, so the tie goes by contact id
    kept, other = (c["external_id"] for c in f["contacts"])
    assert {kept, other} == {"u1", "u3"}
    assert f["fix"]["action"] == "merge"

    bad = ready("doctor", "data", "--fix", "dup-000000000000", check=False)
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: --fix[0]: no finding 'dup-000000000000'")
    typo = ready("doctor", "data", "--fix-kind", "dupes", check=False)
    assert typo.stderr.startswith("error: --fix-kind[0]: unknown kind 'dupes'")

    done = ready("doctor", "data", "--fix", f["id"])
    assert done.stdout.startswith(f"applied {f['id']} (merge): 1 audit entry")
    assert ready("doctor", "data").stdout.strip() == "no problems found"
    merged = json.loads(ready("contacts", "show", kept, "--json").stdout)
    assert sorted(a["address"] for a in merged["addresses"]) == ["+14155550100",
                                                                "ana@example.com"]
    assert ready("contacts", "show", other, check=False).returncode == 1
    assert "nothing to fix" in ready("doctor", "data", "--fix-kind", "stale_token").stdout
