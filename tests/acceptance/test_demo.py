"""`pushguard demo` as a user runs it: a real subprocess that must finish, account for every
message, and tell at least one story with `why`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_accounts_for_every_message(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pushguard", "demo", "--messages", "400",
         "--workdir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "120"},
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "What happened to 400 messages" in out
    story, rule, preflight = out.partition("pushguard campaign preflight newsletter-43")
    assert rule, out[-3000:]
    counts = {label: int(n) for label, n in re.findall(r"│ ([a-z ()]+?)\s+│\s+(\d+) │",
                                                       story)}
    assert counts["still pending"] == 0, counts
    assert sum(counts.values()) == 400, counts
    assert counts["delivered on the first try"] > 0
    # newsletters to readers who never consented, unsubscribed while queued, or hit the cap
    assert counts["not sent (stopped by the gate)"] > 0
    assert "withdrew consent to news" in out and "NO_CONSENT/consent" in out
    assert "Message msg_" in out and "What happened:" in out  # a `why` story is told
    assert (tmp_path / "demo" / "demo.db").exists()
    # the next newsletter's pre-flight: predicted before anything is sent, with the causes
    found = re.search(r"to (\d+) readers: predicted delivery\s+rate (\d+)%", preflight)
    assert found, preflight[:2000]
    assert int(found.group(1)) >= 10 and 0 <= int(found.group(2)) < 100
    assert "frequency_cap" in preflight and "unverified" in preflight
