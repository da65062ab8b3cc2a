"""SMS segment counting (GSM-7 / UCS-2) and cost estimates, per FAILURES.md §1.5."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pushguard.exceptions import InputError
from pushguard.sms_segments import (
    GSM7_BASIC,
    GSM7_EXTENDED,
    MAX_CHARACTERS,
    SegmentInfo,
    count,
    estimate_cost,
    validate_text,
)

EMOJI = "\U0001f600"  # outside the BMP: two UTF-16 code units


def test_alphabet_sizes() -> None:
    # 128 GSM 03.38 code points less the escape; the extension table's printable entries.
    assert len(GSM7_BASIC) == 127
    assert frozenset("\f^{}\\[~]|€") == GSM7_EXTENDED
    assert not GSM7_BASIC & GSM7_EXTENDED


@pytest.mark.parametrize(
    ("length", "segments", "per_segment"),
    [
        (1, 1, 160),
        (160, 1, 160),
        (161, 2, 153),
        (153 * 2, 2, 153),
        (153 * 2 + 1, 3, 153),
        (153 * 3, 3, 153),
        (153 * 3 + 1, 4, 153),
        (1600, 11, 153),
    ],
)
def test_gsm7_boundaries(length: int, segments: int, per_segment: int) -> None:
    assert count("a" * length) == SegmentInfo("GSM-7", length, segments, per_segment)


@pytest.mark.parametrize(
    ("length", "segments", "per_segment"),
    [
        (1, 1, 70),
        (70, 1, 70),
        (71, 2, 67),
        (67 * 2, 2, 67),
        (67 * 2 + 1, 3, 67),
        (67 * 3, 3, 67),
        (1600, 24, 67),
    ],
)
def test_ucs2_boundaries(length: int, segments: int, per_segment: int) -> None:
    assert count("ж" * length) == SegmentInfo("UCS-2", length, segments, per_segment)


def test_one_emoji_turns_160_gsm_characters_into_three_ucs2_segments() -> None:
    assert count("a" * 160).segments == 1
    info = count("a" * 160 + EMOJI)
    assert info == SegmentInfo("UCS-2", 162, 3, 67)
    assert count("a" * 159 + EMOJI).segments == 3


def test_emoji_counts_two_code_units() -> None:
    assert count(EMOJI).characters == 2
    assert count(EMOJI * 35) == SegmentInfo("UCS-2", 70, 1, 70)
    assert count(EMOJI * 36) == SegmentInfo("UCS-2", 72, 2, 67)


def test_surrogate_pair_never_straddles_two_segments() -> None:
    # 66 units, then an emoji that would need units 67 and 68: it moves to segment 2.
    text = "ж" * 66 + EMOJI + "ж" * 66
    assert count(text).characters == 134  # exactly 2 * 67 if the pair could be split
    assert count(text).segments == 3


@pytest.mark.parametrize("ch", sorted(GSM7_EXTENDED))
def test_extended_characters_count_two_septets(ch: str) -> None:
    info = count(ch)
    assert (info.encoding, info.characters) == ("GSM-7", 2)


def test_extended_boundaries() -> None:
    assert count("€" * 80) == SegmentInfo("GSM-7", 160, 1, 160)
    assert count("a" * 159 + "{") == SegmentInfo("GSM-7", 161, 2, 153)
    # 76 euro signs fill 152 septets; the 77th (2 septets) cannot be split across segments.
    assert count("€" * 81).segments == 2
    assert count("€" * 153).segments == 3  # 306 septets, but 76 + 76 + 1 per segment


def test_escape_pair_never_straddles_two_segments() -> None:
    text = "a" * 152 + "{" + "a" * 152
    assert count(text).characters == 306  # exactly 2 * 153 if the pair could be split
    assert count(text).segments == 3


def test_gsm_basic_specials_stay_gsm() -> None:
    text = "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà\r\n"
    info = count(text)
    assert (info.encoding, info.characters) == ("GSM-7", len(text))


@pytest.mark.parametrize("ch", ["ê", "ç", "“", "’", "α", "中", "\t"])
def test_non_gsm_character_switches_the_whole_text_to_ucs2(ch: str) -> None:
    info = count("a" * 69 + ch)
    assert (info.encoding, info.characters, info.segments) == ("UCS-2", 70, 1)
    assert count("a" * 70 + ch).segments == 2


def test_empty_text_is_one_segment() -> None:
    assert count("") == SegmentInfo("GSM-7", 0, 1, 160)


def test_too_long() -> None:
    assert not count("a" * MAX_CHARACTERS).too_long
    assert count("a" * (MAX_CHARACTERS + 1)).too_long
    assert count("€" * 801).too_long  # 1602 septets
    assert count(EMOJI * 801).too_long  # 1602 code units
    assert not count("ж" * 1600).too_long


def test_estimate_cost() -> None:
    assert estimate_cost(2, 0.0079) == Decimal("0.0158")
    assert estimate_cost(3, "0.0079") == Decimal("0.0237")
    assert estimate_cost(11, Decimal("0.01")) == Decimal("0.11")
    assert estimate_cost(0, 0.0079) == 0
    assert f"${estimate_cost(count('ж' * 71).segments, 0.0079)}" == "$0.0158"
    with pytest.raises(ValueError):
        estimate_cost(-1, 0.0079)
    with pytest.raises(ValueError):
        estimate_cost(1, -0.01)


def test_validate_text_accepts_and_reports_segments() -> None:
    assert validate_text("hello").segments == 1
    assert validate_text("ж" * 1600).segments == 24


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (None, "required"),
        (42, "required"),
        ("", "empty"),
        ("  \n", "empty"),
        ("a\x00b", "NUL"),
        ("a" * 1601, "at most 1600"),
        ("{" * 801, "at most 1600"),
    ],
)
def test_validate_text_refuses(text: object, problem: str) -> None:
    with pytest.raises(InputError) as info:
        validate_text(text)
    assert info.value.field == "content.text"
    assert problem in info.value.problem
