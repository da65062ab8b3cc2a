"""What ``pushguard worker`` loads before it delivers anything.

A worker is restarted on every deploy and started by the dozen when a backlog grows: its
start-up is paid each time. Before intake and the audience service were built on first use,
their imports were a third of it (phonenumbers and email-validator alone, about 0.15 s).
"""

from __future__ import annotations

import json
import subprocess
import sys

#: needed only to accept messages (the API, the CLI's send, a campaign's fan-out)
INTAKE_ONLY = ("phonenumbers", "email_validator", "pushguard.intake",
               "pushguard.audience.service")
#: the web stack: `pushguard api` and `serve` only
WEB_ONLY = ("fastapi", "uvicorn", "pushguard.api.server")
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _loaded_by_worker_start() -> set[str]:
    """Modules loaded after building the app and the worker, as `pushguard worker` does."""
    code = (
        "import json, sys\n"
        "from pushguard import runner\n"
        "from pushguard.app import App\n"
        "from pushguard.settings import Settings\n"
        f"s = Settings(database_url='sqlite:///:memory:', webhook_secret={SECRET!r},\n"
        "             outbound_allow='127.0.0.1')\n"
        "app = App.from_settings(s)\n"
        "app.build_worker(app.build_providers())\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_a_worker_starts_without_the_intake_or_web_stack() -> None:
    loaded = _loaded_by_worker_start()
    assert "pushguard.worker" in loaded and "pushguard.pipeline" in loaded  # it did build one
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
