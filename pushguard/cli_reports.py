"""``pushguard report campaign|incident``: post-mortem reports, the same core as
``GET /v1/campaigns/{ref}/report`` and ``GET /v1/incidents/{id}/report``.

Markdown by default (``--format md``), a self-contained HTML page with ``--format html``, the
data with ``--format json``; printed, or written to ``--out FILE``. An unknown campaign or
incident, or a bad option, exits 1 with ``error: ...``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from pushguard.cli import app_for, fail, handles_errors
from pushguard.exceptions import InputError

report_cli = typer.Typer(no_args_is_help=True,
                         help="Post-mortem reports of a campaign or an incident: what happened, "
                         "impact, timeline, root causes, what was done and what would have "
                         "caught it, in Markdown or self-contained HTML.")

FORMATS = ("md", "html", "json")
FormatOpt = Annotated[str, typer.Option("--format", help="md, html or json")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="write to this file instead of "
                                             "printing", dir_okay=False)]


def _emit(make: Callable[[Any, str], dict[str, Any]], ref: str, fmt: str,
          out_file: Path | None) -> None:
    from pushguard.diagnosis.report_html import as_html
    from pushguard.diagnosis.report_md import as_markdown

    if fmt not in FORMATS:
        raise InputError("--format", f"must be one of: {', '.join(FORMATS)} (got {fmt!r})")
    report = make(app_for(), ref)
    if fmt == "md":
        body = as_markdown(report)
    elif fmt == "html":
        body = as_html(report)
    else:
        body = json.dumps(report, indent=2)
    if out_file is None:
        print(body)
        return
    try:
        out_file.write_text(body if body.endswith("\n") else body + "\n", encoding="utf-8")
    except OSError as exc:
        fail(f"--out: cannot write {str(out_file)!r}: {exc.strerror or exc}")
    print(f"wrote {out_file}")


@report_cli.command("campaign")
@handles_errors
def campaign(ref: Annotated[str, typer.Argument(help="campaign id or name")],
             fmt: FormatOpt = "md", out_file: OutOpt = None) -> None:
    """A campaign's post-mortem."""
    from pushguard.diagnosis.postmortem import campaign_postmortem

    _emit(campaign_postmortem, ref, fmt, out_file)


@report_cli.command("incident")
@handles_errors
def incident(incident_id: Annotated[str, typer.Argument(help="incident id")],
             fmt: FormatOpt = "md", out_file: OutOpt = None) -> None:
    """An incident's post-mortem."""
    from pushguard.diagnosis.postmortem import incident_postmortem

    _emit(incident_postmortem, incident_id, fmt, out_file)
