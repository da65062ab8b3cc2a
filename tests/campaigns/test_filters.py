"""Segment filters: every operator and condition of ``pushguard/campaigns/filters.py``, run as
SQL on SQLite and on PostgreSQL against the same contacts, must select the same members; a bad
filter is refused with an InputError naming the path of the bad part."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import update

from pushguard.app import App
from pushguard.audience.models import TopicIn
from pushguard.campaigns.filters import compile_filter
from pushguard.campaigns.segments import SegmentIn, Segments
from pushguard.exceptions import InputError
from pushguard.models import NewMessage
from pushguard.store.schema import messages
from tests.campaigns.kit import add_contacts, grant, make_app

pytestmark = pytest.mark.timeout(60)


def _email(x: str) -> list[dict[str, Any]]:
    return [{"channel": "email", "address": f"{x}@example.com"}]


#: external id -> (attributes, locale, timezone, addresses)
CONTACTS: dict[str, dict[str, Any]] = {
    "a": {"attributes": {"plan": "pro", "age": 30, "score": 4.5, "vip": True,
                         "tags": ["x", "y"], "address": {"city": "Paris", "zip": "75001"},
                         "n_text": "10", "null": "yes"},
          "locale": "fr", "timezone": "Europe/Paris", "addresses": _email("a")},
    "b": {"attributes": {"plan": "free", "age": 17, "score": 2, "vip": False, "tags": ["y"],
                         "address": {"city": "Lyon"}, "n_text": "9"},
          "locale": "fr-CA", "timezone": "America/Montreal", "addresses": _email("b")},
    # the same values as a, but of other JSON types: a string age, a string "list", 1 for true
    "c": {"attributes": {"plan": "pro", "age": "30", "tags": "x", "vip": 1},
          "locale": "en", "addresses": _email("c")},
    "d": {"attributes": {}, "addresses": []},
    # a nested null, an empty list, 0 for false
    "e": {"attributes": {"age": 45, "tags": [], "vip": 0, "address": {"city": None}},
          "addresses": [{"channel": "sms", "address": "+33612345678"}]},
    "f": {"attributes": {"plan": "Pro", "age": 30.0, "tags": [1, True], "flag": True},
          "addresses": _email("f")},
    "g": {"attributes": {"tags": [1], "level": {"deep": {"er": 3}}}, "addresses": _email("g")},
}


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[App]:
    """One store per database for the module: the tests only read it (or write segments)."""
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_schema_url")
    a = make_app(tmp_path_factory.mktemp("filters"), url)
    try:
        yield a
    finally:
        a.templates.close()
        a.store.close()


@pytest.fixture(scope="module")
def people(app: App) -> dict[str, str]:
    app.audience.put_topic(TopicIn(name="news", kind="marketing"))
    app.audience.put_topic(TopicIn(name="promo", kind="marketing"))
    ids = add_contacts(app, [{"external_id": k, **v} for k, v in CONTACTS.items()])
    grant(app, [ids["a"], ids["b"]], "news", "email")
    grant(app, [ids["c"]], "news", "email", "withdrawn")
    grant(app, [ids["f"]], "news", "email", "pending")
    grant(app, [ids["a"]], "promo", "sms")
    # contact g's email address is deactivated; a's is verified
    app.audience.set_address_status(ids["g"], _address_id(app, ids["g"]), "deactivated",
                                    "bounced", None, actor="test")
    _verify(app, ids["a"])
    _history(app, ids)
    return ids


def _address_id(app: App, cid: str) -> str:
    return str(app.audience.contact(cid)["addresses"][0]["id"])


def _verify(app: App, cid: str) -> None:
    from pushguard.store.schema import contact_addresses

    with app.store._write() as conn:  # type: ignore[attr-defined]
        conn.execute(update(contact_addresses).where(contact_addresses.c.contact_id == cid)
                     .values(verified=True))


def _history(app: App, ids: dict[str, str]) -> None:
    """Messages in the contacts' past: a delivered twice lately (one news, one promo), b
    delivered 40 days ago, c failed yesterday (tried once), f suppressed (never tried)."""
    now = time.time()
    plan = [("a", "delivered", 1, 1, "news"), ("a", "delivered", 2, 1, "promo"),
            ("b", "delivered", 40, 1, "news"), ("c", "failed", 1, 1, "news"),
            ("f", "suppressed", 1, 0, "news")]
    for i, (who, state, days, tries, topic) in enumerate(plan):
        (got,) = app.store.enqueue([NewMessage("email", f"{who}@example.com", {"subject": "s",
                                                                             "text": "t"},
                                               contact_id=ids[who])], scope=f"h{i}")
        with app.store._write() as conn:  # type: ignore[attr-defined]
            conn.execute(update(messages).where(messages.c.id == got.id).values(  # type: ignore[union-attr]
                state=state, created_at=now - days * 86400 + 60, attempts=tries, topic=topic))


def members(app: App, raw: Any) -> set[str]:
    """The members by the three ways a segment is read: count, preview and the pages of the
    fan-out; all three must agree."""
    seg = Segments(app.store)  # type: ignore[arg-type]
    ids = {r.external_id for page in seg.members(raw, page=2) for r in page}
    preview = seg.preview(raw, sample=100)
    assert {s["external_id"] for s in preview["sample"]} == ids
    assert preview["count"] == seg.count(raw) == len(ids)
    return ids


CASES: list[tuple[str, dict[str, Any], set[str]]] = [
    # -- attributes: each operator ------------------------------------------------------------
    ("eq text", {"attribute": "plan", "op": "eq", "value": "pro"}, {"a", "c"}),
    ("eq is the default op", {"attribute": "plan", "value": "free"}, {"b"}),
    ("eq is case-sensitive", {"attribute": "plan", "value": "Pro"}, {"f"}),
    ("ne: present and different", {"attribute": "plan", "op": "ne", "value": "pro"},
     {"b", "f"}),
    ("in", {"attribute": "plan", "op": "in", "value": ["pro", "free"]}, {"a", "b", "c"}),
    ("not_in", {"attribute": "plan", "op": "not_in", "value": ["pro"]}, {"b", "f"}),
    ("exists", {"attribute": "plan", "op": "exists"}, {"a", "b", "c", "f"}),
    ("missing", {"attribute": "plan", "op": "missing"}, {"d", "e", "g"}),
    ("gt number: numbers only", {"attribute": "age", "op": "gt", "value": 18},
     {"a", "e", "f"}),
    ("gte", {"attribute": "age", "op": "gte", "value": 30}, {"a", "e", "f"}),
    ("lt", {"attribute": "age", "op": "lt", "value": 30}, {"b"}),
    ("lte float", {"attribute": "score", "op": "lte", "value": 2.0}, {"b"}),
    ("gte float vs int", {"attribute": "score", "op": "gte", "value": 2}, {"a", "b"}),
    ("gt text compares text only", {"attribute": "age", "op": "gt", "value": "2"}, {"c"}),
    ("a number against text attributes matches none (and does not error)",
     {"attribute": "n_text", "op": "lt", "value": 5}, set()),
    ("text against number attributes", {"attribute": "score", "op": "gt", "value": "1"},
     set()),
    ("eq number: 30 == 30.0, not '30'", {"attribute": "age", "value": 30}, {"a", "f"}),
    ("eq true", {"attribute": "vip", "value": True}, {"a"}),
    ("eq false", {"attribute": "vip", "value": False}, {"b"}),
    ("eq 1 is not true", {"attribute": "vip", "value": 1}, {"c"}),
    ("in with a bool", {"attribute": "vip", "op": "in", "value": [True, 0]}, {"a", "e"}),
    ("ne false", {"attribute": "vip", "op": "ne", "value": False}, {"a", "c", "e"}),
    ("has text", {"attribute": "tags", "op": "has", "value": "x"}, {"a"}),
    ("has: a string attribute is not a list", {"attribute": "tags", "op": "has",
                                               "value": "y"}, {"a", "b"}),
    ("has number", {"attribute": "tags", "op": "has", "value": 1}, {"f", "g"}),
    ("has true is not has 1", {"attribute": "tags", "op": "has", "value": True}, {"f"}),
    ("eq text is not a list's JSON", {"attribute": "tags", "value": '["y"]'}, set()),
    # -- nested paths ---------------------------------------------------------------------------
    ("nested eq", {"attribute": "address.city", "value": "Paris"}, {"a"}),
    ("nested exists", {"attribute": "address.zip", "op": "exists"}, {"a"}),
    ("deep nested", {"attribute": "level.deep.er", "op": "gte", "value": 3}, {"g"}),
    # a JSON null is a value (it exists), and it is not "Paris"
    ("nested ne: a null is not Paris",
     {"attribute": "address.city", "op": "ne", "value": "Paris"}, {"b", "e"}),
    ("nested not_in: a null is not in the list", {"attribute": "address.city", "op": "not_in",
                                                  "value": ["Paris"]}, {"b", "e"}),
    ("nested exists: a null exists", {"attribute": "address.city", "op": "exists"},
     {"a", "b", "e"}),
    ("a path through a list is not an index", {"attribute": "tags.0", "op": "exists"},
     set()),
    ("a key named null", {"attribute": "null", "op": "exists"}, {"a"}),
    # -- contact fields -------------------------------------------------------------------------
    ("field eq", {"field": "locale", "value": "fr"}, {"a"}),
    ("field in", {"field": "locale", "op": "in", "value": ["fr", "fr-CA"]}, {"a", "b"}),
    ("field not_in", {"field": "locale", "op": "not_in", "value": ["fr"]}, {"b", "c"}),
    ("field ne", {"field": "locale", "op": "ne", "value": "fr"}, {"b", "c"}),
    ("field missing", {"field": "timezone", "op": "missing"}, {"c", "d", "e", "f", "g"}),
    ("field exists", {"field": "timezone", "op": "exists"}, {"a", "b"}),
    ("field external_id gte", {"field": "external_id", "op": "gte", "value": "f"},
     {"f", "g"}),
    ("text order is byte order, not the database's collation",
     {"attribute": "plan", "op": "lt", "value": "a"}, {"f"}),
    # -- consent ----------------------------------------------------------------------------------
    ("consent granted (default)", {"consent": {"topic": "news"}}, {"a", "b"}),
    ("consent on a channel", {"consent": {"topic": "news", "channel": "email",
                                          "status": "granted"}}, {"a", "b"}),
    ("consent withdrawn", {"consent": {"topic": "news", "status": "withdrawn"}}, {"c"}),
    ("consent pending", {"consent": {"topic": "news", "status": "pending"}}, {"f"}),
    ("consent none", {"consent": {"topic": "news", "status": "none"}}, {"d", "e", "g"}),
    ("consent on another channel", {"consent": {"topic": "promo", "channel": "sms"}}, {"a"}),
    ("consent, the channel matters", {"consent": {"topic": "promo", "channel": "email"}},
     set()),
    # -- addresses ------------------------------------------------------------------------------
    ("address active (default)", {"address": {"channel": "email"}}, {"a", "b", "c", "f"}),
    ("address deactivated", {"address": {"channel": "email", "status": "deactivated"}},
     {"g"}),
    ("address none: no active one", {"address": {"channel": "email", "status": "none"}},
     {"d", "e", "g"}),
    ("address verified", {"address": {"channel": "email", "verified": True}}, {"a"}),
    ("address unverified", {"address": {"channel": "email", "verified": False}},
     {"b", "c", "f"}),
    ("address sms", {"address": {"channel": "sms"}}, {"e"}),
    # -- engagement -----------------------------------------------------------------------------
    ("delivered lately", {"engagement": {"within_days": 30}}, {"a"}),
    ("delivered within 60 days", {"engagement": {"within_days": 60}}, {"a", "b"}),
    ("delivered at least twice", {"engagement": {"within_days": 30, "min": 2}}, {"a"}),
    ("delivered at least three times", {"engagement": {"within_days": 30, "min": 3}}, set()),
    ("delivered on a topic", {"engagement": {"within_days": 30, "topic": "promo"}}, {"a"}),
    ("delivered on a channel", {"engagement": {"within_days": 30, "channel": "sms"}}, set()),
    ("failed", {"engagement": {"state": "failed", "within_days": 7}}, {"c"}),
    ("suppressed", {"engagement": {"state": "suppressed", "within_days": 7}}, {"f"}),
    ("sent: tried at least once", {"engagement": {"state": "sent", "within_days": 7}},
     {"a", "c"}),
    # -- combinations ---------------------------------------------------------------------------
    ("all", {"all": [{"attribute": "plan", "value": "pro"},
                     {"consent": {"topic": "news"}}]}, {"a"}),
    ("any", {"any": [{"field": "locale", "value": "en"}, {"attribute": "age", "op": "gt",
                                                            "value": 40}]}, {"c", "e"}),
    ("not", {"not": {"attribute": "plan", "op": "exists"}}, {"d", "e", "g"}),
    ("not ne keeps the missing", {"not": {"attribute": "plan", "op": "ne", "value": "pro"}},
     {"a", "c", "d", "e", "g"}),
    ("nested groups", {"all": [{"any": [{"attribute": "plan", "value": "pro"},
                                        {"attribute": "plan", "value": "free"}]},
                               {"not": {"consent": {"topic": "news", "status": "withdrawn"}}},
                               {"address": {"channel": "email"}}]}, {"a", "b"}),
    ("empty filter: everyone", {}, set(CONTACTS)),
]


@pytest.mark.parametrize(("raw", "expected"), [pytest.param(raw, exp, id=name)
                                               for name, raw, exp in CASES])
def test_filter_selects_the_same_members_on_every_database(
        app: App, people: dict[str, str], raw: dict[str, Any], expected: set[str]) -> None:
    assert members(app, raw) == expected


def test_a_segment_is_stored_and_read_back(app: App, people: dict[str, str]) -> None:
    seg = Segments(app.store)  # type: ignore[arg-type]
    f = {"all": [{"attribute": "plan", "value": "pro"}, {"consent": {"topic": "news"}}]}
    made = seg.put(SegmentIn(name="pros", filter=f))
    assert seg.get("pros")["filter"] == f == seg.get(made["id"])["filter"]
    assert seg.filter_of("pros", None) == f
    assert members(app, seg.get("pros")["filter"]) == {"a"}
    seg.put(SegmentIn(name="pros", filter={"attribute": "plan", "value": "free"}))
    assert [s["name"] for s in seg.list_all()].count("pros") == 1
    assert members(app, seg.get("pros")["filter"]) == {"b"}
    with pytest.raises(InputError) as bad:
        seg.filter_of("pros", {"field": "locale", "value": "fr"})
    assert bad.value.field == "segment"
    with pytest.raises(InputError) as missing:
        seg.filter_of("nope", None)
    assert missing.value.field == "segment"


BAD: list[tuple[Any, str]] = [
    ([], "filter"),
    ({"all": [{"attribute": "plan", "value": "pro"}, {"attribute": "plan", "op": "like",
                                                       "value": "p%"}]}, "filter.all[1].op"),
    ({"any": []}, "filter.any"),
    ({"all": {"attribute": "plan"}}, "filter.all"),
    ({"not": {"attribute": "x", "op": "exists", "value": 1}}, "filter.not.value"),
    ({"attribute": "plan", "op": "in", "value": "pro"}, "filter.value"),
    ({"attribute": "plan", "op": "in", "value": []}, "filter.value"),
    ({"attribute": "plan", "op": "in", "value": [{"a": 1}]}, "filter.value"),
    ({"attribute": "plan", "op": "not_in", "value": [["pro"]]}, "filter.value"),
    ({"attribute": "plan", "op": "eq"}, "filter.value"),
    ({"attribute": "plan", "op": "eq", "value": None}, "filter.value"),
    ({"attribute": "plan", "op": "eq", "value": {"a": 1}}, "filter.value"),
    ({"attribute": "age", "op": "gt", "value": True}, "filter.value"),
    ({"attribute": "age", "op": "gt", "value": 2 ** 70}, "filter.value"),
    ({"attribute": "a b"}, "filter.attribute"),
    ({"attribute": "a..b", "op": "exists"}, "filter.attribute"),
    ({"attribute": "a\"); DROP TABLE contacts; --", "op": "exists"}, "filter.attribute"),
    ({"attribute": 3, "op": "exists"}, "filter.attribute"),
    ({"attribute": "plan", "value": "x", "extra": 1}, "filter.extra"),
    ({"field": "email", "value": "x"}, "filter.field"),
    ({"field": "locale", "op": "has", "value": "x"}, "filter.op"),
    ({"all": [{"consent": {"channel": "email"}}]}, "filter.all[0].consent.topic"),
    ({"consent": {"topic": "news", "status": "maybe"}}, "filter.consent.status"),
    ({"consent": {"topic": "news", "channel": "pigeon"}}, "filter.consent.channel"),
    ({"consent": "news"}, "filter.consent"),
    ({"address": {"channel": "pigeon"}}, "filter.address.channel"),
    ({"address": {"channel": ["email"]}}, "filter.address.channel"),
    ({"address": {"channel": {"email": 1}}}, "filter.address.channel"),
    ({"engagement": {"within_days": 7, "min": 2 ** 70}}, "filter.engagement.min"),
    ({"attribute": "age", "op": "gt", "value": float("nan")}, "filter.value"),
    ({"attribute": "age", "op": ["eq"], "value": 1}, "filter.op"),
    ({"address": {"channel": "email", "status": "gone"}}, "filter.address.status"),
    ({"address": {"channel": "email", "verified": "yes"}}, "filter.address.verified"),
    ({"engagement": {"state": "delivered"}}, "filter.engagement.within_days"),
    ({"engagement": {"within_days": 0}}, "filter.engagement.within_days"),
    ({"engagement": {"within_days": 7, "min": -1}}, "filter.engagement.min"),
    ({"engagement": {"within_days": 7, "state": "opened"}}, "filter.engagement.state"),
    ({"hello": 1}, "filter"),
    ({"all": [{"attribute": "a", "op": "exists"}], "any": [{"attribute": "b"}]}, "filter.any"),
]


@pytest.mark.parametrize(("raw", "where"), BAD, ids=[w + f"#{i}" for i, (_, w) in
                                                      enumerate(BAD)])
def test_a_bad_filter_is_refused_naming_the_path(app: App, people: dict[str, str], raw: Any,
                                                where: str) -> None:
    seg = Segments(app.store)  # type: ignore[arg-type]
    with pytest.raises(InputError) as bad:
        seg.count(raw)
    assert bad.value.field == where, bad.value
    with pytest.raises(InputError):
        seg.put(SegmentIn(name="bad", filter=raw if isinstance(raw, dict) else {"x": raw}))
    assert "bad" not in [s["name"] for s in seg.list_all()]


def test_deep_or_huge_filters_are_refused() -> None:
    deep: dict[str, Any] = {"attribute": "a", "op": "exists"}
    for _ in range(10):
        deep = {"not": deep}
    with pytest.raises(InputError, match="deeper"):
        compile_filter(deep, "sqlite")
    wide = {"any": [{"attribute": f"k{i}", "op": "exists"} for i in range(60)]}
    with pytest.raises(InputError, match="more than"):
        compile_filter(wide, "postgresql")


def test_values_are_bound_never_spliced() -> None:
    evil = "x'); DROP TABLE contacts; --"
    for dialect in ("sqlite", "postgresql"):
        c = compile_filter({"all": [{"attribute": "plan", "value": evil},
                                    {"field": "locale", "op": "in", "value": [evil]},
                                    {"consent": {"topic": evil}}]}, dialect)
        assert evil not in c.sql and "DROP" not in c.sql
        assert evil in json.dumps(c.params)
