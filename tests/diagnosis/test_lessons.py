"""Lessons: operators' notes on a cause, a provider or a template, validated, audited, and shown
beside every later failure of the same kind (message, contact and campaign stories, failures)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from pushguard.diagnosis.failures import failures_report, filters_for
from pushguard.diagnosis.lessons import MAX_NOTE_BYTES, Lessons
from pushguard.diagnosis.timespan import window
from pushguard.exceptions import InputError, NotFound
from pushguard.explain import as_text, explain
from pushguard.store.schema import audit_log
from pushguard.store.sql import SQLStore
from tests.diagnosis.test_why_contact import Desk, cli_for

NOTE = "FCM returns UNREGISTERED after app 4.2 updates.\r\nAsk users to reopen the app."


def test_add_find_remove_and_audit(store: SQLStore) -> None:
    lessons = Lessons(store)
    first = lessons.add("cause", "UNREGISTERED_TOKEN", NOTE, author="ops:ann")
    second = lessons.add("provider", "texter", "Texter rate-limits at 30/s", author="ops:bo")
    lessons.add("template", "welcome", "Keep the subject under 60 characters", author="x")
    assert first.note == NOTE and first.id.startswith("lsn_")
    assert [le.id for le in lessons.find(kind="provider", subject="texter")] == [second.id]
    assert len(lessons.find()) == 3
    found = lessons.about([("cause", "UNREGISTERED_TOKEN"), ("provider", "texter"),
                           ("provider", "other")])
    assert set(found) == {("cause", "UNREGISTERED_TOKEN"), ("provider", "texter")}
    gone = lessons.remove(first.id, actor="ops:cy")
    assert gone.note == NOTE and lessons.find(kind="cause", subject="UNREGISTERED_TOKEN") == []
    with pytest.raises(NotFound):
        lessons.remove(first.id, actor="ops:cy")
    with store._read() as conn:
        actions = [(r.actor, r.action) for r in conn.execute(
            select(audit_log).order_by(audit_log.c.id))]
    assert ("ops:ann", "lesson.added") in actions and ("ops:cy", "lesson.removed") in actions


@pytest.mark.parametrize(("kind", "subject", "note", "field", "problem"), [
    ("cause", "TOKEN_INVALID", "x", "cause", "unknown cause 'TOKEN_INVALID'; one of: "),
    ("cause", "UNREGISTERED_TOKEN", "  \r\n ", "note", "must not be empty"),
    ("cause", "UNREGISTERED_TOKEN", "é" * (MAX_NOTE_BYTES // 2 + 1), "note", "at most 4096"),
    ("cause", "UNREGISTERED_TOKEN", "bell\x07", "note", "control characters"),
    ("provider", "bad name", "x", "provider", "is not a provider name"),
    ("template", "", "x", "template", "is not a template name"),
    ("colour", "red", "x", "kind", "one of: cause, provider, template"),
])
def test_bad_lessons_are_refused_naming_the_field(store: SQLStore, kind: str, subject: str,
                                                  note: str, field: str, problem: str) -> None:
    with pytest.raises(InputError) as err:
        Lessons(store).add(kind, subject, note, author="ops")
    assert err.value.field == field and problem in err.value.problem
    assert Lessons(store).find() == []


def test_lessons_show_beside_later_failures(store: SQLStore) -> None:
    desk = Desk(store, script={"gone@example.com": ["UNREGISTERED_TOKEN"]})
    lessons = Lessons(store)
    lessons.add("cause", "UNREGISTERED_TOKEN", NOTE, author="ops")
    lessons.add("provider", "mailer", "mailer's sandbox drops tokens on Mondays", author="ops")
    lessons.add("template", "welcome", "welcome v3 had a broken link", author="ops")
    lessons.add("cause", "RATE_LIMITED", "not this one", author="ops")
    (failed,) = desk.send("gone@example.com", template="welcome")
    (fine,) = desk.send("ok@example.com", template="welcome")
    desk.deliver()
    view = store.get(failed)
    assert view is not None
    notes = [le.note for le in lessons.for_message(view)]
    assert sorted(notes) == sorted([NOTE, "mailer's sandbox drops tokens on Mondays",
                                    "welcome v3 had a broken link"])
    clean = store.get(fine)
    assert clean is not None and lessons.for_message(clean) == []
    text = as_text(explain(view, [le.as_dict() for le in lessons.for_message(view)]))
    assert "Lessons from earlier failures of this kind:" in text
    assert "[cause UNREGISTERED_TOKEN] ops, " in text and "    Ask users to reopen" in text
    r = failures_report(store, filters_for(store, window(None, None)), ["provider",
                                                                         "template"])
    (top,) = r["top_causes"]
    assert [le["subject"] for le in top["lessons"]] == ["UNREGISTERED_TOKEN", "mailer"]
    (group,) = [g for g in r["groups"] if g["failed"]]
    assert {le["subject"] for le in group["lessons"]} == {"mailer", "welcome"}


def test_lessons_over_http(store: SQLStore) -> None:
    desk = Desk(store, script={"gone@example.com": ["UNREGISTERED_TOKEN"]})
    (failed,) = desk.send("gone@example.com")
    desk.deliver()
    with desk.http() as http:
        bad = http.post("/v1/lessons", json={"cause": "TOKEN_INVALID", "note": "x"})
        assert bad.status_code == 422
        (f,) = bad.json()["error"]["fields"]
        assert f["field"] == "cause" and "UNREGISTERED_TOKEN" in f["problem"]
        for body in ({"cause": "UNREGISTERED_TOKEN", "provider": "mailer", "note": "x"},
                     {"note": "about nothing"}, {"cause": "UNREGISTERED_TOKEN", "note": ""},
                     {"cause": "UNREGISTERED_TOKEN", "note": "x" * (MAX_NOTE_BYTES + 1)}):
            assert http.post("/v1/lessons", json=body).status_code == 422, body
        r = http.post("/v1/lessons", json={"cause": "UNREGISTERED_TOKEN", "note": NOTE})
        assert r.status_code == 201, r.text
        lesson = r.json()
        assert lesson["note"] == NOTE and lesson["author"].startswith("tests (key:key_")
        listed = http.get("/v1/lessons", params={"cause": "UNREGISTERED_TOKEN"}).json()
        assert [le["id"] for le in listed["lessons"]] == [lesson["id"]]
        assert http.get("/v1/lessons", params={"provider": "texter"}).json()["lessons"] == []
        story = http.get(f"/v1/messages/{failed}/explain").json()
        assert [le["id"] for le in story["lessons"]] == [lesson["id"]]
        assert story["cause"] == "UNREGISTERED_TOKEN"
        assert http.delete(f"/v1/lessons/{lesson['id']}").status_code == 200
        assert http.delete(f"/v1/lessons/{lesson['id']}").status_code == 404
        assert http.get(f"/v1/messages/{failed}/explain").json()["lessons"] == []
        assert http.get("/v1/messages/msg_nope/explain").status_code == 404


def test_lessons_through_the_cli(sqlite_url: str, tmp_path: Path) -> None:
    store = SQLStore(sqlite_url)
    store.migrate()
    desk = Desk(store, script={"gone@example.com": ["UNREGISTERED_TOKEN"]})
    (failed,) = desk.send("gone@example.com")
    desk.deliver()
    store.close()
    cli = cli_for(sqlite_url, tmp_path)
    added = cli("lessons", "add", "--cause", "UNREGISTERED_TOKEN", "--actor", "ops:ann",
                "line one\nline two").stdout
    lesson_id = added.split()[1]
    assert lesson_id.startswith("lsn_")
    why = cli("why", failed).stdout
    assert "[cause UNREGISTERED_TOKEN] ops:ann" in why and "line two" in why
    listed = json.loads(cli("lessons", "list", "--json").stdout)["lessons"]
    assert [(le["id"], le["note"], le["author"]) for le in listed] == [
        (lesson_id, "line one\nline two", "ops:ann")]
    bad = cli("lessons", "add", "--cause", "TOKEN_INVALID", "x", check=False)
    assert bad.returncode == 1 and "error: cause: unknown cause 'TOKEN_INVALID'" in bad.stderr
    assert "removed" in cli("lessons", "remove", lesson_id).stdout
    again = cli("lessons", "remove", lesson_id, check=False)
    assert again.returncode == 1 and "no lesson" in again.stderr
