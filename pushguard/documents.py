"""Free-form JSON documents (message content, contact attributes, template data, segment
filters): what they must be to be stored and read back.

Python's ``json`` accepts two things the rest of the system cannot handle:

- **lone UTF-16 surrogates** (``"\\ud800"``, or their raw CESU-8 bytes): they are not text, so
  the database driver, the JSON encoder of a later answer or a provider fails on them;
- **deep nesting**: pydantic stops serializing past a few hundred levels, so a message
  accepted with deeply nested content could never be shown again.
"""

from __future__ import annotations

import json
from typing import Any

from pushguard.exceptions import InputError

#: objects and arrays nested deeper than this, counted from the body's top, are refused
MAX_DEPTH = 64


def _path(parts: list[str | int]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out or "body"


def _not_text(s: str) -> bool:
    if s.isascii():
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def find_problem(data: Any, *, texts: bool = True,
                 max_depth: int = MAX_DEPTH) -> tuple[str, str] | None:
    """(field, problem) for the first value that is not text (``texts``) or nested deeper
    than ``max_depth``; None when the document is fine."""
    stack: list[tuple[Any, list[str | int]]] = [(data, [])]
    while stack:
        value, at = stack.pop()
        if isinstance(value, str):
            if texts and _not_text(value):
                return _path(at), "is not valid Unicode text (it holds a lone UTF-16 surrogate)"
            continue
        if isinstance(value, dict):
            items: Any = value.items()
        elif isinstance(value, list):
            items = enumerate(value)
        else:
            continue
        if len(at) >= max_depth:  # named by its top field: the full path is the problem
            return _path(at[:1]), f"is nested deeper than {max_depth} levels"
        for key, item in items:
            if texts and isinstance(key, str) and _not_text(key):
                return _path(at), "has a key that is not valid Unicode text (a lone " \
                                  "UTF-16 surrogate)"
            stack.append((item, [*at, key]))
    return None


def parse(text: str | bytes, field: str, *, source: str = "") -> Any:
    """JSON text from outside (a command-line option, a file, a request body read by hand):
    its value, or ``InputError`` naming ``field``: not JSON, nested too deep for the parser,
    or :func:`find_problem`'s verdict. ``source`` names a file the text came from."""
    where = f"{source} " if source else ""
    try:
        value = json.loads(text)
    except RecursionError:
        raise InputError(field, f"{where}is nested too deep to read") from None
    except ValueError as exc:  # JSONDecodeError, and text that is not UTF-8
        raise InputError(field, f"{where}is not valid JSON ({exc})") from None
    problem = find_problem(value)
    if problem is not None:
        at, what = problem
        raise InputError(field if at == "body" else f"{field}.{at}", what)
    return value
