"""Child processes of the benchmark: the sandbox receiver, the pushguard API and worker.

Every process is started here and stopped here, by its own pid: SIGTERM first, SIGKILL only
when it does not exit in time.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def webhook_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def pushguard_env(database_url: str, secret: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGUARD_")}
    env.update(
        PUSHGUARD_DATABASE_URL=database_url,
        PUSHGUARD_WEBHOOK_SECRET=secret,
        PUSHGUARD_OUTBOUND_ALLOW="127.0.0.1",
        PUSHGUARD_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass
class Child:
    """One child process with its output in files under ``logdir``."""

    name: str
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    started: float = field(default_factory=time.perf_counter)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait, SIGKILL if needed; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)

    def stderr_tail(self, n: int = 20) -> str:
        try:
            lines = self.err.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stderr_lines(self) -> int:
        try:
            return len(self.err.read_text(errors="replace").splitlines())
        except OSError:
            return 0


def spawn(name: str, args: list[str], logdir: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> Child:
    logdir.mkdir(parents=True, exist_ok=True)
    out, err = logdir / f"{name}.out", logdir / f"{name}.err"
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen(
            args, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, env=env,
            cwd=str(cwd or logdir),
        )
    return Child(name, proc, out, err)


def run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> str:
    """Run a short command; its stdout, or an exception with its stderr."""
    res = subprocess.run(args, env=env, cwd=str(cwd), capture_output=True, text=True,
                         timeout=timeout, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(args[2:])} failed ({res.returncode}): {res.stderr[-2000:]}")
    return res.stdout


def start_sandbox(logdir: Path, max_records: int = 1000) -> tuple[Child, str]:
    """The sandbox with the default (no faults) profile; returns it and its HTTP base URL."""
    child = spawn(
        "sandbox",
        [PY, "-m", "pushguard.sandbox", "--host", "127.0.0.1", "--port", "0", "--no-verify",
         "--max-records", str(max_records)],
        logdir,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in child.out.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "webhook":
                url = parts[1]
                return child, url.split("/hooks/", 1)[0]
        if not child.alive():
            raise RuntimeError(f"sandbox exited: {child.stderr_tail()}")
        time.sleep(0.05)
    child.stop()
    raise RuntimeError("sandbox did not print its URLs within 30 s")


def migrate_and_key(env: dict[str, str], cwd: Path) -> str:
    run([PY, "-m", "pushguard", "db", "upgrade"], env, cwd)
    out = run([PY, "-m", "pushguard", "keys", "create", "--name", "bench"], env, cwd)
    return out.strip().splitlines()[-1].strip()


def start_api(env: dict[str, str], logdir: Path, cwd: Path) -> tuple[Child, str]:
    port = free_port()
    child = spawn("api", [PY, "-m", "pushguard", "api", "--host", "127.0.0.1",
                          "--port", str(port)], logdir, env, cwd)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz", child)
    return child, base


def wait_http(url: str, child: Child, timeout: float = 60) -> None:
    import asyncio

    async def poll() -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as s:
            while time.monotonic() < deadline:
                if not child.alive():
                    raise RuntimeError(f"{child.name} exited: {child.stderr_tail()}")
                try:
                    async with s.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if r.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError(f"{url} did not answer within {timeout} s")

    asyncio.run(poll())


def start_worker(env: dict[str, str], logdir: Path, cwd: Path, *, concurrency: int,
                 batch: int, name: str = "worker", patch: str = "") -> Child:
    """``pushguard worker``; with ``patch``, the same CLI with bench.whatif patches applied."""
    cmd = [PY, "-m", "bench.whatif", "--patch", patch] if patch else [PY, "-m", "pushguard"]
    env = {**env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)} if patch else env
    return spawn(name, [*cmd, "worker", "--concurrency", str(concurrency), "--batch", str(batch)],
                 logdir, env, cwd)


def status_kb(pid: int) -> dict[str, int]:
    """VmHWM / VmRSS of a live process in kB ({} once it is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process (threads included)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all cores since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return total - idle, total


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """Share of all cores' time that was busy between two :func:`machine_ticks`."""
    total = after[1] - before[1]
    return None if total <= 0 else (after[0] - before[0]) / total
