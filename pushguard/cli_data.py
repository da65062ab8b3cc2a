"""``pushguard contacts import`` and ``pushguard doctor data``.

An import exits 0 when it ran, whatever it rejected: the summary gives the counts and where
the per-row report is. It exits 1 (``error: <field>: <problem>``) only when the file cannot
be imported at all: missing, unreadable encoding, no external_id column, an unknown column
or consent topic.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from pushguard.audience.csvfile import BATCH
from pushguard.audience.doctor import KINDS, Doctor
from pushguard.cli import _actor, app_for, handles_errors, out
from pushguard.exceptions import InputError

if TYPE_CHECKING:
    from pushguard.audience.importer import ImportSummary, RowIssue

doctor_cli = typer.Typer(no_args_is_help=True, help="Find and fix problems in the data.")
_OPTIONS = {"encoding": "--encoding", "region": "--region", "batch": "--batch"}
#: issues printed under the summary (all of them are in the report)
SHOWN = 10


class _Report:
    """The per-row report, opened on the first issue: a clean import leaves no file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f: IO[str] | None = None
        self._w: Any = None
        self.shown: list[RowIssue] = []

    def __call__(self, issue: RowIssue) -> None:
        if self._w is None:
            self._f = self.path.open("w", newline="", encoding="utf-8")
            self._w = csv.writer(self._f)
            self._w.writerow(["line", "external_id", "column", "problem", "level"])
        self._w.writerow([issue.line, issue.external_id, issue.column, issue.problem,
                          issue.level])
        if len(self.shown) < SHOWN:
            self.shown.append(issue)

    @property
    def written(self) -> bool:
        return self._f is not None

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


@handles_errors
def import_contacts(
    file: Annotated[Path, typer.Argument(help="the CSV file: a header line, then one contact "
                                         "per row", show_default=False)],
    report: Annotated[Path | None, typer.Option(
        help="where to write the per-row report (line, external_id, column, problem, level); "
        "default: FILE.errors.csv beside the file, written only when there is something to "
        "report")] = None,
    region: Annotated[str | None, typer.Option(
        help="country of phone numbers written without +<country code>, e.g. US")] = None,
    encoding: Annotated[str | None, typer.Option(
        help="the file's encoding when it has no byte-order mark (default UTF-8), e.g. "
        "latin-1 or cp1252")] = None,
    batch: Annotated[int, typer.Option(min=1, max=100_000,
                                       help="rows per transaction")] = BATCH,
) -> None:
    """Import contacts from a CSV file: every row is checked, and every problem is reported
    with its line number.

    Columns: external_id (required), email, phone, timezone, locale, quiet_hours, fcm_token,
    apns_token, attr.<name>, and consent.<topic>.<channel> (granted or withdrawn).
    """
    from pushguard.audience.importer import ContactImport, ImportOptions

    if not file.is_file():
        raise InputError("file", f"{file} does not exist or is not a file")
    app = app_for()
    try:
        importer = ContactImport(app.audience, ImportOptions(
            region=region, encoding=encoding, batch=batch, actor=_actor(),
            policy_version=app.config.audience.policy_version))
    except InputError as exc:
        raise InputError(_OPTIONS.get(exc.field, exc.field), exc.problem) from exc
    sink = _Report(report or file.with_name(f"{file.stem}.errors.csv"))
    err = Console(stderr=True)
    columns = (TextColumn("importing {task.description}"), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[rows]:,} rows"), TimeElapsedColumn(),
               TimeRemainingColumn())
    try:
        with Progress(*columns, console=err, disable=not err.is_terminal) as bar, \
                file.open("rb") as f:
            # the name as text: bytes that are not UTF-8 (the OS allows any) shown as U+FFFD
            name = file.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            task = bar.add_task(name, total=file.stat().st_size or 1, rows=0)
            summary = importer.run(
                f, name, on_issue=sink,
                progress=lambda rows, done: bar.update(task, completed=done, rows=rows))
    except InputError as exc:
        raise InputError(_OPTIONS.get(exc.field, exc.field), exc.problem) from exc
    finally:
        sink.close()
    _summary(summary, sink)


