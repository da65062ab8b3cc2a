"""Lessons: what operators learned about a kind of failure, shown beside the next one.

A lesson is attached to a taxonomy cause (``UNREGISTERED_TOKEN``), a provider name or a
template name. Whoever diagnoses a failure later (``pushguard why``, the recipient and campaign
stories, ``pushguard failures``) sees every note on its cause, its provider and its template,
so the second person to meet a problem starts where the first one finished.

Notes are operator-written free text: CR and LF are kept (a note may be a short checklist),
other control characters are refused, and the size is bounded so a note stays a note.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, delete, insert, or_, select

from pushguard import taxonomy
from pushguard.exceptions import InputError, NotFound
from pushguard.models import new_id
from pushguard.store.schema import api_keys, lessons
from pushguard.store.sql import audit
from pushguard.views import rfc3339

if TYPE_CHECKING:
    from pushguard.models import MessageView
    from pushguard.store.sql import SQLStore

KINDS = ("cause", "provider", "template")
MAX_NOTE_BYTES = 4096
#: lessons shown per subject: the newest, so a long history does not drown the output
SHOWN = 5
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/+-]{0,127}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

Subject = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Lesson:
    id: str
    kind: str
    subject: str
    note: str
    author: str
    created_at: float

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "subject": self.subject, "note": self.note,
                "author": self.author, "created_at": rfc3339(self.created_at)}


def checked_subject(kind: str, subject: str) -> Subject:
    """``(kind, subject)`` after validation; InputError names the field (``cause``...)."""
    if kind not in KINDS:
        raise InputError("kind", f"one of: {', '.join(KINDS)}")
    subject = subject.strip()
    if kind == "cause":
        if subject not in taxonomy.CAUSES:
            raise InputError("cause", f"unknown cause {subject!r}; one of: "
                                      f"{', '.join(taxonomy.CAUSES)}")
    elif not _NAME.match(subject):
        raise InputError(kind, f"{subject!r} is not a {kind} name (1-128 letters, digits "
                               f"and _ . : / + -)")
    return kind, subject


def checked_note(note: str) -> str:
    text = note.strip()
    if not text:
        raise InputError("note", "must not be empty")
    if len(text.encode()) > MAX_NOTE_BYTES:
        raise InputError("note", f"must be at most {MAX_NOTE_BYTES} bytes of UTF-8, got "
                                 f"{len(text.encode())}")
    if _CONTROL.search(text):
        raise InputError("note", "must not contain control characters other than tab, CR "
                                 "and LF")
    return text


def _lesson(r: Any) -> Lesson:
    return Lesson(r.id, r.kind, r.subject, r.note, r.author, r.created_at)


class Lessons:
    """The knowledge base, over the store's tables."""

    def __init__(self, store: SQLStore) -> None:
        self.store = store

    def add(self, kind: str, subject: str, note: str, *, author: str) -> Lesson:
        kind, subject = checked_subject(kind, subject)
        lesson = Lesson(new_id("lsn"), kind, subject, checked_note(note),
                        author.strip()[:200] or "unknown", time.time())
        with self.store._write() as conn:
            conn.execute(insert(lessons).values(
                id=lesson.id, kind=kind, subject=subject, note=lesson.note,
                author=lesson.author, created_at=lesson.created_at))
            audit(conn, lesson.author[:64], "lesson.added", f"{kind}:{subject}",
                  {"id": lesson.id}, now=lesson.created_at)
        return lesson

    def remove(self, lesson_id: str, *, actor: str) -> Lesson:
        with self.store._write() as conn:
            row = conn.execute(select(lessons).where(lessons.c.id == lesson_id)).first()
            if row is None:
                raise NotFound(f"no lesson {lesson_id!r}")
            conn.execute(delete(lessons).where(lessons.c.id == lesson_id))
            audit(conn, actor[:64], "lesson.removed", f"{row.kind}:{row.subject}",
                  {"id": row.id, "note": row.note, "author": row.author})
        return _lesson(row)

    def find(self, *, kind: str | None = None, subject: str | None = None,
             limit: int = 100) -> list[Lesson]:
        """Newest first; all of them, or those of one subject."""
        q = select(lessons).order_by(lessons.c.created_at.desc(), lessons.c.id.desc())
        if kind is not None and subject is not None:
            kind, subject = checked_subject(kind, subject)
            q = q.where(lessons.c.kind == kind, lessons.c.subject == subject)
        with self.store._read() as conn:
            return [_lesson(r) for r in conn.execute(q.limit(max(1, min(limit, 1000))))]

    def about(self, subjects: Iterable[Subject], conn: Connection | None = None
              ) -> dict[Subject, list[Lesson]]:
        """The newest :data:`SHOWN` lessons of each subject that has any."""
        wanted = sorted({s for s in subjects if s[1]})[:200]
        if not wanted:
            return {}
        if conn is None:
            with self.store._read() as c:
                return self.about(wanted, c)
        q = (select(lessons).where(or_(*[and_(lessons.c.kind == k, lessons.c.subject == s)
                                         for k, s in wanted]))
             .order_by(lessons.c.created_at.desc(), lessons.c.id.desc()))
        found: dict[Subject, list[Lesson]] = defaultdict(list)
        for r in conn.execute(q):
            got = found[(r.kind, r.subject)]
            if len(got) < SHOWN:
                got.append(_lesson(r))
        return dict(found)

    def for_message(self, view: MessageView) -> list[Lesson]:
        """Lessons on what went wrong with one message: its causes, the providers that
        failed it, its template. A message that went through cleanly has none to show."""
        subjects: set[Subject] = set()
        if view.failure is not None:
            subjects.add(("cause", view.failure.cause))
            if view.failure.provider:
                subjects.add(("provider", view.failure.provider))
        for a in view.attempts:
            if a.cause:
                subjects.update({("cause", a.cause), ("provider", a.provider)})
        for t in view.history:
            if t.cause:
                subjects.add(("cause", t.cause))
        if not subjects:
            return []
        from pushguard.store.schema import messages

        with self.store._read() as conn:
            template = conn.execute(select(messages.c.template).where(
                messages.c.id == view.id)).scalar()
            if template:
                subjects.add(("template", str(template)))
            return flatten(self.about(subjects, conn))


def flatten(found: dict[Subject, list[Lesson]]) -> list[Lesson]:
    return [lesson for key in sorted(found) for lesson in found[key]]


def notes_json(found: dict[Subject, list[Lesson]], *subjects: Subject) -> list[dict[str, Any]]:
    """The lessons of ``subjects`` as JSON, in the order the subjects are given."""
    return [lesson.as_dict() for s in subjects for lesson in found.get(s, [])]


def key_author(store: SQLStore, key_id: str) -> str:
    """How an API key signs what it writes: its name and id."""
    with store._read() as conn:
        name = conn.execute(select(api_keys.c.name).where(api_keys.c.id == key_id)).scalar()
    return f"{name} (key:{key_id})" if name else f"key:{key_id}"


def as_lines(items: Iterable[dict[str, Any]], indent: str = "  ") -> list[str]:
    """Lessons (as JSON) in text: each note's own line breaks kept, indented under it."""
    out = []
    for lesson in items:
        head = (f"{indent}[{lesson['kind']} {lesson['subject']}] {lesson['author']}, "
                f"{str(lesson['created_at'])[:10]}: ")
        body = str(lesson["note"]).splitlines() or [""]
        out.append(head + body[0])
        out += [" " * len(indent) + "    " + line for line in body[1:]]
    return out
