"""A few render worker processes, each job bounded in time and output.

:class:`RenderPool` starts :mod:`pushguard.templates.worker` processes on demand, up to
``size`` at once, and reuses them: a worker stays compiled-template-warm between jobs. A job
(one template, many contexts) goes to one worker; the worker stops each render at the time
limit itself, and if the whole job is not answered within ``time_limit * contexts + grace``
seconds the worker is killed and the job's renders fail as timeouts. A worker exits by itself
after ``idle`` seconds without work, and when its parent goes away (stdin closes).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: where ``import pushguard`` finds this copy of the package, whatever the worker's cwd
_ROOT = str(Path(__file__).resolve().parents[2])
_BOOT = ("import sys; sys.path.insert(0, {root!r}); "
         "from pushguard.templates.worker import main; main()")


class WorkerLost(Exception):
    """The worker process went away or broke the protocol."""


class WorkerTimeout(Exception):
    """The worker did not answer in time and was killed."""


class _Worker:
    def __init__(self, *, idle: float, memory: int, start_timeout: float) -> None:
        cmd = [sys.executable, "-c", _BOOT.format(root=_ROOT), "--idle", f"{idle:g}",
               "--memory", str(memory)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     close_fds=True)
        self._buf = b""
        try:
            if self._line(time.monotonic() + start_timeout) != b'"ready"':
                raise WorkerLost("the render worker did not start")
        except (WorkerLost, WorkerTimeout):
            self.kill()
            raise

    def alive(self) -> bool:
        return self.proc.poll() is None

    def call(self, data: bytes, timeout: float) -> Any:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise WorkerLost(f"the render worker went away: {exc}") from exc
        return json.loads(self._line(time.monotonic() + timeout))

    def _line(self, deadline: float) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerTimeout()
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise WorkerLost("the render worker exited")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def kill(self) -> None:
        _stop(self.proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    for f in (proc.stdin, proc.stdout):
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()
    proc.wait()


def _stop_all(idle: queue.LifoQueue[_Worker], busy: set[_Worker]) -> None:
    while True:
        try:
            idle.get_nowait().kill()
        except queue.Empty:
            break
    for w in list(busy):
        w.kill()


class RenderPool:
    """Render jobs in child processes.

    ``time_limit`` is per render (one context), ``max_output`` the characters one render may
    produce over all its fields, ``memory`` the address space a worker may use (bytes; 0 for
    no limit), ``size`` the most workers at once.
    """

    def __init__(self, *, size: int = 4, time_limit: float = 1.0,
                 max_output: int = 512 * 1024, memory: int = 1 << 30, idle: float = 300.0,
                 grace: float = 2.0, start_timeout: float = 30.0) -> None:
        self.size = size
        self.time_limit = time_limit
        self.max_output = max_output
        self.memory = memory
        self.idle = idle
        self.grace = grace
        self.start_timeout = start_timeout
        self._slots = threading.BoundedSemaphore(size)
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._busy: set[_Worker] = set()
        self._closed = False
        #: workers killed because a job overran: tests and metrics read it
        self.killed = 0
        self._finalizer = weakref.finalize(self, _stop_all, self._idle, self._busy)

    def _acquire(self) -> _Worker:
        while True:
            try:
                w = self._idle.get_nowait()
            except queue.Empty:
                break
            if w.alive():
                return w
            w.kill()
        return _Worker(idle=self.idle, memory=self.memory, start_timeout=self.start_timeout)

    def render(self, sources: Mapping[str, str], fields: Sequence[tuple[str, str, str]],
               contexts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One answer per context: ``{"ok": {field: text}}`` or ``{"error": {...}}`` (see
        :func:`pushguard.templates.worker.describe`)."""
        if not contexts:
            return []
        if self._closed:
            raise RuntimeError("the render pool is closed")
        job = {"sources": dict(sources), "fields": [list(f) for f in fields],
               "contexts": list(contexts), "time_limit": self.time_limit,
               "max_output": self.max_output}
        data = json.dumps(job).encode() + b"\n"
        timeout = self.time_limit * len(contexts) + self.grace
        with self._slots:
            for attempt in (1, 2):
                try:
                    w = self._acquire()
                except (WorkerLost, WorkerTimeout, OSError) as exc:
                    return [_failure("crashed", f"no render worker could start: {exc}")
                            ] * len(contexts)
                self._busy.add(w)
                try:
                    answer = w.call(data, timeout)
                except WorkerTimeout:
                    w.kill()
                    self.killed += 1
                    return [_failure("timeout", f"rendering took longer than "
                                     f"{self.time_limit:g} s; the renderer was stopped")
                            ] * len(contexts)
                except WorkerLost as exc:
                    w.kill()
                    if attempt == 1:  # it may have just exited for idleness: once more
                        continue
                    return [_failure("crashed", str(exc))] * len(contexts)
                finally:
                    self._busy.discard(w)
                    if self._closed:
                        w.kill()
                if isinstance(answer, dict) and isinstance(answer.get("results"), list):
                    self._idle.put(w)
                    return list(answer["results"])
                self._idle.put(w)
                return [_failure("crashed", str(answer.get("fatal") if isinstance(answer, dict)
                                                else answer))] * len(contexts)
        raise AssertionError("unreachable")

    def pids(self) -> list[int]:
        """The process ids of the workers waiting for work."""
        return [w.proc.pid for w in list(self._idle.queue)]

    def close(self) -> None:
        """Stop every worker."""
        self._closed = True
        self._finalizer()


def _failure(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"kind": kind, "message": message, "field": None, "template": None,
                      "line": None, "variable": None}}
