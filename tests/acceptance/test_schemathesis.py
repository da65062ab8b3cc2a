"""Property-based fuzzing of the whole API from its own OpenAPI document: no input, however
odd, gets a 5xx."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.conftest import LiveAPI


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_no_input_makes_the_api_answer_5xx(live_api: LiveAPI, tmp_path: Path) -> None:
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert exe, "schemathesis is a test dependency (pip install -e '.[test]')"
    env = {**os.environ, "SCHEMATHESIS_HOOKS": ""}
    proc = subprocess.run(
        [exe, "run", f"{live_api.url}/openapi.json",
         "--checks", "not_a_server_error",
         "--header", f"Authorization: Bearer {live_api.key}",
         "--max-examples", os.environ.get("PUSHGUARD_FUZZ_EXAMPLES", "60"),
         "--seed", "20261122", "--request-timeout", "10",
         "--suppress-health-check", "all"],
        capture_output=True, text=True, timeout=540, cwd=tmp_path, env=env,
    )
    report = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, report
    counts = re.search(r"(\d+) generated, (\d+) passed", proc.stdout)
    assert counts, report
    generated, passed = map(int, counts.groups())
    assert generated > 100 and passed == generated, report
