"""Recorder, JSONL output, control routes, SandboxThread and the command-line runner."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from pushguard.sandbox import Record, Recorder, Sandbox, SandboxThread


def test_recorder_stats_and_limits(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "r.jsonl", max_records=2)
    for i, outcome in enumerate(["200", "503", "200"]):
        recorder.record("webhook", "a", outcome, headers={"webhook-id": f"m{i % 2}"})
    recorder.add(Record("fcm", "tok", "reset"))
    assert [r.outcome for r in recorder.records("webhook")] == ["503", "200"]  # newest kept
    assert [r.service for r in recorder.records()] == ["webhook", "webhook", "fcm"]
    assert recorder.records(limit=1)[0].service == "fcm"
    stats = recorder.stats()
    assert stats["webhook"] == {
        "total": 3,
        "outcomes": {"200": 2, "503": 1},
        "distinct_ids": 2,
        "duplicates": 1,
        "delivered_ids": 1,
        "delivered_duplicates": 1,
    }
    assert stats["fcm"] == {"total": 1, "outcomes": {"reset": 1}}
    recorder.clear()
    assert recorder.records() == [] and recorder.stats() == {}
    recorder.close()
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(lines) == 4  # the file is append-only: clear() keeps it
    assert json.loads(lines[0])["headers"] == {"webhook-id": "m0"}


async def test_records_jsonl_written_while_serving(
    sandbox: Sandbox, http: aiohttp.ClientSession, records_path: Path
) -> None:
    url = f"{sandbox.http_url}/sms/gw/send"
    for to in ("+1000", "+1dead"):
        async with http.post(url, json={"to": to, "text": "hi"}):
            pass
    # Flushed per record, so readable before the sandbox stops.
    lines = [json.loads(line) for line in records_path.read_text().splitlines()]
    assert [(r["service"], r["address"], r["outcome"]) for r in lines] == [
        ("sms", "+1000", "200"),
        ("sms", "+1dead", "410"),
    ]
    assert lines[0]["body"] == {"to": "+1000", "text": "hi"}
    assert lines[0]["size"] > 0 and lines[0]["at"] > 0


async def test_control_routes(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    base = sandbox.http_url
    for to in ("+1", "+2", "+3"):
        async with http.post(f"{base}/sms/gw/send", json={"to": to, "text": "x"}):
            pass
    async with http.get(f"{base}/_sandbox/records?service=sms&limit=2") as r:
        assert [rec["address"] for rec in await r.json()] == ["+2", "+3"]
    async with http.get(f"{base}/_sandbox/stats") as r:
        assert (await r.json())["sms"]["outcomes"] == {"200": 3}
    async with http.post(f"{base}/_sandbox/profile", json={"fcm": {"rates": {"500": 1}}}) as r:
        layout = await r.json()
        assert layout["fcm"]["rates"] == {"500": 1.0} and layout["default"]["rates"] == {}
    async with http.post(f"{base}/_sandbox/reset") as r:
        assert r.status == 200
    async with http.get(f"{base}/_sandbox/stats") as r:
        assert await r.json() == {}


def _post(url: str, body: dict[str, Any]) -> int:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


def test_sandbox_thread_serves_synchronous_callers() -> None:
    with SandboxThread(profiles={"seed": 3}) as sb:
        assert sb.http_url.startswith("http://127.0.0.1:")
        assert _post(f"{sb.http_url}/hooks/sync", {"a": 1}) == 200
        sb.set_profile({"rates": {"503": 1.0}}, "webhook")
        assert _post(f"{sb.http_url}/hooks/sync", {"a": 1}) == 503
        assert sb.recorder.stats()["webhook"]["outcomes"] == {"200": 1, "503": 1}
        assert sb.smtp_port > 0 and sb.apns_port > 0 and sb.apns_url.startswith("http://")
    sb.stop()  # idempotent


def test_sandbox_thread_reports_bind_errors() -> None:
    with SandboxThread() as first:
        second = SandboxThread(http_port=first.sandbox.http_port)
        try:
            second.start()
        except RuntimeError as exc:
            assert isinstance(exc.__cause__, OSError)
        else:
            raise AssertionError("binding a used port should fail")


def test_command_line_runner(tmp_path: Path) -> None:
    profile = tmp_path / "profile.toml"
    profile.write_text('[webhook]\nrates = { "429" = 1.0 }\n')
    records = tmp_path / "records.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pushguard.sandbox", "--profile", str(profile)]
        + ["--records", str(records), "--no-verify"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        assert proc.stdout is not None
        lines = dict(proc.stdout.readline().split(None, 1) for _ in range(8))
        assert set(lines) == {
            "webhook",
            "fcm",
            "twilio",
            "sms",
            "webpush",
            "apns",
            "smtp",
            "control",
        }
        hook = lines["webhook"].strip().replace("{name}", "cli")
        assert _post(hook, {}) == 429
        assert json.loads(records.read_text())["outcome"] == "429"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        if proc.stdout is not None:
            proc.stdout.close()


async def test_stop_wakes_hanging_requests(http: aiohttp.ClientSession) -> None:
    sandbox = Sandbox(profiles={"rates": {"timeout": 1.0}, "timeout_s": 60})
    await sandbox.start()
    hanging = asyncio.ensure_future(http.post(f"{sandbox.http_url}/hooks/a", data=b"{}"))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await sandbox.stop()
    assert time.monotonic() - started < 5
    # Closed during shutdown is just as fine as a 504.
    with contextlib.suppress(aiohttp.ClientError):
        (await hanging).release()
