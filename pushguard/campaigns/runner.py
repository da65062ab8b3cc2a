"""The campaign runner: a worker duty that fans sending campaigns out into messages."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pushguard.app import App
    from pushguard.duties import Tick


def runner_tick(app: App) -> Tick | None:
    return None
