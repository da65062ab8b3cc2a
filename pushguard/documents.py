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
import re
import sys
from itertools import accumulate
from typing import Any

from pushguard.exceptions import InputError

#: objects and arrays nested deeper than this, counted from the body's top, are refused
MAX_DEPTH = 64
#: no document (a body, a message, a contact's attributes) holds more values than this
MAX_VALUES = 200_000
PROBLEM_TEXT = "is not valid Unicode text (it holds a lone UTF-16 surrogate)"

# A lone surrogate in JSON bytes: escaped (a high one not followed by a low one, or a low one
# not preceded by a high one: an escaped pair such as \ud83d\ude00 is text, and common), or
# as raw CESU-8 bytes (ED A0-BF ..), which json decodes as well, one surrogate each.
_LONE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    rb"|\xed[\xa0-\xbf]")
_NOT_BRACKET_OR_QUOTE = bytes(b for b in range(256) if b not in b'[]{}"')
_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # as signed bytes: +1, +1, -1, -1


def _too_deep(raw: bytes, max_depth: int) -> bool:
    """Whether a valid JSON text nests deeper than ``max_depth``, from its bytes alone: the
    strings dropped, the brackets kept as +1 and -1, and the running sum's peak. All of it
    runs in C, in a few passes over the bytes and one over the brackets."""
    # Backslashes occur only inside strings: without the escaped backslashes and quotes,
    # every quote left opens or closes a string. Of the quotes and brackets alone, two
    # adjacent quotes go together (a string without brackets, or one's end and the next's
    # start), so dropping them leaves the others where they were: only strings that hold
    # brackets (rare) are left to cut out.
    bare = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = bare.translate(None, _NOT_BRACKET_OR_QUOTE).replace(b'""', b"")
    if b'"' in brackets:
        brackets = b"".join(brackets.split(b'"')[::2])
    if len(brackets) <= 2 * max_depth:
        return False
    steps = memoryview(brackets.translate(_STEP)).cast("b")
    return max(accumulate(steps)) > max_depth


def suspect(raw: bytes, *, max_depth: int = MAX_DEPTH) -> bool:
    """Whether the JSON text ``raw`` (which parsed) may hold what :func:`find_problem`
    refuses. False for almost every body, at the cost of a few passes in C; when True, the
    walk in Python finds the field, or nothing (an escaped backslash before "ud800" is text)."""
    if json.detect_encoding(raw) != "utf-8":
        return True  # UTF-16 or -32: surrogates are code units there, check the text itself
    maybe = b"\\ud" in raw or b"\\uD" in raw or b"\xed" in raw  # before the regex: cheaper
    return (maybe and _LONE.search(raw) is not None) or _too_deep(raw, max_depth)


def _path(parts: list[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def not_text(s: str) -> bool:
    """Whether ``s`` holds a lone surrogate, which no encoder or database takes."""
    if s.isascii():
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def find_problem(data: Any, *, max_depth: int = MAX_DEPTH,
                 max_values: int = MAX_VALUES) -> tuple[str, str] | None:
    """(field, problem) for the first string that is not text, or the first object or array
    nested deeper than ``max_depth``; None when the document is fine. One pass, in time and
    memory linear in the document: one iterator per open container, and the path to the
    current value (rebuilt as a field name only for the answer). A document of more than
    ``max_values`` values is a problem too: none is that large, and the walk stays short."""
    if isinstance(data, str):
        return ("body", PROBLEM_TEXT) if not_text(data) else None
    if not isinstance(data, dict | list):
        return None
    path: list[Any] = []
    stack: list[Any] = [iter(data.items()) if isinstance(data, dict) else enumerate(data)]
    budget = max_values
    while stack:
        for key, value in stack[-1]:
            budget -= 1
            if budget < 0:
                return "body", f"holds more than {max_values:,} values"
            if isinstance(key, str) and not_text(key):
                return _path(path), "has a key that is not valid Unicode text (a lone " \
                                    "UTF-16 surrogate)"
            if isinstance(value, str):
                if not_text(value):
                    return _path([*path, key]), PROBLEM_TEXT
            elif isinstance(value, dict | list):
                if len(stack) >= max_depth:  # named by its top field: the whole path is long
                    return _path([*path, key][:1]), f"is nested deeper than {max_depth} levels"
                path.append(key)
                stack.append(iter(value.items()) if isinstance(value, dict)
                             else enumerate(value))
                break
        else:
            stack.pop()
            if path:
                path.pop()
    return None


def read_stdin(field: str, *, limit: int) -> str:
    """Standard input as UTF-8 text of at most ``limit`` bytes, or ``InputError`` naming
    ``field``: closed, too long (only ``limit`` + 1 bytes are ever read), or not UTF-8."""
    if sys.stdin is None:
        raise InputError(field, "'-' reads standard input, which is closed")
    data = sys.stdin.buffer.read(limit + 1)
    if len(data) > limit:
        raise InputError(field, f"standard input is longer than {limit:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(field, f"standard input is not UTF-8 text ({exc.reason} at byte "
                                f"{exc.start})") from None


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
