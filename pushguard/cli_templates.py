"""``pushguard template``: templates from the command line.

The same core as ``/v1/templates``: a save is linted first and refused on lint errors (every
finding on stderr, exit status 1); ``lint`` exits 1 when it finds an error, so it can gate a
CI job.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from pushguard import documents
from pushguard.cli import _actor, app_for, checked, fail, handles_errors, out
from pushguard.exceptions import InputError

if TYPE_CHECKING:
    from pushguard.templates.lint import Report
    from pushguard.templates.service import Templates

templates_cli = typer.Typer(no_args_is_help=True,
                            help="Message templates: add, version, lint, render.")

FileOpt = Annotated[Path, typer.Option("--file", "-f", help="the content as JSON ('-' for "
                                       "stdin)", allow_dash=True)]
DataOpt = Annotated[str | None, typer.Option(help="sample per-message data: JSON, or @file")]

#: what a JSON document read from standard input may weigh
STDIN_LIMIT = 16 * 1024 * 1024


@contextmanager
def _service() -> Iterator[Templates]:
    from pushguard.templates.service import Templates

    app = app_for()
    service = Templates.over(app.store, app.guard)
    try:
        yield service
    finally:
        service.close()


def _json_file(path: Path, option: str) -> Any:
    if str(path) == "-":
        return documents.parse(documents.read_stdin(option, limit=STDIN_LIMIT), option)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(option, f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(option, f"{path} is not UTF-8 text ({exc.reason} at byte "
                                 f"{exc.start})") from exc
    return documents.parse(text, option, source=str(path))


def _data(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    value = _json_file(Path(raw[1:]), "--data") if raw.startswith("@") else None
    if value is None:
        value = documents.parse(raw, "--data")
    if not isinstance(value, dict):
        raise InputError("--data", "must be a JSON object")
    return value


def _finding_lines(f: dict[str, Any]) -> list[str]:
    """One finding (as :meth:`Finding.as_dict` gives it) for a person reading a terminal."""
    where = " ".join(x for x in (
        f["field"] or "", f"line {f['line']}" if f["line"] else "",
        f"in {f['source']}" if f["source"] else "",
        f"[{f['locale']}]" if f["locale"] and f["locale"] != "default" else "") if x)
    lines = [f"{f['severity']:<8}{where + ': ' if where else ''}{f['problem']}"]
    if f["contacts"]:
        lines.append(f"{'':8}contacts: {', '.join(f['contacts'])}")
    lines.append(f"{'':8}fix: {f['fix']}")
    return lines


def _print_findings(findings: list[dict[str, Any]], *, err: bool = False) -> None:
    for f in findings:
        for line in _finding_lines(f):
            typer.echo(line, err=err)


def _saved(result: dict[str, Any]) -> None:
    v = result["version"]
    typer.echo(f"template {result['name']} ({result['id']}) version {v['version']} "
               f"[{v['locale']}]")
    _print_findings(result["lint"]["findings"])


def _save(fn: Any) -> None:
    from pushguard.templates.errors import LintRefused

    try:
        _saved(fn())
    except LintRefused as exc:
        _print_findings([f.as_dict() for f in exc.findings], err=True)
        fail(f"not saved: {len([f for f in exc.findings if f.severity == 'error'])} lint "
             "error(s)")


@templates_cli.command("add")
@handles_errors
def add(
    name: str,
    file: FileOpt,
    channel: Annotated[str | None, typer.Option(help="email, push, sms or webhook")] = None,
    kind: Annotated[str, typer.Option(help="message, layout or partial")] = "message",
    topic: Annotated[str | None, typer.Option(help="the topic its messages are about")] = None,
    layout: Annotated[str | None, typer.Option(help="a layout template to wrap it in")] = None,
    data: DataOpt = None,
) -> None:
    """Create a template from a content file; it is linted first."""
    from pushguard.templates.models import TemplateIn

    body = checked(TemplateIn, {"name": name, "kind": kind, "channel": channel, "topic": topic,
                               "layout": layout, "content": _json_file(file, "--file"),
                               "data": _data(data)})
    with _service() as service:
        _save(lambda: service.create(body, actor=_actor()))


@templates_cli.command("version")
@handles_errors
def version(
    name: str,
    file: FileOpt,
    locale: Annotated[str | None, typer.Option(help="fr, fr-CA...; default: the default")
                      ] = None,
    data: DataOpt = None,
) -> None:
    """Add a version (for one locale) from a content file; it is linted first."""
    from pushguard.templates.models import VersionIn

    body = checked(VersionIn, {"locale": locale, "content": _json_file(file, "--file"),
                              "data": _data(data)})
    with _service() as service:
        _save(lambda: service.add_version(name, body, actor=_actor()))


@templates_cli.command("list")
@handles_errors
def list_templates() -> None:
    """List templates with their locales and current versions."""
    t = Table("name", "kind", "channel", "topic", "layout", "locales (version)")
    with _service() as service:
        for x in service.list_all():
            t.add_row(x["name"], x["kind"], x["channel"], x["topic"] or "", x["layout"] or "",
                      ", ".join(f"{k} ({v})" for k, v in x["locales"].items()))
    out.print(t)


@templates_cli.command("show")
@handles_errors
def show(
    name: str,
    version_: Annotated[int | None, typer.Option("--version", min=1, max=1_000_000,
                                                 help="this version's content")] = None,
) -> None:
    """A template as JSON: its current versions and history, or one version."""
    with _service() as service:
        typer.echo(json.dumps(service.get(name, version=version_), indent=2,
                              ensure_ascii=False))


@templates_cli.command("lint")
@handles_errors
def lint(
    name: str,
    as_json: Annotated[bool, typer.Option("--json", help="print the findings as JSON")] = False,
    locale: Annotated[str | None, typer.Option(help="only this locale's version")] = None,
    version_: Annotated[int | None, typer.Option("--version", min=1, max=1_000_000)] = None,
    data: DataOpt = None,
    sample: Annotated[int, typer.Option(min=1, max=200, help="real contacts to render with")
                      ] = 20,
    links: Annotated[bool, typer.Option(help="check links and images over HTTP")] = True,
) -> None:
    """Lint a template with real contacts and check its links; exit 1 on errors."""
    with _service() as service:
        reports = service.lint(name, locale=locale, version=version_, data=_data(data),
                               sample=sample)
        if links:
            asyncio.run(service.check_links(reports))
    errors = sum(len(r.errors) for r in reports)
    if as_json:
        typer.echo(json.dumps({"template": name, "errors": errors,
                               "warnings": sum(len(r.warnings) for r in reports),
                               "reports": [r.as_dict() for r in reports]}, indent=2,
                              ensure_ascii=False))
    else:
        _print_report(reports)
    if errors:
        raise typer.Exit(1)


def _print_report(reports: list[Report]) -> None:
    for r in reports:
        checked = f", {len(r.links)} links checked" if r.links_checked else ""
        typer.echo(f"{r.template.name} version {r.version.version} [{r.version.locale}]: "
                   f"{len(r.errors)} error(s), {len(r.warnings)} warning(s) "
                   f"({r.samples} sample contacts{checked})")
        _print_findings([f.as_dict() for f in r.findings])


@templates_cli.command("render")
@handles_errors
def render(
    name: str,
    contact: Annotated[str | None, typer.Option(help="a contact's id or external id")] = None,
    data: DataOpt = None,
    locale: Annotated[str | None, typer.Option(help="default: the contact's")] = None,
    version_: Annotated[int | None, typer.Option("--version", min=1, max=1_000_000)] = None,
) -> None:
    """Print what a contact would receive, as JSON."""
    with _service() as service:
        result = service.render(name, contact=contact, data=_data(data), locale=locale,
                                version=version_)
    typer.echo(json.dumps(result, indent=2, ensure_ascii=False))
