"""Reading CSV records with their line numbers in any encoding: a bad byte is marked, not
fatal, and the encoding is taken from the byte-order mark first."""

from __future__ import annotations

import codecs
import io

import pytest

from pushguard.audience.csvfile import CSVFile, bad_bytes, detect
from pushguard.exceptions import InputError


@pytest.mark.parametrize(("head", "given", "codec", "label"), [
    (b"external_id", None, "utf-8", "UTF-8"),
    (codecs.BOM_UTF8 + b"e", None, "utf-8-sig", "UTF-8"),
    (codecs.BOM_UTF8 + b"e", "utf-8", "utf-8-sig", "UTF-8"),
    (codecs.BOM_UTF16_LE + b"e\x00", None, "utf-16", "UTF-16"),
    (codecs.BOM_UTF16_BE + b"\x00e", None, "utf-16", "UTF-16"),
    (codecs.BOM_UTF32_LE + b"e\x00\x00\x00", None, "utf-32", "UTF-32"),
    (b"external_id", "latin-1", "iso8859-1", "iso8859-1"),
    (b"external_id", "UTF8", "utf-8", "UTF-8"),
    (b"e\x00x\x00", "utf-16-le", "utf-16-le", "UTF-16-LE"),
])
def test_detect(head: bytes, given: str | None, codec: str, label: str) -> None:
    assert detect(head, given) == (codec, label)


def test_nul_bytes_without_a_byte_order_mark_ask_for_the_encoding() -> None:
    with pytest.raises(InputError) as e:
        detect("external_id".encode("utf-16-le"), None)
    assert e.value.field == "encoding" and "utf-16-le" in e.value.problem


def test_records_carry_their_lines_and_bad_bytes_are_marked() -> None:
    data = b'a,b\r\n1,"x\r\ny"\r\n\r\n2,caf\xe9\r\n3,\xed\xa0\x80\r\n'
    records = list(CSVFile(io.BytesIO(data)))
    assert [(r.first, r.last) for r in records] == [(1, 1), (2, 3), (4, 4), (5, 5), (6, 6)]
    assert records[1].fields == ["1", "x\r\ny"]
    assert records[2].fields == []
    assert bad_bytes(records[3].fields[1]) == b"\xe9"
    assert bad_bytes(records[4].fields[1]) == b"\xed\xa0\x80"  # an encoded surrogate
    assert bad_bytes("café ✓") == b""


def test_a_stream_without_peek_is_buffered() -> None:
    class Raw(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._b = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
            n = self._b.readinto(buf)
            return n

    csvf = CSVFile(Raw(b"\xef\xbb\xbfa\n1\n"))  # type: ignore[arg-type]
    assert csvf.label == "UTF-8" and [r.fields for r in csvf] == [["a"], ["1"]]


@pytest.mark.parametrize("encoding", ["rot13", "base64", "hex", "uu_codec", "idna", "utf-16"])
def test_encodings_that_cannot_read_a_csv_are_refused_by_name(encoding: str) -> None:
    from pushguard.audience.csvfile import detect
    from pushguard.exceptions import InputError

    with pytest.raises(InputError) as err:
        detect(b"external_id,email\n1,a@example.com\n", encoding)
    assert err.value.field == "encoding"
