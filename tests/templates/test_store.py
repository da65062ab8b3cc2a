"""The template tables on SQLite and PostgreSQL: names, versions, current per locale, and the
contacts lint samples."""

from __future__ import annotations

import time

import pytest

from pushguard.audience.service import Audience, ConsentRecord
from pushguard.exceptions import InputError, NotFound
from pushguard.store.sql import SQLStore
from pushguard.templates import store as store_mod
from pushguard.templates.store import TemplateStore
from tests.templates.conftest import add_contacts, add_topic


def make(ts: TemplateStore, name: str = "t") -> str:
    t, v = ts.create(name=name, kind="message", channel="sms", topic=None, layout=None,
                     locale="default", content={"text": "v1"}, actor="me")
    assert v.version == 1 and t.name == name
    return t.id


def test_names_are_unique_and_refs_are_id_or_name(store: SQLStore) -> None:
    ts = TemplateStore(store)
    tid = make(ts)
    assert ts.find(tid) == ts.find("t")
    with pytest.raises(InputError) as caught:
        make(ts)
    assert caught.value.field == "name"
    with pytest.raises(NotFound):
        ts.find("nope")
    with pytest.raises(NotFound):
        ts.add_version("tpl_nope", locale="default", content={}, actor="me")


def test_current_is_the_newest_version_per_locale(store: SQLStore) -> None:
    ts = TemplateStore(store)
    tid = make(ts)
    other = make(ts, "u")
    for locale, text in (("fr", "fr1"), ("default", "v2"), ("fr", "fr2"), ("fr-CA", "qc")):
        ts.add_version(tid, locale=locale, content={"text": text}, actor="me")
    current = ts.current([tid, other])
    assert {loc: (v.version, v.content["text"]) for loc, v in current[tid].items()} == {
        "default": (3, "v2"), "fr": (4, "fr2"), "fr-CA": (5, "qc")}
    assert list(current[other]) == ["default"]
    assert ts.pick(tid, "fr-BE").content["text"] == "fr2"
    assert ts.pick(tid, "fr_ca").content["text"] == "qc"
    assert ts.pick(tid, "ja").content["text"] == "v2"
    assert ts.version(tid, 1).content == {"text": "v1"}
    assert [v.created_by for v in ts.versions(tid)] == ["me"] * 5


def test_saves_are_audited(store: SQLStore, audience: Audience) -> None:
    ts = TemplateStore(store)
    tid = make(ts)
    ts.add_version(tid, locale="fr", content={"text": "x"}, actor="key:k1")
    log = audience.audit(subject=f"template:{tid}")
    assert {(e["action"], e["actor"]) for e in log} == {("template.created", "me"),
                                                        ("template.version_added", "key:k1")}


def test_samples_prefer_contacts_who_consented_to_the_topic(store: SQLStore,
                                                            audience: Audience) -> None:
    add_topic(audience, "news", "marketing")
    add_contacts(audience, *({"external_id": f"c{i}", "attributes": {"i": i}}
                             for i in range(12)))
    ts = TemplateStore(store)
    assert len(ts.sample_contacts(5)) == 5
    assert len({c["external_id"] for c in ts.sample_contacts(50)}) == 12
    fan = audience.resolve("c3")
    audience.record_consent([ConsentRecord(fan, "news", "email", "granted", "form",
                                           time.time())])
    got = ts.sample_contacts(5, topic="news")
    assert [c["external_id"] for c in got] == ["c3"]
    assert got[0]["attributes"] == {"i": 3} and set(got[0]) == {
        "id", "external_id", "attributes", "locale", "timezone"}
    assert len(ts.sample_contacts(5, topic="other")) == 5


def test_samples_of_a_big_table_read_runs_from_random_points(
        store: SQLStore, audience: Audience, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(30):
        add_contacts(audience, {"external_id": f"c{i:02}"})
        time.sleep(0.002)  # ids carry their creation time
    monkeypatch.setattr(store_mod, "SMALL_TABLE", 5)
    ts = TemplateStore(store)
    seen: set[str] = set()
    for _ in range(10):
        got = [c["external_id"] for c in ts.sample_contacts(6)]
        assert len(got) == len(set(got)) and 1 <= len(got) <= 6
        seen |= set(got)
    assert len(seen) > 12  # not always the same run
