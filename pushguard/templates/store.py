"""Templates and their versions in the database, and the contacts lint samples.

Versions are only ever inserted: a template changes by gaining a version, so a message rendered
from version 3 can always be explained from version 3. Numbers count up per template across
its locales; the newest version of each locale is that locale's current one.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, insert, or_, select
from sqlalchemy.exc import IntegrityError

from pushguard.exceptions import InputError, NotFound, StoreError
from pushguard.models import new_id
from pushguard.store.schema import consent, contacts, template_versions, templates, topics
from pushguard.store.sql import SQLStore, audit
from pushguard.templates.content import DEFAULT_LOCALE, pick_locale

#: contacts up to which a sample is a true random one
SMALL_TABLE = 10_000


@dataclass(frozen=True, slots=True)
class TemplateRow:
    id: str
    name: str
    kind: str
    channel: str
    topic: str | None
    layout: str | None
    created_at: float


@dataclass(frozen=True, slots=True)
class Version:
    template_id: str
    version: int
    locale: str
    content: dict[str, Any]
    created_at: float
    created_by: str


def _template(r: Any) -> TemplateRow:
    return TemplateRow(r.id, r.name, r.kind, r.channel, r.topic, r.layout, r.created_at)


def _version(r: Any) -> Version:
    return Version(r.template_id, r.version, r.locale, json.loads(r.content), r.created_at,
                   r.created_by)


class TemplateStore:
    """The ``templates`` and ``template_versions`` tables over a :class:`SQLStore`."""

    def __init__(self, store: SQLStore) -> None:
        self.store = store

    # -- writes -----------------------------------------------------------------------------

    def create(self, *, name: str, kind: str, channel: str, topic: str | None,
               layout: str | None, locale: str, content: dict[str, Any],
               actor: str) -> tuple[TemplateRow, Version]:
        """A new template and its version 1; ``InputError`` on ``name`` if it is taken."""
        now = time.time()
        row: dict[str, Any] = {"id": new_id("tpl"), "name": name, "kind": kind, "channel": channel,
               "topic": topic, "layout": layout, "created_at": now}
        ver: dict[str, Any] = {"template_id": row["id"], "version": 1, "locale": locale,
               "content": json.dumps(content, ensure_ascii=False), "created_at": now,
               "created_by": actor}
        try:
            with self.store._write() as conn:
                if conn.execute(select(templates.c.id).where(templates.c.name == name)).first():
                    raise InputError("name", f"a template named {name!r} already exists; add "
                                     "a version to it instead")
                conn.execute(insert(templates).values(**row))
                conn.execute(insert(template_versions).values(**ver))
                audit(conn, actor, "template.created", f"template:{row['id']}",
                      {"name": name, "kind": kind, "channel": channel, "locale": locale},
                      now=now)
        except IntegrityError as exc:  # a concurrent create of the same name won
            raise InputError("name", f"a template named {name!r} already exists") from exc
        return TemplateRow(**row), Version(**{**ver, "content": content})

    def add_version(self, template_id: str, *, locale: str, content: dict[str, Any],
                    actor: str) -> Version:
        """Insert the next version. The template's row is locked while the number is taken
        (PostgreSQL; SQLite's writes are serialised anyway), so concurrent versions queue."""
        body = json.dumps(content, ensure_ascii=False)
        for _ in range(5):
            now = time.time()
            try:
                with self.store._write() as conn:
                    if conn.execute(select(templates.c.id).where(templates.c.id == template_id)
                                    .with_for_update()).first() is None:
                        raise NotFound(f"no template {template_id!r}")
                    top = conn.execute(select(func.max(template_versions.c.version)).where(
                        template_versions.c.template_id == template_id)).scalar()
                    ver: dict[str, Any] = {"template_id": template_id, "version": int(top or 0) + 1,
                           "locale": locale, "content": body, "created_at": now,
                           "created_by": actor}
                    conn.execute(insert(template_versions).values(**ver))
                    audit(conn, actor, "template.version_added", f"template:{template_id}",
                          {"version": ver["version"], "locale": locale}, now=now)
                return Version(**{**ver, "content": content})
            except IntegrityError:
                continue
        raise StoreError("could not take a version number: too many concurrent writers")

    # -- reads ------------------------------------------------------------------------------

    def find(self, ref: str) -> TemplateRow:
        """A template by id or name."""
        with self.store._read() as conn:
            r = conn.execute(select(templates).where(
                or_(templates.c.id == ref, templates.c.name == ref))).first()
        if r is None:
            raise NotFound(f"no template {ref!r}")
        return _template(r)

    def find_name(self, name: str) -> TemplateRow | None:
        with self.store._read() as conn:
            r = conn.execute(select(templates).where(templates.c.name == name)).first()
        return None if r is None else _template(r)

    def templates(self, *, kind: str | None = None) -> list[TemplateRow]:
        q = select(templates).order_by(templates.c.name)
        if kind:
            q = q.where(templates.c.kind == kind)
        with self.store._read() as conn:
            return [_template(r) for r in conn.execute(q)]

    def versions(self, template_id: str) -> list[Version]:
        with self.store._read() as conn:
            return [_version(r) for r in conn.execute(
                select(template_versions).where(template_versions.c.template_id == template_id)
                .order_by(template_versions.c.version))]

    def version(self, template_id: str, number: int) -> Version:
        with self.store._read() as conn:
            r = conn.execute(select(template_versions).where(
                template_versions.c.template_id == template_id,
                template_versions.c.version == number)).first()
        if r is None:
            raise NotFound(f"template {template_id} has no version {number}")
        return _version(r)

    def current(self, template_ids: Sequence[str]) -> dict[str, dict[str, Version]]:
        """The newest version of each locale, per template."""
        if not template_ids:
            return {}
        tv = template_versions
        newest = (select(tv.c.template_id, tv.c.locale, func.max(tv.c.version).label("v"))
                  .where(tv.c.template_id.in_(list(template_ids)))
                  .group_by(tv.c.template_id, tv.c.locale).subquery())
        q = select(tv).join(newest, (tv.c.template_id == newest.c.template_id)
                            & (tv.c.version == newest.c.v))
        out: dict[str, dict[str, Version]] = {t: {} for t in template_ids}
        with self.store._read() as conn:
            for r in conn.execute(q):
                out[r.template_id][r.locale] = _version(r)
        return out

    def pick(self, template_id: str, locale: str | None) -> Version:
        """The version a reader of ``locale`` gets: ``fr-CA``, else ``fr``, else default."""
        available = self.current([template_id])[template_id]
        chosen = pick_locale(locale, available)
        if chosen is None:
            raise NotFound(f"template {template_id} has no version for {locale!r} nor a "
                           f"{DEFAULT_LOCALE} one")
        return available[chosen]

    def topic_kind(self, name: str) -> str | None:
        """``marketing`` or ``transactional``, or None if there is no such topic."""
        with self.store._read() as conn:
            kind = conn.execute(select(topics.c.kind).where(topics.c.name == name)).scalar()
        return None if kind is None else str(kind)

    # -- contacts ---------------------------------------------------------------------------

    def contact(self, ref: str) -> dict[str, Any]:
        """What a template sees of a contact, by id or external id."""
        with self.store._read() as conn:
            r = conn.execute(select(contacts).where(
                or_(contacts.c.id == ref, contacts.c.external_id == ref))).first()
        if r is None:
            raise NotFound(f"no contact {ref!r}")
        return template_contact(r)

    def sample_contacts(self, n: int, *, topic: str | None = None) -> list[dict[str, Any]]:
        """Up to ``n`` contacts picked at random: those who consented to ``topic`` when some
        did, else any."""
        with self.store._read() as conn:
            rows: list[Any] = []
            if topic:
                granted = select(consent.c.contact_id).where(consent.c.topic == topic,
                                                             consent.c.status == "granted")
                rows = self._sample(conn, n, contacts.c.id.in_(granted))
            if not rows:
                rows = self._sample(conn, n, None)
        return [template_contact(r) for r in rows]

    @staticmethod
    def _sample(conn: Connection, n: int, where: Any) -> list[Any]:
        # ORDER BY random() reads the whole table; past SMALL_TABLE contacts, read a few short
        # runs of ids from random points instead. Ids start with their creation time in hex,
        # so random times between the first and last id spread the runs over the table.
        base = select(contacts)
        if where is not None:
            base = base.where(where)
        big = conn.execute(select(contacts.c.id).order_by(contacts.c.id)
                           .offset(SMALL_TABLE).limit(1)).first()
        if big is None:
            return list(conn.execute(base.order_by(func.random()).limit(n)))
        ends = [conn.execute(select(contacts.c.id).order_by(o).limit(1)).scalar()
                for o in (contacts.c.id, contacts.c.id.desc())]
        stamps = [_stamp(str(e)) for e in ends]
        if stamps[0] is None or stamps[1] is None:
            return list(conn.execute(base.order_by(func.random()).limit(n)))
        runs, found = 5, {}
        for _ in range(runs):
            pivot = f"ctc_{random.randint(stamps[0], stamps[1]):012x}"
            for r in conn.execute(base.where(contacts.c.id >= pivot)
                                  .order_by(contacts.c.id).limit(n // runs + 1)):
                found[r.id] = r
        rows = list(found.values())
        random.shuffle(rows)
        return rows[:n]

def _stamp(contact_id: str) -> int | None:
    head = contact_id[4:16]
    try:
        return int(head, 16) if contact_id.startswith("ctc_") and len(head) == 12 else None
    except ValueError:
        return None


def template_contact(r: Any) -> dict[str, Any]:
    try:
        attributes = json.loads(r.attributes) if r.attributes else {}
    except ValueError:
        attributes = {}
    return {"id": r.id, "external_id": r.external_id,
            "attributes": attributes if isinstance(attributes, dict) else {},
            "locale": r.locale, "timezone": r.timezone}

