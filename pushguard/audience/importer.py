"""Contacts from a CSV file, every row checked and every problem reported with its line.

Nothing is dropped without a word: ``rows = created + updated + rejected``. A rejected row
gets one entry per problem (line, external id, column, problem) and the rest of the file goes
on. Two things are imported but reported: a second row for the same external id (merged into
the first, later values win: a *notice* naming the first row's line) and an address that
another contact already holds (a *warning*: the data doctor can merge or split them later).

The file is streamed and written in batches (one transaction each), so memory stays flat
however long the file is, and a failure part-way leaves whole batches behind, which a re-run
updates rather than duplicates. External ids already seen are kept in a temporary SQLite
file for the same reason.

Consent columns (``consent.<topic>.<channel>`` = granted | withdrawn) go to the consent
ledger with source ``import`` and proof ``import <file> line <n>``. Only changes are
recorded, and a grant never overrides a withdrawal the person made themselves
(unsubscribe, complaint, STOP, preferences): an old export must not re-subscribe anyone.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import phonenumbers
from pydantic import ValidationError
from sqlalchemy import Connection, bindparam, insert, select, text, update

from pushguard.addresses import normalize_address
from pushguard.audience.csvfile import BATCH, CSVFile, Record, bad_bytes, shown
from pushguard.audience.gate import CONSENT_CHANNELS, bump
from pushguard.audience.models import ContactIn
from pushguard.audience.service import Audience, NormalContact
from pushguard.exceptions import InputError
from pushguard.intake import pydantic_problems
from pushguard.store.schema import consent, consent_ledger, contact_addresses, contacts
from pushguard.store.sql import audit

#: row issues kept in the summary (all of them go to ``on_issue``)
KEEP = 1000
_IN = 500
#: imported rows after which PostgreSQL's statistics are first refreshed (then at each doubling)
ANALYZE_FROM = 4000
FIELDS = ("timezone", "locale", "quiet_hours")
#: address columns and the channel each one fills
ADDRESSES = {"email": "email", "phone": "sms", "fcm_token": "fcm", "apns_token": "apns"}
COLUMNS = ("external_id", *ADDRESSES, *FIELDS)
#: withdrawals a person made themselves: an import does not grant over them
PERSON_SOURCES = frozenset({"unsubscribe", "complaint", "sms_keyword", "preferences"})
_PLATFORM = {"apns": "ios"}
_LEVELS = {"error": 0, "warning": 1, "notice": 2}
_KNOWN = ("external_id, email, phone, timezone, locale, quiet_hours, fcm_token, apns_token, "
          "attr.<name> or consent.<topic>.<channel>")


@dataclass(frozen=True, slots=True)
class RowIssue:
    """One problem with one row. ``level``: error (the row was rejected), warning or notice
    (the row was imported)."""

    line: int
    external_id: str
    column: str
    problem: str
    level: str = "error"

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "external_id": self.external_id, "column": self.column,
                "problem": self.problem, "level": self.level}


@dataclass(frozen=True, slots=True)
class ImportOptions:
    #: the country of phone numbers written without +<country code> (e.g. "US")
    region: str | None = None
    #: the file's encoding when it has no byte-order mark (default UTF-8)
    encoding: str | None = None
    batch: int = BATCH
    actor: str = "api"
    policy_version: str | None = None


@dataclass(slots=True)
class ImportSummary:
    file: str
    encoding: str = ""
    rows: int = 0
    created: int = 0
    updated: int = 0
    rejected: int = 0
    #: rows whose external id came again: merged into the earlier row
    duplicates: int = 0
    #: rows with an address another contact holds
    conflicts: int = 0
    blank_lines: int = 0
    consent_recorded: int = 0
    consent_unchanged: int = 0
    #: grants not applied because the person had withdrawn
    consent_kept_withdrawn: int = 0
    seconds: float = 0.0
    #: about the header (e.g. a consent column on a confirmed opt-in topic)
    notes: list[str] = field(default_factory=list)
    errors: list[RowIssue] = field(default_factory=list)
    warnings: list[RowIssue] = field(default_factory=list)
    error_count: int = 0
    warning_count: int = 0

    @property
    def imported(self) -> int:
        return self.created + self.updated

    def add(self, issue: RowIssue) -> None:
        if issue.level == "error":
            self.error_count += 1
            if len(self.errors) < KEEP:
                self.errors.append(issue)
        else:
            self.warning_count += 1
            if len(self.warnings) < KEEP:
                self.warnings.append(issue)

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file, "encoding": self.encoding, "rows": self.rows,
            "imported": self.imported, "created": self.created, "updated": self.updated,
            "rejected": self.rejected, "duplicates": self.duplicates,
            "conflicts": self.conflicts, "blank_lines": self.blank_lines,
            "consent": {"recorded": self.consent_recorded,
                        "unchanged": self.consent_unchanged,
                        "kept_withdrawn": self.consent_kept_withdrawn},
            "seconds": round(self.seconds, 3), "notes": self.notes,
            "error_count": self.error_count, "errors": [e.as_dict() for e in self.errors],
            "errors_truncated": self.error_count > len(self.errors),
            "warning_count": self.warning_count,
            "warnings": [w.as_dict() for w in self.warnings],
            "warnings_truncated": self.warning_count > len(self.warnings),
        }


@dataclass(frozen=True, slots=True)
class _Header:
    ext: int
    addresses: list[tuple[int, str, str]]  # index, column, channel
    fields: list[tuple[int, str]]
    attrs: list[tuple[int, str]]  # index, attribute name
    consent: list[tuple[int, str, str, str]]  # index, column, topic, channel
    width: int


@dataclass(slots=True)
class _Row:
    line: int
    contact: NormalContact
    #: (column, channel, address), for conflict reports
    addresses: list[tuple[str, str, str]]
    consent: list[tuple[str, str, str, str]]  # column, topic, channel, status


Progress = Callable[[int, int], None]
OnIssue = Callable[[RowIssue], None]


class ContactImport:
    """One import run: ``ContactImport(audience, options).run(stream, name)``."""

    def __init__(self, audience: Audience, options: ImportOptions | None = None) -> None:
        self.audience = audience
        self.options = options or ImportOptions()
        self.region = _region(self.options.region)
        if not 1 <= self.options.batch <= 50_000:
            raise InputError("batch", "must be between 1 and 50000 rows")

    def run(self, source: BinaryIO, name: str, *, on_issue: OnIssue | None = None,
            progress: Progress | None = None) -> ImportSummary:
        """Import every row of ``source``; raise ``InputError`` only when the file as a whole
        is unusable (encoding, header), before anything is written."""
        started = time.perf_counter()
        summary = ImportSummary(file=name)
        csvf = CSVFile(source, self.options.encoding)
        summary.encoding = csvf.label
        records = iter(csvf)
        header = self._header(next(records, None), csvf.label, summary)

        # a batch's issues come from reading (errors) and from writing (notices, warnings):
        # held until the batch is written, then given out in line order
        pending: list[RowIssue] = []

        def flush() -> None:
            pending.sort(key=lambda i: (i.line, _LEVELS[i.level]))
            for issue in pending:
                summary.add(issue)
                if on_issue is not None:
                    on_issue(issue)
            pending.clear()

        analyzed = ANALYZE_FROM
        with _Seen() as seen:
            batch: list[_Row] = []
            for rec in records:
                row = self._row(rec, header, csvf.label, summary, pending.append)
                if row is not None:
                    batch.append(row)
                if len(batch) >= self.options.batch:
                    self._write(batch, name, seen, summary, pending.append)
                    batch = []
                    flush()
                    if summary.imported >= analyzed:
                        self._analyze()
                        analyzed = 2 * summary.imported
                    if progress is not None:
                        progress(summary.rows, csvf.bytes_read)
            if batch:
                self._write(batch, name, seen, summary, pending.append)
            flush()
        if progress is not None:
            progress(summary.rows, csvf.bytes_read)
        summary.seconds = time.perf_counter() - started
        with self.audience.store._write() as conn:
            audit(conn, self.options.actor, "contacts.imported", f"import:{name}",
                  {k: v for k, v in summary.as_dict().items()
                   if k not in ("errors", "warnings", "notes")})
        return summary

    # -- reading ----------------------------------------------------------------------------

    def _header(self, rec: Record | None, label: str, summary: ImportSummary) -> _Header:
        if rec is None or not rec.fields:
            raise InputError("file", "is empty: the first line must name the columns "
                             f"({_KNOWN})")
        if rec.problem:
            raise InputError("header", f"line 1 {rec.problem}")
        if bad_bytes("".join(rec.fields)):
            raise InputError("header", f"line 1 is not valid {label}; give the file's encoding "
                             "or save it as UTF-8")
        double_opt_in = {t["name"]: bool(t["double_opt_in"]) for t in self.audience.topics()}
        seen: set[str] = set()
        ext = -1
        addresses, fields, attrs, cons = [], [], [], []
        for i, raw in enumerate(rec.fields):
            col = raw.strip().lstrip("\ufeff")
            low = col.lower()
            if not col:
                raise InputError("header", f"column {i + 1} has no name")
            key = low if low in COLUMNS else col
            if key in seen:
                raise InputError(col, "appears twice in the header")
            seen.add(key)
            if low == "external_id":
                ext = i
            elif low in ADDRESSES:
                addresses.append((i, low, ADDRESSES[low]))
            elif low in FIELDS:
                fields.append((i, low))
            elif low.startswith("attr.") and len(col) > 5:
                attrs.append((i, col[5:]))
            elif low.startswith("consent."):
                topic, _, channel = col[8:].rpartition(".")
                self._consent_column(col, topic, channel, double_opt_in, summary)
                cons.append((i, col, topic, channel))
            else:
                raise InputError(col, f"unknown column; expected {_KNOWN}")
        if ext < 0:
            raise InputError("external_id", "the header has no external_id column: every row "
                             "needs your id for the person, to match it on the next import")
        return _Header(ext, addresses, fields, attrs, cons, len(rec.fields))

    @staticmethod
    def _consent_column(col: str, topic: str, channel: str, double_opt_in: dict[str, bool],
                        summary: ImportSummary) -> None:
        if not topic or not channel:
            raise InputError(col, "expected consent.<topic>.<channel>, e.g. "
                             "consent.newsletter.email")
        if channel not in CONSENT_CHANNELS:
            raise InputError(col, f"unknown consent channel {channel!r}; one of: "
                             f"{', '.join(CONSENT_CHANNELS)} (FCM and APNs share push)")
        if topic not in double_opt_in:
            raise InputError(col, f"unknown topic {topic!r}; create it first (pushguard "
                             "topics add, or POST /v1/topics)")
        if double_opt_in[topic]:
            summary.notes.append(
                f"{col}: topic {topic!r} needs confirmed opt-in; grants from this file are "
                "recorded with source import, and `pushguard doctor data` lists them as "
                "consent without a confirmation")

    def _row(self, rec: Record, h: _Header, label: str, summary: ImportSummary,
             report: OnIssue) -> _Row | None:
        cells = [c.strip() for c in rec.fields]
        if rec.problem is None and not any(cells):
            summary.blank_lines += rec.last - rec.first + 1
            return None
        summary.rows += 1
        ext = cells[h.ext] if h.ext < len(cells) else ""
        issues = self._check(rec, cells, h, label)
        row = None
        if not issues:
            row, issues = self._parse(rec.first, cells, h)
        if issues:
            summary.rejected += 1
            for column, problem in issues:  # the id as text: undecodable bytes as U+FFFD
                report(RowIssue(rec.first, shown(ext), column, problem))
        return row

    @staticmethod
    def _check(rec: Record, cells: list[str], h: _Header, label: str) -> list[tuple[str, str]]:
        if rec.problem is not None:
            return [("", rec.problem)]
        if len(cells) != h.width:
            span = f" (lines {rec.first}-{rec.last}: an unbalanced double quote joins lines)" \
                if rec.last > rec.first else ""
            return [("", f"has {len(cells)} fields; the header has {h.width}{span}")]
        names = _names(h)
        out = []
        for i, cell in enumerate(cells):
            bad = bad_bytes(cell)
            if bad:
                shown = " ".join(f"0x{b:02X}" for b in bad[:4])
                out.append((names[i], f"not valid {label} (byte {shown}); save the file as "
                            "UTF-8 or give its encoding (e.g. latin-1 or cp1252)"))

        return out

    def _parse(self, line: int, cells: list[str],
               h: _Header) -> tuple[_Row | None, list[tuple[str, str]]]:
        issues: list[tuple[str, str]] = []
        ext = cells[h.ext]
        if not ext:
            issues.append(("external_id", "is required"))
        elif len(ext) > 255:
            issues.append(("external_id", f"is {len(ext)} characters long; the limit is 255"))
        elif any(ord(ch) < 32 or ord(ch) == 127 for ch in ext):
            issues.append(("external_id", "contains a control character (a line break or tab)"))
        # a stand-in id lets the other fields be checked (and reported) all the same
        raw: dict[str, Any] = {"external_id": "-" if issues else ext}
        for i, name in h.fields:
            if cells[i]:
                raw[name] = cells[i]
        attrs = {name: cells[i] for i, name in h.attrs if cells[i]}
        if attrs:
            raw["attributes"] = attrs
        model = None
        try:
            model = ContactIn.model_validate(raw)
        except ValidationError as exc:
            issues.extend((e.field, e.problem.removeprefix("value error, "))
                          for e in pydantic_problems(exc))
        addresses: list[tuple[str, str, str]] = []
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for i, column, channel in h.addresses:
            if not cells[i]:
                continue
            try:
                addr = self._address(column, channel, cells[i])
            except InputError as exc:
                issues.append((column, exc.problem))
                continue
            addresses.append((column, channel, addr))
            rows.setdefault((channel, addr), {
                "channel": channel, "address": addr, "platform": _PLATFORM.get(channel),
                "environment": None, "verified": False, "last_seen": None})
        wanted = []
        for i, column, topic, channel in h.consent:
            value = cells[i].lower()
            if not value:
                continue
            if value not in ("granted", "withdrawn"):
                issues.append((column, f"{cells[i]!r} is not granted, withdrawn or empty"))
                continue
            wanted.append((column, topic, channel, value))
        if issues or model is None:
            return None, issues
        contact = NormalContact(
            external_id=ext, attributes=model.attributes, timezone=model.timezone,
            locale=model.locale, quiet_hours=model.quiet_hours, addresses=list(rows.values()),
            fields_set=frozenset(raw) - {"external_id"},
        )
        return _Row(line, contact, addresses, wanted), []

    def _address(self, column: str, channel: str, value: str) -> str:
        if channel == "sms" and not value.startswith("+"):
            value = _international(value, self.region)
        return normalize_address(channel, value, guard=self.audience.guard, field=column,
                                 resolve=False)

    # -- writing ----------------------------------------------------------------------------

    def _analyze(self) -> None:
        """Refresh PostgreSQL's statistics as the tables grow. Without them the planner
        still believes the tables small and looks addresses up by channel alone, reading
        every address of the channel for each batch: 5x slower at 100,000 rows and worse
        after. Each time the import doubles is enough (about 10 times for a million rows).
        SQLite needs none: it uses the whole (channel, address) index without statistics."""
        if self.audience.store.dialect != "postgresql":
            return
        with self.audience.store._write() as conn:
            for table in ("contacts", "contact_addresses", "consent"):
                conn.execute(text(f"ANALYZE {table}"))

    def _write(self, batch: list[_Row], name: str, seen: _Seen, summary: ImportSummary,
               report: OnIssue) -> None:
        first = seen.first_lines([(r.contact.external_id, r.line) for r in batch])
        now = time.time()
        with self.audience.store._write() as conn:
            self._conflicts(conn, batch, summary, report)
            results = {r.external_id: r for r in self.audience.upsert(
                [r.contact for r in batch], actor=self.options.actor, now=now, conn=conn)}
            for r in batch:
                ext = r.contact.external_id
                line = first[ext]
                if line != r.line:
                    summary.duplicates += 1
                    summary.updated += 1
                    report(RowIssue(r.line, ext, "external_id", f"duplicate of line {line}: "
                                    "merged into that contact (later values win)", "notice"))
                elif results[ext].created:
                    summary.created += 1
                else:
                    summary.updated += 1
            ids = {e: res.id for e, res in results.items()}
            self._consent(conn, batch, ids, name, now, summary, report)

    def _conflicts(self, conn: Connection, batch: list[_Row], summary: ImportSummary,
                   report: OnIssue) -> None:
        """Warn about each row whose address another contact holds already: in the database
        (before this batch is written) or on an earlier row of this batch."""
        by_channel: dict[str, set[str]] = {}
        for r in batch:
            for _, channel, addr in r.addresses:
                by_channel.setdefault(channel, set()).add(addr)
        held: dict[tuple[str, str], set[str]] = {}
        for channel, addrs in by_channel.items():
            wanted = sorted(addrs)
            for i in range(0, len(wanted), _IN):
                q = select(contact_addresses.c.address, contacts.c.external_id).join(
                    contacts, contacts.c.id == contact_addresses.c.contact_id).where(
                    contact_addresses.c.channel == channel,
                    contact_addresses.c.status == "active",
                    contact_addresses.c.address.in_(wanted[i : i + _IN]))
                for addr, ext in conn.execute(q):
                    held.setdefault((channel, addr), set()).add(ext)
        here: dict[tuple[str, str], tuple[str, int]] = {}
        for r in batch:
            ext = r.contact.external_id
            flagged = False
            for column, channel, addr in r.addresses:
                others = sorted(held.get((channel, addr), set()) - {ext})
                earlier = here.setdefault((channel, addr), (ext, r.line))
                where = ""
                if earlier[0] != ext:
                    others = sorted({*others, earlier[0]})
                    where = f" (line {earlier[1]})"
                if others:
                    flagged = True
                    shown = ", ".join(repr(o) for o in others[:3])
                    report(RowIssue(r.line, ext, column, f"{addr} is also an address of "
                                    f"contact {shown}{where}; imported, but `pushguard doctor "
                                    "data` will list it", "warning"))
            summary.conflicts += flagged

    def _consent(self, conn: Connection, batch: list[_Row], ids: dict[str, str], name: str,
                 now: float, summary: ImportSummary, report: OnIssue) -> None:
        wanted = [r for r in batch if r.consent]
        if not wanted:
            return
        cids = sorted({ids[r.contact.external_id] for r in wanted})
        current: dict[tuple[str, str, str], tuple[str, str, float]] = {}
        for i in range(0, len(cids), _IN):
            for c in conn.execute(select(consent).where(consent.c.contact_id.in_(
                    cids[i : i + _IN]))):
                current[(c.contact_id, c.topic, c.channel)] = (c.status, c.source, c.at)
        current_before = set(current)
        ledger: list[dict[str, Any]] = []
        for r in wanted:
            cid = ids[r.contact.external_id]
            for column, topic, channel, status in r.consent:
                cur = current.get((cid, topic, channel))
                if cur is not None and cur[0] == status:
                    summary.consent_unchanged += 1
                    continue
                if status == "granted" and cur is not None and cur[0] == "withdrawn" \
                        and cur[1] in PERSON_SOURCES:
                    summary.consent_kept_withdrawn += 1
                    report(RowIssue(r.line, r.contact.external_id, column,
                                    f"not granted: the person withdrew ({cur[1]}, "
                                    f"{_day(cur[2])}); an import cannot undo that", "warning"))
                    continue
                ledger.append({
                    "contact_id": cid, "topic": topic, "channel": channel, "status": status,
                    "source": "import", "at": now, "ip": None, "user_agent": None,
                    "proof": f"import {name} line {r.line}",
                    "policy_version": self.options.policy_version,
                    "actor": self.options.actor})
                current[(cid, topic, channel)] = (status, "import", now)
        if ledger:
            _record_consent(conn, ledger, existing=current_before)
            summary.consent_recorded += len(ledger)


def _record_consent(conn: Connection, ledger: list[dict[str, Any]],
                    existing: set[tuple[str, str, str]]) -> None:
    """What :meth:`Audience.record_consent` does, in three statements for a whole batch:
    append to the ledger, then move each key's current consent to its last new row."""
    ids = conn.execute(insert(consent_ledger).returning(
        consent_ledger.c.id, sort_by_parameter_order=True), ledger).scalars().all()
    last: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row, lid in zip(ledger, ids, strict=True):
        last[(row["contact_id"], row["topic"], row["channel"])] = {
            "contact_id": row["contact_id"], "topic": row["topic"],
            "channel": row["channel"], "status": row["status"], "source": row["source"],
            "at": row["at"], "ledger_id": lid}
    moved = [{**v, "b_cid": k[0], "b_topic": k[1], "b_channel": k[2]}
             for k, v in last.items() if k in existing]
    if moved:
        conn.execute(update(consent).where(
            consent.c.contact_id == bindparam("b_cid"), consent.c.topic == bindparam("b_topic"),
            consent.c.channel == bindparam("b_channel")).values(
            status=bindparam("status"), source=bindparam("source"), at=bindparam("at"),
            ledger_id=bindparam("ledger_id")),
            [{k: v for k, v in m.items() if k not in ("contact_id", "topic", "channel")}
             for m in moved])
    fresh = [v for k, v in last.items() if k not in existing]
    if fresh:
        conn.execute(insert(consent), fresh)
    bump(conn)


