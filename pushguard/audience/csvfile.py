"""A CSV file as records with their line numbers, read in constant memory in any encoding.

A byte that is not valid in the file's encoding spoils only the record it is in: decoding
never stops, it marks each bad byte with a lone surrogate (``U+DC00 + byte``), which no strict
decoder can produce from valid input, and :func:`bad_bytes` finds the marks in a field. The
importer then rejects that one row, naming the line and the byte, instead of refusing the file.

Encodings: UTF-8 with or without a byte-order mark, UTF-16 and UTF-32 with one, or whatever
the caller names (``latin-1``, ``cp1252``...). UTF-16 without a byte-order mark cannot be told
from binary, so it is refused with a hint rather than read as garbage.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from pushguard.exceptions import InputError

#: rows an import writes per transaction, by default
BATCH = 2000

MARK = "pushguard.mark"
#: codecs whose escapes decode to any code point, lone surrogates included
_ESCAPES = frozenset({"utf-7", "unicode-escape", "raw-unicode-escape", "punycode", "idna"})
_MARKED = re.compile("[\udc00-\udcff]+")
_SURROGATE = re.compile("[\ud800-\udfff]")

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF32_BE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8-sig", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"),
)


def _mark(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    bad = exc.object[exc.start : exc.end]
    return "".join(chr(0xDC00 + b) for b in bad), exc.end


codecs.register_error(MARK, _mark)


def shown(text: str) -> str:
    """``text`` fit to show and store: each marked (or otherwise lone) surrogate as U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def bad_bytes(text: str) -> bytes:
    """The bytes marked as undecodable in ``text`` (empty when it decoded cleanly)."""
    return bytes(ord(ch) - 0xDC00 for run in _MARKED.findall(text) for ch in run)


def detect(head: bytes, encoding: str | None) -> tuple[str, str]:
    """``(codec, label)`` for a file starting with ``head``: a byte-order mark decides, then
    the caller's choice, then UTF-8."""
    for bom, codec, label in _BOMS:
        if head.startswith(bom) and (encoding is None or _is_utf(encoding)):
            return codec, label
    if encoding is not None:
        try:
            info = codecs.lookup(encoding)
        except (LookupError, ValueError):  # ValueError: a NUL in the name
            raise InputError("encoding", f"unknown encoding {encoding!r} (try utf-8, "
                             "utf-16, latin-1 or cp1252)") from None
        name = info.name
        if name in _ESCAPES:
            raise InputError("encoding", f"{encoding!r} decodes escapes into any code point, "
                             "including ones that are not text; save the file as UTF-8")
        if not getattr(info, "_is_text_encoding", True):
            raise InputError("encoding", f"{encoding!r} is not a text encoding (try utf-8, "
                             "utf-16-le, latin-1 or cp1252)")
        try:  # a codec that cannot read this file at all, or not with our error marks
            codecs.getincrementaldecoder(name)(errors=MARK).decode(head[:4096])
        except UnicodeError as exc:
            raise InputError("encoding", f"cannot read the file as {encoding!r}: {exc} (for "
                             "UTF-16 without a byte-order mark say utf-16-le or "
                             "utf-16-be)") from None
        except (TypeError, ValueError, LookupError) as exc:
            raise InputError("encoding", f"{encoding!r} cannot be used here ({exc})") from None
        return name, _label(name)
    if b"\x00" in head:
        raise InputError("encoding", "the file contains NUL bytes and no byte-order mark: it "
                         "looks like UTF-16 without one; give the encoding (utf-16-le or "
                         "utf-16-be) or save it as UTF-8")
    return "utf-8", "UTF-8"


def _is_utf(encoding: str) -> bool:
    try:
        return codecs.lookup(encoding).name.startswith(("utf-8", "utf-16", "utf-32"))
    except LookupError:
        return False


def _label(codec: str) -> str:
    if codec.startswith("utf"):
        return codec.upper().replace("_", "-").removesuffix("-SIG")
    return codec


@dataclass(frozen=True, slots=True)
class Record:
    """One CSV record; ``first``..``last`` are the file's line numbers it spans (a quoted
    field may hold line breaks)."""

    first: int
    last: int
    fields: list[str]
    #: the record could not be parsed at all (the csv module's complaint)
    problem: str | None = None


class CSVFile:
    """Records of a binary stream; ``bytes_read`` tells how far it got (for progress)."""

    def __init__(self, source: BinaryIO, encoding: str | None = None) -> None:
        buf: io.BufferedReader = (
            source if isinstance(source, io.BufferedReader)
            else io.BufferedReader(source)  # type: ignore[arg-type]
        )
        self._buf = buf
        self.codec, self.label = detect(buf.peek(4096)[:4096], encoding)
        self._text = io.TextIOWrapper(buf, encoding=self.codec, errors=MARK, newline="")

    @property
    def bytes_read(self) -> int:
        try:
            return self._buf.tell()
        except (OSError, ValueError):  # closed or not seekable: progress is only a hint
            return 0

    def __iter__(self) -> Iterator[Record]:
        reader = csv.reader(self._text)
        line = 0
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Record(line + 1, max(reader.line_num, line + 1), [],
                             f"cannot be read as CSV ({exc})")
                line = reader.line_num
                continue
            yield Record(line + 1, reader.line_num, fields)
            line = reader.line_num
