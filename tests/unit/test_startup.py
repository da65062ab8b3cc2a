"""What ``pushguard worker`` loads before it delivers anything.

A worker is restarted on every deploy and started by the dozen when a backlog grows: its
start-up is paid each time. Before intake and the audience service were built on first use,
their imports were a third of it (phonenumbers and email-validator alone, about 0.15 s).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pushguard.store.sql import SQLStore

#: needed only to accept messages (the API, the CLI's send, a campaign's fan-out)
INTAKE_ONLY = ("phonenumbers", "email_validator", "pydantic", "pushguard.intake",
               "pushguard.maildns", "pushguard.audience.service")
#: the web stack: `pushguard api` and `serve` only
WEB_ONLY = ("fastapi", "uvicorn", "pushguard.api.server")
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _loaded_by_a_running_worker(tmp_path: Path) -> set[str]:
    """Modules loaded by a worker that ran (duties and all) for a second on an empty queue."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    store = SQLStore(url)
    store.migrate()
    store.close()
    code = (
        "import asyncio, json, sys\n"
        "from pushguard import runner\n"
        "from pushguard.app import App, run_worker\n"
        "from pushguard.settings import Settings\n"
        f"s = Settings(database_url={url!r}, webhook_secret={SECRET!r},\n"
        "             outbound_allow='127.0.0.1')\n"
        "app = App.from_settings(s)\n"
        "async def main():\n"
        "    stop = asyncio.Event()\n"
        "    asyncio.get_running_loop().call_later(1.5, stop.set)\n"
        "    worker = await run_worker(app, stop)\n"
        "    assert worker.processed == 0\n"
        "asyncio.run(main())\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_a_worker_runs_without_the_intake_or_web_stack(tmp_path: Path) -> None:
    loaded = _loaded_by_a_running_worker(tmp_path)
    # it did run a worker and its duties
    assert {"pushguard.worker", "pushguard.pipeline", "pushguard.diagnosis.alerts"} <= loaded
    assert sorted(m for m in (*INTAKE_ONLY, *WEB_ONLY) if m in loaded) == []


def test_intake_is_built_on_first_use() -> None:
    from pushguard.app import App
    from pushguard.config import default_config
    from pushguard.settings import Settings

    s = Settings(database_url="sqlite:///:memory:", outbound_allow="127.0.0.1")
    app = App(settings=s, store=None, config=default_config(s))  # type: ignore[arg-type]
    assert app._intake is None and app._audience is None
    intake = app.intake
    assert app.intake is intake and intake.audience is app.audience
    assert intake.templates is not None