def _names(h: _Header) -> list[str]:
    names = [""] * h.width
    names[h.ext] = "external_id"
    for i, col, _ in h.addresses:
        names[i] = col
    for i, col in h.fields:
        names[i] = col
    for i, attr in h.attrs:
        names[i] = f"attr.{attr}"
    for i, col, _, _ in h.consent:
        names[i] = col
    return names


def _region(region: str | None) -> str | None:
    if region is None or region == "":
        return None
    code = region.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise InputError("region", f"unknown region {region!r}: give a two-letter country "
                         "code such as US, GB or FR")
    return code


def _international(value: str, region: str | None) -> str:
    if region is None:
        raise InputError("phone", f"{value!r} has no country code: write it as +<country "
                         "code><number> (e.g. +14155550100), or name the country its numbers "
                         "are from (--region, or ?region= over HTTP)")
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        raise InputError("phone", f"{value!r} is not a phone number ({exc})") from exc
    if not phonenumbers.is_valid_number(number):
        raise InputError("phone", f"{value!r} is not a valid phone number in {region}")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


class _Seen:
    """External ids imported so far and the line of their first row, in a temporary SQLite
    file: a file of millions of rows is checked for duplicates in constant memory."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="pushguard-import-")
        self._db = sqlite3.connect(os.path.join(self._dir.name, "seen.db"))
        self._db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
            "CREATE TABLE seen (ext TEXT PRIMARY KEY, line INTEGER NOT NULL) WITHOUT ROWID;")

    def __enter__(self) -> _Seen:
        return self

    def __exit__(self, *exc: object) -> None:
        self._db.close()
        self._dir.cleanup()

    def first_lines(self, rows: Sequence[tuple[str, int]]) -> dict[str, int]:
        """The first line of each external id in ``rows`` (in line order), over this batch and
        every earlier one; records the new ones."""
        first: dict[str, int] = {}
        for ext, line in rows:
            first.setdefault(ext, line)
        exts = list(first)
        for chunk in _chunks(exts, _IN):
            marks = ",".join("?" * len(chunk))
            for ext, line in self._db.execute(
                    f"SELECT ext, line FROM seen WHERE ext IN ({marks})", chunk):
                first[ext] = line
        self._db.executemany("INSERT OR IGNORE INTO seen VALUES (?, ?)", first.items())
        return first


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
