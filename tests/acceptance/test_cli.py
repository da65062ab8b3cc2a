"""The real CLI as a subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from pushguard.sandbox import SandboxThread
from tests.acceptance.conftest import CLI, free_port


def test_keys_create_prints_the_key_on_the_last_line(cli: CLI) -> None:
    cli("db", "upgrade")
    out = cli("keys", "create", "--name", "ci").stdout.strip().splitlines()
    key = out[-1]
    assert key.startswith("pgk_") and len(key) > 40
    listing = cli("keys", "list").stdout
    assert "ci" in listing and key not in listing


def test_send_status_why_for_a_queued_message(cli: CLI) -> None:
    cli("db", "upgrade")
    sent = cli("send", "--channel", "webhook", "--to", "http://127.0.0.1:9/h",
               "--content", '{"event": "x"}', "--idempotency-key", "k1").stdout.split()
    mid, state = sent[0], sent[1]
    assert mid.startswith("msg_") and state == "queued"
    again = cli("send", "--channel", "webhook", "--to", "http://127.0.0.1:9/h",
                "--content", '{"event": "x"}', "--idempotency-key", "k1").stdout
    assert again.startswith(mid) and "replayed" in again
    status = json.loads(cli("status", mid, "--json").stdout)
    assert status["state"] == "queued" and status["content"] == {"event": "x"}
    why = cli("why", mid).stdout
    assert "PENDING" in why and "accepted for webhook" in why
    narrow = CLI({**cli.env, "COLUMNS": "80"}, cli.cwd)
    assert mid in narrow("messages").stdout  # whole, to be copied into the next command


def test_data_in_brackets_is_printed_not_taken_for_markup(cli: CLI) -> None:
    """Rich read "[vip]" in an external id as a style and printed nothing of it."""
    cli("db", "upgrade")
    cli("contacts", "add", "[vip]ann", "--email", "ann@example.com")
    assert "[vip]ann" in cli("contacts", "list").stdout
    assert "[vip]ann" in cli("contacts", "show", "[vip]ann").stdout.splitlines()[0]


def test_bad_input_is_a_clear_error_with_status_1(cli: CLI) -> None:
    cli("db", "upgrade")
    cases = [
        (["--channel", "pigeon", "--to", "x"], "channel: unknown channel"),
        (["--channel", "webhook", "--to", "http://10.0.0.1/x"], "to: "),
        (["--channel", "webhook", "--to", "http://127.0.0.1/x", "--content", "{nope"],
         "content: is not valid JSON"),
        (["--channel", "webhook", "--to", "http://127.0.0.1/x", "--ttl", "0"], "ttl"),
    ]
    for args, expected in cases:
        proc = cli("send", *args, check=False)
        assert proc.returncode == 1, proc
        assert proc.stderr.startswith("error: ") and expected in proc.stderr, proc.stderr
    assert cli("status", "msg_nope", check=False).returncode == 1


def test_input_the_store_cannot_hold_is_an_error_not_a_traceback(cli: CLI,
                                                                 tmp_path: Path) -> None:
    """Input that parses but no database or file could hold: bytes that are not UTF-8 in an
    argument, a lone surrogate or absurd nesting in a JSON option, a file that is not UTF-8,
    and numbers past any column's range."""
    cli("db", "upgrade")
    deep = "[" * 50_000 + "]" * 50_000
    (tmp_path / "latin1.json").write_bytes(b'{"name": "caf\xe9"}')
    (tmp_path / "lone.json").write_text('{"name": "t", "channel": "webhook", '
                                        '"content": {"json": {"x": "\\ud800"}}}')
    cases: list[tuple[list[str | bytes], str]] = [
        (["contacts", "show", b"u1\xff"], "argument 3 is not valid UTF-8 text"),
        (["contacts", "add", "u2", "--attributes", '{"plan": "\\ud800"}'],
         "--attributes.plan: is not valid Unicode text"),
        (["contacts", "add", "u2", "--attributes", deep], "--attributes: is nested too deep"),
        (["send", "--channel", "webhook", "--to", "http://127.0.0.1/x", "--content",
          '{"a": "\\udfff"}'], "--content.a: is not valid Unicode text"),
        (["template", "add", "t", "-f", "latin1.json"], "is not UTF-8 text"),
        (["template", "add", "t", "-f", "lone.json"], "content.json.x: is not valid Unicode"),
        (["segments", "preview", "--filter", deep], "--filter: is nested too deep"),
    ]
    for args, expected in cases:
        proc = cli(*args, check=False)  # type: ignore[arg-type]
        assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr, proc.stderr
        assert expected in proc.stderr, (args[:2], proc.stderr)
    # standard input: not UTF-8, closed, or endless
    run = [sys.executable, "-m", "pushguard", "lessons", "add", "-", "--cause",
           "NETWORK_TIMEOUT"]
    for data, expected in ((b"abc\xff\xfe", "standard input is not UTF-8 text"),
                           (b"x" * 100_000, "standard input is longer than 4,096 bytes")):
        proc = subprocess.run(run, input=data, env=cli.env, cwd=cli.cwd, capture_output=True,
                              timeout=60)
        assert proc.returncode == 1 and b"Traceback" not in proc.stderr, proc.stderr
        assert expected.encode() in proc.stderr, proc.stderr
    closed = subprocess.run(" ".join(run) + " <&-", shell=True, env=cli.env, cwd=cli.cwd,
                            capture_output=True, timeout=60)
    assert closed.returncode == 1 and b"standard input, which is closed" in closed.stderr
    # a file's name may be any bytes: one that exists is opened, not refused
    (tmp_path / "caf\udce9.csv").write_text("external_id,email\nz1,z1@example.com\n")
    imported = cli("contacts", "import", b"caf\xe9.csv", check=False)  # type: ignore[arg-type]
    assert imported.returncode == 0, imported.stderr
    assert "z1" in cli("contacts", "show", "z1").stdout
    for args in (["suppressions", "list", "--limit", str(2**63)],
                 ["template", "show", "t", "--version", str(2**63)],
                 ["segments", "preview", "--filter", "{}", "--sample", str(2**63)]):
        proc = cli(*args, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "Invalid value" in proc.stderr


def test_commands_refuse_an_unmigrated_database(cli: CLI) -> None:
    proc = cli("send", "--channel", "webhook", "--to", "http://127.0.0.1/x", check=False)
    assert proc.returncode == 1 and "pushguard db upgrade" in proc.stderr


def test_config_check_reports_every_problem_with_its_location(cli: CLI, tmp_path: Path) -> None:
    cli("db", "upgrade")
    assert "configuration OK" in cli("config", "check").stdout
    bad = tmp_path / "pushguard.toml"
    bad.write_text(
        '[channels.sms]\nproviders = ["gw", "ghost"]\n\n'
        '[providers.gw]\ntype = "http"\nurl = "ftp://x"\ntimeout = "slow"\n\n'
        '[providers.odd]\ntype = "carrier-pigeon"\n\n'
        '[providers.hook]\ntype = "webhook"\nsecret = "env:MISSING_SECRET_VAR"\n\n'
        "[colours]\nred = 1\n"
    )
    proc = cli("config", "check", check=False)
    assert proc.returncode == 1
    err = proc.stderr
    assert "pushguard.toml:colours" in err
    assert "providers.gw.timeout" in err
    assert "'ghost' is not defined" in err
    assert "providers.odd.type" in err and "carrier-pigeon" in err
    assert "MISSING_SECRET_VAR is not set" in err


def test_a_port_already_taken_is_a_one_line_error(cli: CLI) -> None:
    """uvicorn answered a taken port by exiting 3 from inside a task, with a traceback and
    "Task was destroyed but it is pending!", after logging that the API was listening."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for command in ("serve", "api"):
            got = cli(command, "--port", port, check=False, timeout=30)
            assert got.returncode == 1, got
            assert got.stderr.strip().splitlines()[-1] == (
                f"error: could not listen on 127.0.0.1:{port}: Address already in use")
            assert "Traceback" not in got.stderr and "api_listening" not in got.stderr
    # a provider configuration that cannot work stops serve before it listens
    unsigned = CLI({k: v for k, v in cli.env.items() if k != "PUSHGUARD_WEBHOOK_SECRET"},
                   cli.cwd)
    got = unsigned("serve", "--port", "0", check=False, timeout=30)
    assert got.returncode == 1 and "no signing secret" in got.stderr, got
    assert "api_listening" not in got.stderr


def test_serve_delivers_and_explains_end_to_end(cli: CLI, webhook_secret: str) -> None:
    port = free_port()
    with SandboxThread(webhook_secret=webhook_secret) as sb:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pushguard", "serve", "--port", str(port)],
            env=cli.env, cwd=cli.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while True:
                try:
                    if httpx.get(f"{base}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "serve did not become ready"
                time.sleep(0.1)
            key = cli("keys", "create", "--name", "e2e").stdout.strip().splitlines()[-1]
            auth = {"Authorization": f"Bearer {key}"}
            ok = httpx.post(f"{base}/v1/messages", headers=auth, json={
                "channel": "webhook", "to": f"{sb.http_url}/hooks/shop",
                "content": {"type": "order.paid"}}).json()
            gone = httpx.post(f"{base}/v1/messages", headers=auth, json={
                "channel": "webhook", "to": f"{sb.http_url}/hooks/dead-shop",
                "content": {"type": "order.paid"}}).json()
            for mid in (ok["id"], gone["id"]):
                while httpx.get(f"{base}/v1/messages/{mid}", headers=auth).json()["state"] in (
                    "queued", "sending", "retry_scheduled"
                ):
                    assert time.monotonic() < deadline + 20
                    time.sleep(0.1)
            delivered = httpx.get(f"{base}/v1/messages/{ok['id']}", headers=auth).json()
            failed = httpx.get(f"{base}/v1/messages/{gone['id']}", headers=auth).json()
            metrics = httpx.get(f"{base}/metrics").text
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr.decode()[-2000:]
        received = [r for r in sb.recorder.records("webhook") if r.outcome == "200"]
    assert delivered["state"] == "delivered"
    assert delivered["attempts"][0]["status"] == 200
    assert [r.headers["webhook-id"] for r in received] == [ok["id"]]
    assert failed["state"] == "failed"
    assert failed["failure"]["cause"] == "UNREGISTERED_TOKEN"
    assert failed["failure"]["provider_code"] == "HTTP 410" and failed["failure"]["fix"]
    assert 'pushguard_messages_delivered_total{channel="webhook",provider="webhook"} 1.0' in (
        metrics)
    why = cli("why", gone["id"]).stdout
    assert "FAILED" in why and "410" in why and "What to do" in why
