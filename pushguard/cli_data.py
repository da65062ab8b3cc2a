"""pushguard contacts import and pushguard doctor data (stub: being built)."""

from __future__ import annotations

import typer

doctor_cli = typer.Typer(no_args_is_help=True, help="Find and fix problems in the data.")
