"""How many SMS segments a text costs, and what that costs (FAILURES.md §1.5).

A text that fits the GSM-7 alphabet is sent 7 bits per character: 160 characters in one
segment, 153 per segment once it must be split (the other 7 carry the concatenation header).
One character outside that alphabet, an emoji say, switches the *whole* text to UCS-2: 70
UTF-16 code units in one segment, 67 per segment when split. So one emoji can turn a
160-character, one-segment text into three segments.

The extension table (``^ { } [ ] ~ \\ |``, ``€`` and form feed) is escaped, so each of those
costs two septets, and neither an escape pair nor a UTF-16 surrogate pair is ever split between
two segments: a segment that cannot take the whole pair is sent one unit short. Counting that
way matches what handsets and Twilio bill, where a plain division would undercount.

Twilio's "smart encoding" (replacing curly quotes and the like by GSM look-alikes) is not
modelled: what is counted is the text as submitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from pushguard.exceptions import InputError

Encoding = Literal["GSM-7", "UCS-2"]

#: the longest body Twilio accepts (error 21617), counted in septets or UTF-16 code units.
MAX_CHARACTERS = 1600

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("\f^{}\\[~]|€")

_LIMITS: dict[Encoding, tuple[int, int]] = {"GSM-7": (160, 153), "UCS-2": (70, 67)}


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """The encoding a text needs and how it splits into segments."""

    encoding: Encoding
    #: septets for GSM-7 (extension characters count 2), UTF-16 code units for UCS-2.
    characters: int
    segments: int
    #: capacity of each segment: 160/70 for a single segment, 153/67 when concatenated.
    per_segment: int

    @property
    def too_long(self) -> bool:
        """Longer than the 1600 characters a concatenated message may have."""
        return self.characters > MAX_CHARACTERS


def _widths(text: str) -> tuple[Encoding, list[int]]:
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in text):
        return "GSM-7", [2 if ch in GSM7_EXTENDED else 1 for ch in text]
    return "UCS-2", [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def count(text: str) -> SegmentInfo:
    """Encoding, length and segment count of ``text``.

    An empty text is one (empty) segment: an SMS is billed per message sent, never zero.
    """
    encoding, widths = _widths(text)
    single, multi = _LIMITS[encoding]
    total = sum(widths)
    if total <= single:
        return SegmentInfo(encoding, total, 1, single)
    segments, used = 1, 0
    for width in widths:
        if used + width > multi:  # an escape or surrogate pair never straddles two segments
            segments, used = segments + 1, 0
        used += width
    return SegmentInfo(encoding, total, segments, multi)


def estimate_cost(segments: int, price_per_segment: Decimal | float | str) -> Decimal:
    """``segments`` times the price of one, exact in decimal (floats go through ``str``)."""
    price = price_per_segment if isinstance(price_per_segment, Decimal) else Decimal(
        str(price_per_segment)
    )
    if segments < 0 or price < 0:
        raise ValueError("segments and price_per_segment must not be negative")
    return segments * price


def validate_text(text: object, *, field: str = "content.text") -> SegmentInfo:
    """The segment info of an SMS body, or ``InputError`` if it can never be sent."""
    if not isinstance(text, str):
        raise InputError(field, "is required and must be a string")
    if not text.strip():
        raise InputError(field, "must not be empty")
    if "\x00" in text:
        raise InputError(field, "must not contain NUL characters")
    info = count(text)
    if info.too_long:
        raise InputError(
            field,
            f"is {info.characters} {info.encoding} characters; SMS allows at most "
            f"{MAX_CHARACTERS}",
        )
    return info
