"""The sandbox, and the child process that renders templates in it.

Templates are written by people who are not pushguard's operators, so they are rendered with
:class:`Sandbox`: Jinja's ``ImmutableSandboxedEnvironment`` (no ``__class__`` walks, no
mutating lists or dicts), ``StrictUndefined`` (a missing variable is an error naming it, never
an empty string) and autoescaping in the HTML environment only (GUARANTEES.md §4.3).

The sandbox does not bound time or memory: ``{% for i in range(99999) %}{% for j in
range(99999) %}{% endfor %}{% endfor %}`` is ten billion iterations of nothing. So rendering
happens here, in a child process (:mod:`pushguard.templates.pool` runs a few):

* a ``SIGALRM`` timer interrupts a render that runs longer than its limit. Python checks
  signals between bytecodes, so this stops any loop written in a template;
* the output is counted chunk by chunk as Jinja yields it, and a render that outgrows its cap
  stops there;
* ``RLIMIT_AS`` turns a memory bomb inside one C call (``"a" * 10**10``) into a
  ``MemoryError``, and ``*``/``**`` are checked before they run;
* and the parent kills the process when even the timer cannot fire (a long C call), then
  starts another.

A thread cannot do this: Python cannot stop a thread, so a timed-out render would keep a core
busy and the GIL contended until it finished by itself, hours later.

Protocol: one JSON object per line on stdin, one answer per line on stdout; ``ready`` first.
This module imports nothing of pushguard, so a worker starts in about 0.1 s.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any

from jinja2 import BaseLoader, Environment, StrictUndefined, Template, TemplateNotFound
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

#: characters (or items) that ``*`` may produce, and the largest exponent ``**`` may use
MAX_REPEAT = 1_000_000
MAX_EXPONENT = 4096
#: compiled environments kept per worker, keyed by the hash of their sources
ENV_CACHE = 32
#: what a variable missing from lenient (sample) data renders as: braces, so link checks and
#: the marketing placeholder check can tell it apart from real text
PLACEHOLDER = "{{{}}}"


class RenderTimeout(BaseException):
    """Raised by the alarm. A BaseException, so no ``except Exception`` inside Jinja eats it."""


class OutputTooLarge(Exception):
    """The output outgrew its cap."""


class Scope(dict[str, Any]):
    """A dict that knows where it is (``contact.attributes``), so a missing key is reported
    by its full path. ``_pg_path`` starts with an underscore: the sandbox hides it."""

    __slots__ = ("_pg_path",)

    def __init__(self, items: Mapping[str, Any], path: str) -> None:
        super().__init__(items)
        self._pg_path = path


class Sample(Scope):
    """Sample data for lint: any key that is missing renders as a placeholder."""

    __slots__ = ()

    def __missing__(self, key: str) -> Any:
        return Placeholder(f"{self._pg_path}.{key}")


class Placeholder(str):
    """A value nobody supplied: renders as ``{data.key}``; its attributes and items are more
    placeholders, and looping over it runs once."""

    _pg_path: str

    def __new__(cls, path: str) -> Placeholder:
        self = super().__new__(cls, PLACEHOLDER.format(path))
        self._pg_path = path
        return self

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return Placeholder(f"{self._pg_path}.{key}")
        return super().__getitem__(key)

    def __iter__(self) -> Iterator[Any]:
        return iter([Placeholder(f"{self._pg_path}[0]")])


def wrap(value: Any, path: str, *, lenient: bool = False) -> Any:
    """JSON data as template values: dicts become :class:`Scope` (or :class:`Sample`)."""
    if isinstance(value, dict):
        cls = Sample if lenient else Scope
        return cls({k: wrap(v, f"{path}.{k}", lenient=lenient) for k, v in value.items()},
                   path)
    if isinstance(value, list):
        return [wrap(v, f"{path}[{i}]", lenient=lenient) for i, v in enumerate(value)]
    return value


class PathUndefined(StrictUndefined):
    """StrictUndefined whose message names the whole path: ``'contact.attributes.name' is
    undefined`` rather than ``'dict object' has no attribute 'name'``."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        obj = self._undefined_obj
        path = getattr(obj, "_pg_path", None) if isinstance(obj, Scope | Placeholder) else None
        if path is not None and not self._undefined_hint:
            name = self._undefined_name
            full = f"{path}.{name}" if isinstance(name, str) else f"{path}[{name!r}]"
            return f"{full!r} is undefined"
        return str(super()._undefined_message)


