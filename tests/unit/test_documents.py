"""What the store cannot hold in a JSON document (a lone UTF-16 surrogate, nesting past 64
levels), judged twice: :func:`suspect` from the bytes alone, in C, so that a body costs
little more than its parse whatever it holds; :func:`find_problem` from the parsed value,
naming the field. A body ``suspect`` passes must never hold a problem."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pushguard.documents import MAX_DEPTH, find_problem, parse, suspect
from pushguard.exceptions import InputError


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": [1]}
    for _ in range(levels - 2):
        value = {"a": value}
    return value  # ``levels`` containers, counting the innermost list


@pytest.mark.parametrize("levels", range(MAX_DEPTH - 3, MAX_DEPTH + 4))
def test_bytes_and_value_agree_on_depth(levels: int) -> None:
    doc = nested(levels)
    raw = json.dumps(doc).encode()
    found = find_problem(doc)
    assert suspect(raw) == (found is not None) == (levels > MAX_DEPTH)
    if found is not None:
        assert found == ("a", f"is nested deeper than {MAX_DEPTH} levels")


@pytest.mark.parametrize("raw", [
    b'{"note": "\\ud83d\\ude00 and \\u00e9"}',                   # an escaped pair is text
    '{"note": "\U0001f600 caf\u00e9"}'.encode(),                # raw UTF-8
    b'{"s": "' + b"[" * 500 + b'{{{{", "t": "\\\\"}',           # brackets inside strings
    b'[' * 63 + b'"' + b'[' * 70 + b'",' + b"0," * 10_000 + b"0" + b']' * 63,
    json.dumps({"messages": [{"content": {"n": i, "tags": ["a", ["b"]]}}
                             for i in range(1000)]}).encode(),
])
def test_clean_bodies_are_not_suspect(raw: bytes) -> None:
    assert not suspect(raw)
    assert find_problem(json.loads(raw)) is None


@pytest.mark.parametrize(("raw", "field"), [
    (b'{"a": {"b": "x\\ud800"}}', "a.b"),                       # a high one alone
    (b'{"a": ["ok", "\\uDC00y"]}', "a[1]"),                      # a low one alone
    (b'{"a": "\\ud83d\\u0041"}', "a"),                           # a high one, then no low one
    (b'{"a": "\\ude00\\ud83d"}', "a"),                           # a pair the wrong way round
    ('{"a": {"b": "\ud800"}}'.encode("utf-8", "surrogatepass"), "a.b"),  # raw CESU-8 bytes
    ('{"k\udfff": 1}'.encode("utf-16", "surrogatepass"), "body"),  # UTF-16, a bad key
])
def test_lone_surrogates_are_found_and_named(raw: bytes, field: str) -> None:
    assert suspect(raw)
    found = find_problem(json.loads(raw))
    assert found is not None and found[0] == field and "surrogate" in found[1]


def test_an_escaped_backslash_before_u_is_text() -> None:
    raw = b'{"path": "C:\\\\ud800"}'  # a backslash, then the letters "ud800"
    assert json.loads(raw)["path"] == "C:\\ud800"
    assert find_problem(json.loads(raw)) is None  # suspect may say yes; the walk says no


def test_a_wide_document_is_walked_to_its_end() -> None:
    doc = {"rows": [{"i": i, "v": [i, {"w": "x"}]} for i in range(20_000)]}
    doc["rows"][-1]["v"][1]["w"] = "\udfff"
    assert find_problem(doc) == ("rows[19999].v[1].w", find_problem("\udfff")[1])  # type: ignore[index]


def test_parse_names_the_option_and_the_field() -> None:
    with pytest.raises(InputError) as bad:
        parse('{"plan": "\\ud800"}', "--attributes")
    assert bad.value.field == "--attributes.plan"
    with pytest.raises(InputError) as deep:
        parse("[" * 100_000 + "]" * 100_000, "--filter")
    assert deep.value.field == "--filter" and "too deep" in deep.value.problem
    with pytest.raises(InputError) as latin:
        parse(b'{"a": "caf\xe9"}', "body")
    assert "not valid JSON" in latin.value.problem
    assert parse('{"a": [1, "\\ud83d\\ude00"]}', "x") == {"a": [1, "\U0001f600"]}


def test_the_walk_stops_at_its_budget() -> None:
    """A body is parsed before its API key is checked, so no body may cost a long walk: past
    ``max_values`` values the document is refused as too large, wherever its problem is."""
    doc = [0] * 1000 + ["\udfff"]
    assert find_problem(doc, max_values=1000) == ("body", "holds more than 1,000 values")
    assert find_problem(doc, max_values=1001) == ("[1000]", find_problem("\udfff")[1])  # type: ignore[index]


def test_bytes_and_value_agree_on_random_documents() -> None:
    """Strings full of brackets, quotes and backslashes, keys too, at every depth: the bytes'
    verdict on nesting is the walk's, with a small limit so that both answers occur."""
    import random

    rng = random.Random(7)

    def doc(depth: int) -> Any:
        if depth > 9 or rng.random() < 0.3:
            return rng.choice(["a", "[", "]]", "{x}", '"q"', "\\", '\\"[', 1, None, ""])
        if rng.random() < 0.5:
            return [doc(depth + 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice(["k", "[k", "}", '"']) + str(i): doc(depth + 1)
                for i in range(rng.randint(0, 3))}

    seen = set()
    for _ in range(3000):
        value = doc(0)
        deep = find_problem(value, max_depth=5) is not None
        assert suspect(json.dumps(value).encode(), max_depth=5) == deep, value
        seen.add(deep)
    assert seen == {True, False}


def test_a_choice_names_the_fields_own_choices() -> None:
    """Every refused choice said "must be one of: high, normal, bulk", the priorities,
    whatever the field: a consent source, a topic kind."""
    from typing import Literal

    from pydantic import BaseModel, ValidationError

    from pushguard.intake import pydantic_problems

    class Body(BaseModel):
        source: Literal["form", "api", "import", "admin"]
        n: Literal[1, 2]

    with pytest.raises(ValidationError) as info:
        Body.model_validate({"source": "bogus", "n": 3})
    assert [(p.field, p.problem) for p in pydantic_problems(info.value)] == [
        ("source", "must be one of: form, api, import, admin"),
        ("n", "must be one of: 1, 2")]