def _summary(s: ImportSummary, sink: _Report) -> None:
    say(f"{s.file} ({s.encoding}): {s.rows:,} rows read: {s.imported:,} imported "
        f"({s.created:,} created, {s.updated:,} updated), {s.rejected:,} rejected")
    extras = [_count(n, noun, what) for n, noun, what in (
        (s.duplicates, "duplicate external id", "merged into the earlier row"),
        (s.conflicts, "row", "with an address another contact holds"),
        (s.blank_lines, "blank line", "skipped")) if n]
    if extras:
        say("  " + ", ".join(extras))
    if s.consent_recorded or s.consent_unchanged or s.consent_kept_withdrawn:
        refused = s.consent_kept_withdrawn
        say(f"  consent: {_count(s.consent_recorded, 'change', 'recorded')}, "
            f"{s.consent_unchanged:,} unchanged"
            + (f", {refused:,} grants refused (the person had withdrawn)" if refused else ""))
    for note in s.notes:
        say(f"  note: {note}")
    for issue in sink.shown:
        ext = f" {issue.external_id!r}" if issue.external_id else ""
        col = f" {issue.column}:" if issue.column else ""
        say(f"  line {issue.line}{ext} {issue.level}:{col} {issue.problem}")
    if sink.written:
        more = s.error_count + s.warning_count - len(sink.shown)
        say(f"  report: {sink.path} ({s.error_count:,} errors, {s.warning_count:,} warnings "
            f"and notices{f'; {more:,} more than shown' if more > 0 else ''})")
    rate = f" ({s.rows / s.seconds:,.0f} rows/s)" if s.seconds >= 1 else ""
    say(f"  took {s.seconds:.1f} s{rate}")


def say(text: str) -> None:
    """One plain line: no markup, no highlighting, and no wrapping, so it greps whole."""
    out.print(text, highlight=False, markup=False, soft_wrap=True)


def _count(n: int, noun: str, what: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'} {what}" if n else f"0 {noun}s {what}"


# -- doctor ---------------------------------------------------------------------------------

@doctor_cli.command("data")
@handles_errors
def doctor_data(
    as_json: Annotated[bool, typer.Option("--json", help="print findings as JSON")] = False,
    fix: Annotated[list[str] | None, typer.Option(
        "--fix", help="apply the fix of this finding (repeatable)")] = None,
    fix_kind: Annotated[list[str] | None, typer.Option(
        "--fix-kind", help=f"apply every fix of this kind (repeatable): {', '.join(KINDS)}"
    )] = None,
) -> None:
    """Find problems in the contact data: duplicates, conflicting addresses, stale tokens,
    soft-bouncing addresses, consent without proof. Fixes are applied only when asked."""
    from pushguard.audience.repair import apply_fixes, ids_of_kinds

    app = app_for()
    doctor = Doctor(app.audience)
    if fix or fix_kind:
        ids = list(fix or [])
        if fix_kind:
            ids += [i for i in ids_of_kinds(doctor, fix_kind, field_name="--fix-kind")
                    if i not in ids]
        done = apply_fixes(doctor, ids, actor=_actor(), field_name="--fix") if ids else []
        if as_json:
            print(json.dumps({"applied": [d.as_dict() for d in done]}, indent=2))
            return
        if not done:
            say("nothing to fix")
        for d in done:
            entries = ", ".join(str(a["id"]) for a in d.audit)
            plural = "y" if len(d.audit) == 1 else "ies"
            say(f"applied {d.id} ({d.action}): {len(d.audit)} audit entr{plural} ({entries})"
                if d.applied else f"skipped {d.id}: {d.reason}")
        return
    found = doctor.findings()
    if as_json:
        print(json.dumps({"findings": [f.as_dict() for f in found]}, indent=2))
        return
    if not found:
        say("no problems found")
        return
    t = Table(show_lines=True)
    t.add_column("id", no_wrap=True)
    t.add_column("kind")
    t.add_column("evidence", ratio=3)
    t.add_column("fix", ratio=2)
    for f in found:
        t.add_row(f.id, f.kind.replace("_", " "), Text(f.evidence), Text(f.fix))
    out.print(t)
    counts = {k: sum(1 for f in found if f.kind == k) for k in KINDS}
    say(", ".join(f"{n} {k}" for k, n in counts.items() if n)
        + "; apply with --fix ID or --fix-kind KIND")