class Sandbox(ImmutableSandboxedEnvironment):
    """The one environment templates are parsed and rendered with."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int) \
                        and len(seq) * n > MAX_REPEAT:
                    raise SecurityError(f"repeating a sequence to more than {MAX_REPEAT} "
                                        "items is not allowed")
        if operator == "**" and isinstance(right, int) and right > MAX_EXPONENT \
                and isinstance(left, int | float) and abs(left) > 1:
            raise SecurityError(f"exponents above {MAX_EXPONENT} are not allowed")
        return super().call_binop(context, operator, left, right)


class SourceLoader(BaseLoader):
    """Templates by name from a dict; the name is also the "file name", which is how an
    error is traced back to the template (field, partial or layout) it happened in."""

    def __init__(self, sources: Mapping[str, str]) -> None:
        self.sources = sources

    def get_source(self, environment: Environment,
                   template: str) -> tuple[str, str, Callable[[], bool]]:
        if template not in self.sources:
            raise TemplateNotFound(template)
        return self.sources[template], template, lambda: True


def environment(sources: Mapping[str, str] | None = None, *, html: bool = False) -> Sandbox:
    """A sandbox over ``sources``; autoescaping only for HTML."""
    return Sandbox(loader=SourceLoader(sources or {}), undefined=PathUndefined,
                   autoescape=html, auto_reload=False, keep_trailing_newline=True)


_envs: OrderedDict[str, tuple[Sandbox, Sandbox]] = OrderedDict()


def _envs_for(sources: dict[str, str]) -> tuple[Sandbox, Sandbox]:
    key = hashlib.sha256(json.dumps(sources, sort_keys=True).encode()).hexdigest()
    pair = _envs.get(key)
    if pair is None:
        pair = (environment(sources), environment(sources, html=True))
        _envs[key] = pair
        if len(_envs) > ENV_CACHE:
            _envs.popitem(last=False)
    else:
        _envs.move_to_end(key)
    return pair


def where(tb: TracebackType | None, names: Mapping[str, Any]) -> tuple[str | None, int | None]:
    """The innermost template (by name) and its line in a traceback.

    Jinja rewrites the traceback of an ordinary exception so its frames carry template lines;
    frames it did not rewrite (our timeout) still hold the template, which maps the line."""
    found: tuple[str | None, int | None] = (None, None)
    while tb is not None:
        frame = tb.tb_frame
        tpl = frame.f_globals.get("__jinja_template__")
        if isinstance(tpl, Template):
            found = (tpl.name, tpl.get_corresponding_lineno(tb.tb_lineno))
        elif frame.f_code.co_filename in names:
            found = (frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


def _variable(message: str) -> str | None:
    if message.endswith("' is undefined") and message.startswith("'"):
        return message[1:-len("' is undefined")]
    marker = " has no attribute '"
    if marker in message:
        return message.rsplit(marker, 1)[1].rstrip("'")
    return None


def _alarm(_signum: int, _frame: Any) -> None:
    raise RenderTimeout()


def render_context(job: Mapping[str, Any], ctx: Mapping[str, Any]) -> dict[str, Any]:
    """Render every field of ``job`` for one context: ``{"ok": {field: text}}`` or
    ``{"error": {...}}`` naming the kind, field, template, line and variable."""
    sources: dict[str, str] = job["sources"]
    text_env, html_env = _envs_for(sources)
    lenient = set(ctx.get("lenient", ()))
    values = {k: wrap(v, k, lenient=k in lenient) for k, v in ctx["vars"].items()}
    if "contact" in values and "contact.attributes" in lenient:
        values["contact"]["attributes"] = wrap(
            ctx["vars"]["contact"].get("attributes") or {}, "contact.attributes", lenient=True)
    for key, value in ctx.get("markup", {}).items():
        values[key] = Markup(value)
    limit, cap = float(job["time_limit"]), int(job["max_output"])
    out: dict[str, str] = {}
    total, field = 0, None
    try:
        # The alarm may fire anywhere up to the moment it is disarmed, the finally clause
        # included: whatever it interrupts, the outer handler reports a timeout.
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            for field, name, mode in job["fields"]:
                template = (html_env if mode == "html" else text_env).get_template(name)
                parts = []
                for chunk in template.generate(values):
                    total += len(chunk)
                    if total > cap:
                        raise OutputTooLarge()
                    parts.append(chunk)
                out[field] = "".join(parts)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        return {"ok": out}
    except (Exception, RenderTimeout) as exc:
        return {"error": describe(exc, field, sources, limit, cap)}


def describe(exc: BaseException, field: str | None, sources: Mapping[str, str],
             limit: float, cap: int) -> dict[str, Any]:
    """One render failure as data."""
    template, line = where(exc.__traceback__, sources)
    kind, message, variable = "error", f"{type(exc).__name__}: {exc}", None
    if isinstance(exc, TemplateSyntaxError):
        kind, message = "syntax", exc.message or str(exc)
        template, line = exc.name or template, exc.lineno
    elif isinstance(exc, UndefinedError):
        kind, message = "undefined", str(exc.message or exc)
        variable = _variable(message)
    elif isinstance(exc, SecurityError):
        kind, message = "security", str(exc)
    elif isinstance(exc, TemplateNotFound):
        kind, message = "not_found", f"no partial named {exc.name!r}"
    elif isinstance(exc, RenderTimeout):
        kind, message = "timeout", f"rendering took longer than {limit:g} s"
    elif isinstance(exc, OutputTooLarge):
        kind, message = "too_large", f"the output is larger than {cap} characters"
    elif isinstance(exc, MemoryError):
        kind, message = "memory", "rendering needed more memory than a template may use"
    return {"kind": kind, "message": message, "field": field, "template": template,
            "line": line, "variable": variable}


def handle(job: Mapping[str, Any]) -> dict[str, Any]:
    return {"results": [render_context(job, ctx) for ctx in job["contexts"]]}


class _Lines:
    """Lines from a file descriptor, waiting at most ``idle`` seconds for each."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def next(self, idle: float) -> bytes | None:
        while b"\n" not in self.buf:
            ready, _, _ = select.select([self.fd], [], [], idle)
            if not ready:
                return None
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line


def main() -> None:
    """Serve jobs until stdin closes or nothing comes for ``--idle`` seconds."""
    idle = float(sys.argv[sys.argv.index("--idle") + 1]) if "--idle" in sys.argv else 300.0
    memory = int(sys.argv[sys.argv.index("--memory") + 1]) if "--memory" in sys.argv else 0
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print must not corrupt the protocol
    if memory:
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        except (ImportError, ValueError, OSError):  # not on this platform: the parent's kill
            pass
    signal.signal(signal.SIGALRM, _alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is for the parent
    answers.write(b'"ready"\n')
    answers.flush()
    lines = _Lines(0)
    while True:
        line = lines.next(idle)
        if line is None:
            return
        try:
            answer = handle(json.loads(line))
        except MemoryError:
            answer = {"fatal": "out of memory"}
        except RenderTimeout:  # cannot happen once every alarm is disarmed; never die of it
            answer = {"fatal": "rendering took too long"}
        except Exception as exc:  # a malformed job: say so, keep serving
            answer = {"fatal": f"{type(exc).__name__}: {exc}"}
        answers.write(json.dumps(answer).encode() + b"\n")
        answers.flush()


if __name__ == "__main__":
    main()
