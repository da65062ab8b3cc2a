"""Segments: named, saved filters over contacts, with a live count and a sample.

A segment is evaluated when it is used, never stored as a member list: a campaign snapshots
its members when it starts sending (``campaign_recipients``), so who a running campaign sends
to does not move under it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, bindparam, insert, select, text, update

from pushguard.campaigns.filters import Compiled, compile_filter
from pushguard.exceptions import InputError, NotFound
from pushguard.models import new_id
from pushguard.store.schema import segments
from pushguard.store.sql import SQLStore
from pushguard.views import rfc3339

#: contacts read per query when walking a segment
PAGE = 5000
#: the columns of a member row (what a campaign page reads of each contact)
_MEMBER = "c.id, c.external_id, c.attributes, c.locale, c.timezone, c.quiet_hours"


class SegmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")
    description: str = Field(default="", max_length=2000)
    filter: dict[str, Any] = Field(default_factory=dict,
                                   description="the filter (see the segments how-to)")


def segment_json(row: Any) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "description": row.description,
            "filter": json.loads(row.filter), "created_at": rfc3339(row.created_at),
            "updated_at": rfc3339(row.updated_at)}


class Segments:
    def __init__(self, store: SQLStore) -> None:
        self.store = store

    def compile(self, raw: Any, *, where: str = "filter") -> Compiled:
        return compile_filter(raw, self.store.dialect, where=where)

    def put(self, body: SegmentIn) -> dict[str, Any]:
        """Create a segment, or replace the filter of the one with that name."""
        self.compile(body.filter)  # refuse a bad filter before storing it
        now = time.time()
        with self.store._write() as conn:
            row = conn.execute(select(segments).where(segments.c.name == body.name)).first()
            values = {"description": body.description, "updated_at": now,
                      "filter": json.dumps(body.filter, sort_keys=True)}
            if row is None:
                conn.execute(insert(segments).values(id=new_id("seg"), name=body.name,
                                                     created_at=now, **values))
            else:
                conn.execute(update(segments).where(segments.c.id == row.id).values(**values))
            got = conn.execute(select(segments).where(segments.c.name == body.name)).one()
        return segment_json(got)

    def find(self, ref: str, conn: Connection | None = None) -> Any:
        def look(c: Connection) -> Any:
            return c.execute(select(segments).where(
                (segments.c.id == ref) | (segments.c.name == ref))).first()

        if conn is not None:
            row = look(conn)
        else:
            with self.store._read() as c:
                row = look(c)
        if row is None:
            raise NotFound(f"no segment {ref!r}")
        return row

    def get(self, ref: str) -> dict[str, Any]:
        return segment_json(self.find(ref))

    def list_all(self) -> list[dict[str, Any]]:
        with self.store._read() as conn:
            rows = conn.execute(select(segments).order_by(segments.c.name)).all()
        return [segment_json(r) for r in rows]

    def filter_of(self, segment: str | None, inline: dict[str, Any] | None) -> dict[str, Any]:
        """The filter a campaign names (a segment) or carries (inline)."""
        if segment is not None and inline is not None:
            raise InputError("segment", "give a segment or a filter, not both")
        if segment is not None:
            try:
                return dict(json.loads(self.find(segment).filter))
            except NotFound as exc:
                raise InputError("segment", exc.message) from exc
        return inline or {}

    def count(self, raw: Any) -> int:
        c = self.compile(raw)
        with self.store._read() as conn:
            return int(conn.execute(text(f"SELECT COUNT(*) FROM contacts c WHERE {c.sql}"),
                                    c.params).scalar_one())

    def preview(self, raw: Any, *, sample: int = 10) -> dict[str, Any]:
        """The live count and a few members (external ids and attributes)."""
        c = self.compile(raw)
        with self.store._read() as conn:
            n = int(conn.execute(text(f"SELECT COUNT(*) FROM contacts c WHERE {c.sql}"),
                                 c.params).scalar_one())
            rows = conn.execute(text(
                f"SELECT c.external_id, c.attributes, c.locale, c.timezone FROM contacts c "
                f"WHERE {c.sql} ORDER BY c.id LIMIT {int(sample)}"), c.params).all()
        return {"count": n, "sample": [
            {"external_id": r.external_id, "attributes": json.loads(r.attributes),
             "locale": r.locale, "timezone": r.timezone} for r in rows]}

    def sample(self, raw: Any, k: int) -> list[str]:
        """The ids of a uniform random sample of ``k`` of the matching contacts (every one
        when no more match), in id order."""
        c = self.compile(raw)
        with self.store._read() as conn:
            return sorted(r[0] for r in conn.execute(text(
                f"SELECT c.id FROM contacts c WHERE {c.sql} ORDER BY random() LIMIT {int(k)}"),
                c.params))

    def members_in(self, raw: Any, ids: Sequence[str], *,
                   page: int = 1000) -> Iterator[list[Any]]:
        """The contacts among ``ids`` (in id order) that match, a page at a time."""
        c = self.compile(raw)
        q = text(f"SELECT {_MEMBER} FROM contacts c WHERE c.id IN :ids AND {c.sql} "
                 f"ORDER BY c.id").bindparams(bindparam("ids", expanding=True))
        for i in range(0, len(ids), page):
            with self.store._read() as conn:
                rows = conn.execute(q, {**c.params, "ids": list(ids[i:i + page])}).all()
            if rows:
                yield list(rows)

    def members(self, raw: Any, *, page: int = PAGE, after: str = "",
                until: str | None = None) -> Iterator[list[Any]]:
        """The matching contacts (with ids in ``(after, until]``), in id order, a page at a
        time (keyset pagination: each page is one short query, whatever the segment's
        size)."""
        c = self.compile(raw)
        bound = "" if until is None else "AND c.id <= :until "
        while True:
            with self.store._read() as conn:
                rows = conn.execute(text(
                    f"SELECT {_MEMBER} FROM contacts c WHERE c.id > :after {bound}AND {c.sql} "
                    f"ORDER BY c.id LIMIT {int(page)}"),
                    {**c.params, "after": after, "until": until}).all()
            if not rows:
                return
            yield list(rows)
            after = rows[-1].id
