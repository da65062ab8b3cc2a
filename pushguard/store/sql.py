"""The SQL store: SQLite (embedded default) and PostgreSQL, one implementation.

SQLite: WAL journal, ``synchronous=FULL`` (a commit survives power loss), and every write
transaction starts with ``BEGIN IMMEDIATE`` so writers queue on the busy timeout instead of
failing on a lock upgrade; reads use a second engine with deferred transactions.
PostgreSQL: claims take rows ``FOR UPDATE SKIP LOCKED``, so any number of workers on any number
of machines share the queue without waiting on each other.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from pushguard import taxonomy
from pushguard.audience.gate import Gate, Item, bump, stop_failure
from pushguard.audience.rules import AudiencePolicy
from pushguard.exceptions import IdempotencyConflict, StoreError
from pushguard.models import (
    Accepted,
    Attempt,
    Failure,
    Job,
    MessageView,
    NewMessage,
    Outcome,
    Transition,
    new_id,
    next_leg,
)
from pushguard.states import State
from pushguard.store.base import OutcomeRow, QueueStats, Store, Suppression
from pushguard.store.queue import QueueSQL, message_row
from pushguard.store.schema import (
    READY,
    READY_STATES,
    SENDING,
    api_keys,
    attempts,
    audit_log,
    contact_addresses,
    early_receipts,
    events,
    messages,
    suppressions,
)
from pushguard.views import rfc3339

_IN_CHUNK = 500


#: The newest migration's revision; a test keeps it equal to Alembic's head.
HEAD_REVISION = "0011"


def normalize_url(url: str) -> str:
    """Pick our drivers: ``postgresql://`` means psycopg 3."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _pg_relaxed(dbapi_conn: Any, _record: Any) -> None:
    with dbapi_conn.cursor() as cur:
        cur.execute("SET synchronous_commit TO off")
    dbapi_conn.commit()


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _busy(exc: OperationalError) -> bool:
    """SQLite's "database is locked" (SQLITE_BUSY, or SQLITE_LOCKED), extended codes too."""
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in (5, 6)


class SQLStore(Store):
    """``relaxed_commits`` trades durability of this store's own commits against power loss
    (not against a crash of the process) for speed: SQLite ``synchronous=NORMAL``,
    PostgreSQL ``synchronous_commit=off``. Workers use it for their bookkeeping, where a lost
    commit only means a message is delivered again; intake never does."""

    def __init__(self, url: str, *, echo: bool = False, relaxed_commits: bool = False) -> None:
        self.url = normalize_url(url)
        self.relaxed_commits = relaxed_commits
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        self._queue = QueueSQL(self.dialect)
        self.gate = Gate()
        #: SQLite, relaxed commits: an engine that never waits for the lock (exchange_nowait)
        self._nowait: Engine | None = None
        try:
            if self.dialect == "sqlite":
                self._writer = self._sqlite_engine(immediate=True, echo=echo)
                self._reader = self._sqlite_engine(immediate=False, echo=echo)
                db = parsed.database
                if relaxed_commits and db and db != ":memory:":
                    self._nowait = self._sqlite_engine(immediate=True, echo=echo, busy_ms=0,
                                                       autocheckpoint=False)
            else:
                self._writer = create_engine(
                    self.url, echo=echo, pool_pre_ping=True, pool_size=5, max_overflow=5
                )
                self._reader = self._writer
                if relaxed_commits:
                    event.listen(self._writer, "connect", _pg_relaxed)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open database {parsed!r}: {exc}") from exc

    # -- plumbing ---------------------------------------------------------------------------

    def _sqlite_engine(self, *, immediate: bool, echo: bool, busy_ms: int = 30000,
                       autocheckpoint: bool = True) -> Engine:
        db = make_url(self.url).database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            self.url, echo=echo,
            connect_args={"timeout": busy_ms / 1000, "check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={'NORMAL' if self.relaxed_commits else 'FULL'}")
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            if not autocheckpoint:
                cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with self._writer.begin() as conn:
                try:
                    yield conn
                except BaseException:
                    # before the rollback frees the audience counter's row for another writer
                    self.gate.forget()
                    raise
        except BaseException as exc:
            self.gate.forget()  # it may hold what the rolled-back transaction wrote
            if isinstance(exc, OperationalError):
                raise StoreError(f"database write failed: {exc.orig}") from exc
            raise

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self._reader.connect() as conn:
                yield conn
        except OperationalError as exc:
            raise StoreError(f"database read failed: {exc.orig}") from exc

    def _insert_ignore(self, table: Any) -> Any:
        if self.dialect == "sqlite":
            return sqlite.insert(table).on_conflict_do_nothing()
        return postgresql.insert(table).on_conflict_do_nothing()

    def configure_audience(self, policy: AudiencePolicy) -> None:
        """The defaults the pre-send gate applies (quiet hours, caps) from pushguard.toml."""
        self.gate = Gate(policy)

    def close(self) -> None:
        if self._nowait is not None:
            self._nowait.dispose()
        self._writer.dispose()
        if self._reader is not self._writer:
            self._reader.dispose()

    # -- schema -----------------------------------------------------------------------------

    def migrate(self) -> None:
        from pushguard.store import migrations

        with self._write() as conn:
            migrations.upgrade(conn)

    def schema_is_current(self) -> bool:
        """Whether the database is at :data:`HEAD_REVISION`. Read straight from Alembic's
        table, so that a worker's start-up does not import Alembic."""
        with self._read() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return False
            found = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
        return [r[0] for r in found] == [HEAD_REVISION]

    def ping(self) -> None:
        with self._read() as conn:
            conn.execute(text("SELECT 1"))

    # -- intake -----------------------------------------------------------------------------

    def enqueue(
        self, items: Sequence[NewMessage], *, scope: str,
        also: Callable[[Connection, list[Accepted | IdempotencyConflict]], None] | None = None,
    ) -> list[Accepted | IdempotencyConflict]:
        """``also`` runs in the same transaction, with the results: what the caller records
        about the messages commits with them, or neither does."""
        for attempt in range(3):
            try:
                return self._enqueue(items, scope, also)
            except IntegrityError as exc:
                # A concurrent request committed the same idempotency key first: look again,
                # and this time we will find it and replay its answer.
                if attempt == 2:
                    raise StoreError(f"enqueue kept conflicting: {exc.orig}") from exc
        raise AssertionError("unreachable")

    def _enqueue(
        self, items: Sequence[NewMessage], scope: str,
        also: Callable[[Connection, list[Accepted | IdempotencyConflict]], None] | None = None,
    ) -> list[Accepted | IdempotencyConflict]:
        now = time.time()
        results: list[Accepted | IdempotencyConflict | None] = [None] * len(items)
        with self._write() as conn:
            seen = self._existing_keys(conn, scope, [m.idempotency_key for m in items])
            fresh = [m for m in items
                     if m.idempotency_key is None or m.idempotency_key not in seen]
            gated = [Item(m.id, m.channel, m.to, m.topic, m.contact_id, m.fanout_of)
                     for m in fresh]
            self.gate.check(conn, gated, now, sending=False)
            stops = {g.id: g for g in gated}
            rows: list[dict[str, Any]] = []
            evs: list[tuple[Any, ...]] = []
            for i, m in enumerate(items):
                if m.idempotency_key is not None:
                    prior = seen.get(m.idempotency_key)
                    if prior is not None:
                        pid, phash, pstate = prior
                        results[i] = (
                            Accepted(pid, State(pstate), replayed=True)
                            if phash == m.request_hash
                            else IdempotencyConflict(m.idempotency_key)
                        )
                        continue
                g = stops.get(m.id)
                stop = g.stop if g is not None else None
                if g is not None and m.contact_id is None:
                    m.contact_id = g.contact_id
                state = stop.state if stop else State.QUEUED
                seen[m.idempotency_key or f"\0{i}"] = (m.id, m.request_hash, state.value)
                failure = None
                if stop:
                    failure = json.dumps(stop_failure(stop).as_dict())
                rows.append(message_row(m, now, state, scope=scope, failure=failure))
                if stop:
                    rows[-1]["last_cause"] = stop.cause
                    if stop.next_at is not None:
                        rows[-1]["next_at"] = max(stop.next_at, rows[-1]["next_at"])
                        rows[-1]["expires_at"] = max(rows[-1]["expires_at"],
                                                     stop.next_at + m.ttl)
                reason = f"accepted; {state.value} by {stop.rule}: {stop.detail}" if stop else (
                    "accepted; scheduled" if m.send_at and m.send_at > now else "accepted"
                )
                evs.append((m.id, now, State.ACCEPTED.value, state.value, reason,
                            stop.cause if stop else None))
                results[i] = Accepted(m.id, state)
            if rows:
                self._queue.insert_messages(conn, rows)
                self._queue.add_events(conn, evs)
            done = [r for r in results if r is not None]
            if also is not None:
                also(conn, done)
        return done

    def _existing_keys(
        self, conn: Connection, scope: str, keys: Sequence[str | None]
    ) -> dict[str, tuple[str, str | None, str]]:
        wanted = sorted({k for k in keys if k is not None})
        found: dict[str, tuple[str, str | None, str]] = {}
        for i in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[i : i + _IN_CHUNK]
            q = select(
                messages.c.idem_key, messages.c.id, messages.c.request_hash,
                messages.c.accepted_state,
            ).where(messages.c.idem_scope == scope, messages.c.idem_key.in_(chunk))
            for key, mid, rhash, st in conn.execute(q):
                found[key] = (mid, rhash, st)
        return found

    # -- the queue --------------------------------------------------------------------------

    def claim(self, owner: str, limit: int, lease: float) -> list[Job]:
        with self._write() as conn:
            return self._claim(conn, owner, limit, lease)

    def exchange(
        self, owner: str, outcomes: Sequence[Outcome], limit: int, lease: float
    ) -> list[Job]:
        with self._write() as conn:
            return self._cycle(conn, owner, outcomes, limit, lease)

    def _cycle(self, conn: Connection, owner: str, outcomes: Sequence[Outcome], limit: int,
               lease: float) -> list[Job]:
        if outcomes:
            self._record(conn, owner, outcomes)
        return self._claim(conn, owner, limit, lease) if limit > 0 else []

    def exchange_nowait(
        self, owner: str, outcomes: Sequence[Outcome], limit: int, lease: float
    ) -> list[Job] | None:
        """On SQLite with relaxed commits (a worker's store), :meth:`exchange` right here when
        the write lock is free, and None at once when another writer holds it.

        Why: a worker's DB thread pays a GIL handoff for every row SQLite steps through (the
        driver releases the GIL around each step, and the busy event loop holds it), so a
        batch cost a worker about 30 % more CPU from the thread than from the loop itself
        (one worker: 322 against 257 us of CPU per delivery). What it must not do here is
        wait, since every delivery in flight waits with it:
        - it never waits for the lock (busy timeout 0; the caller falls back to the thread);
          a lock error at any point rolls the whole cycle back, so None is always safe;
        - its connections never checkpoint the WAL (``wal_autocheckpoint=0``), which copies
          pages and flushes to disk: the worker calls :meth:`checkpoint` on its thread;
        - it is not offered with full commits (a flush per commit) or on PostgreSQL (round
          trips, row locks).
        What remains is CPU work of a few milliseconds per batch."""
        if self._nowait is None:
            return None
        began = False
        try:
            with self._nowait.begin() as conn:  # BEGIN IMMEDIATE: busy -> error at once
                began = True
                try:
                    return self._cycle(conn, owner, outcomes, limit, lease)
                except BaseException:
                    self.gate.forget()  # before the rollback lets another writer in
                    raise
        except BaseException as exc:
            if began:  # not when BEGIN found the lock taken: no check ran (a commit failed)
                self.gate.forget()
            if not isinstance(exc, OperationalError):
                raise
            if _busy(exc):
                return None
            raise StoreError(f"database write failed: {exc.orig}") from exc

    def checkpoint(self) -> None:
        """Copy the WAL's committed pages into the database file without waiting for anyone
        (``PASSIVE``): what :meth:`exchange_nowait`'s connections leave undone. Meant for the
        worker's DB thread, about once a second while cycles run inline."""
        if self._nowait is None:
            return
        try:
            with self._writer.connect() as conn:
                raw = conn.connection.dbapi_connection
                assert raw is not None
                raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except (OperationalError, sqlite3.Error) as exc:
            raise StoreError(f"checkpoint failed: {exc}") from exc

    def _claim(self, conn: Connection, owner: str, limit: int, lease: float) -> list[Job]:
        jobs = self._queue.claim(conn, owner, limit, lease)
        if jobs:
            items = [Item(j.id, j.channel, j.to, j.topic, j.contact_id, j.fanout_of)
                     for j in jobs]
            self.gate.check(conn, items, time.time(), sending=True,
                            lock=self.dialect == "postgresql")
            for j, it in zip(jobs, items, strict=True):
                j.stop, j.marketing, j.contact_id = it.stop, it.marketing, it.contact_id
        return jobs

    def reap(self, limit: int = 1000) -> int:
        now = time.time()
        crash = taxonomy.INTERNAL_CRASH
        with self._write() as conn:
            q = (
                select(messages.c.id, messages.c.attempts, messages.c.lost_leases,
                       messages.c.lease_owner)
                .where(SENDING, messages.c.lease_until < now)
                .limit(limit)
            )
            if self.dialect == "postgresql":
                q = q.with_for_update(skip_locked=True)
            rows = conn.execute(q).all()
            # receipts held for messages that never became delivered: not kept forever
            conn.execute(delete(early_receipts).where(early_receipts.c.at < now - 86400))
            if not rows:
                return 0
            ups, atts, evs = [], [], []
            for r in rows:
                lost = r.lost_leases + 1
                dead = lost >= crash.max_attempts
                detail = f"worker {r.lease_owner} stopped while holding the message"
                expl, fix = taxonomy.describe(crash, detail=detail)
                dst = State.DEAD if dead else State.RETRY_SCHEDULED
                ups.append({
                    "b_id": r.id, "b_state": dst.value, "b_lost": lost, "b_now": now,
                    "b_failure": json.dumps(Failure(crash.name, True, None, expl, fix).as_dict()),
                })
                atts.append({
                    "message_id": r.id, "number": r.attempts + 1, "at": now,
                    "provider": "(unknown)", "outcome": "lost", "cause": crash.name,
                    "maybe_sent": True, "detail": detail,
                })
                evs.append({"message_id": r.id, "at": now, "src": State.SENDING.value,
                            "dst": dst.value, "reason": f"lease expired: {detail}",
                            "cause": crash.name})
            conn.execute(
                update(messages)
                .where(messages.c.id == bindparam("b_id"),
                       messages.c.state == State.SENDING.value)
                .values(state=bindparam("b_state"), lost_leases=bindparam("b_lost"),
                        attempts=messages.c.attempts + 1, next_at=bindparam("b_now"),
                        updated_at=bindparam("b_now"), lease_owner=None, lease_until=None,
                        last_cause=crash.name, failure=bindparam("b_failure")),
                ups,
            )
            conn.execute(insert(attempts), atts)
            conn.execute(insert(events), evs)
            stop_campaign_returns(conn, [r.id for r in rows], now)
        return len(rows)

    def record(self, owner: str, outcomes: Sequence[Outcome]) -> int:
        if not outcomes:
            return 0
        with self._write() as conn:
            return self._record(conn, owner, outcomes)

    def _record(self, conn: Connection, owner: str, outcomes: Sequence[Outcome]) -> int:
        # Only outcomes for rows this worker still holds count: if its lease expired and the
        # reaper re-queued the message, the reaper already wrote the lost attempt and another
        # worker owns what happens next.
        held = self._queue.held(conn, owner, [o.id for o in outcomes])
        mine = [o for o in outcomes if o.id in held]
        if mine:
            self._write_outcomes(conn, owner, mine, time.time())
        return len(mine)

    def _write_outcomes(
        self, conn: Connection, owner: str, outcomes: Sequence[Outcome], now: float
    ) -> None:
        dated = [o for o in outcomes if o.suppress is not None and o.unregistered_at]
        if dated:
            self._keep_reregistered(conn, dated)
        sups = self._queue.record(conn, owner, outcomes, now)
        self._apply_early_receipts(
            conn, [o.id for o in outcomes if o.state is State.DELIVERED], now)
        legs = [o.fallback_leg for o in outcomes if o.fallback_leg is not None]
        if legs:
            self._queue.insert_messages(conn, [message_row(m, now, State.QUEUED) for m in legs])
            self._queue.add_events(conn, [
                (m.id, now, State.ACCEPTED.value, State.QUEUED.value,
                 f"fallback leg of {m.parent_id}", None) for m in legs])
        back = [m.id for m in legs if m.campaign_id is not None] + [
            o.id for o in outcomes if o.state in _BACK]
        if back:
            stop_campaign_returns(conn, back, now)
        if sups:
            keys = ("channel", "address", "reason", "source", "created_at")
            conn.execute(self._insert_ignore(suppressions), [dict(zip(keys, row, strict=True))
                                                              for row in sups])
            _deactivate(conn, [(ch, a, r, src) for ch, a, r, src, _ in sups], now)
            bump(conn)

    def _keep_reregistered(self, conn: Connection, outcomes: Sequence[Outcome]) -> None:
        """APNs's 410 carries the time the token was last known invalid: a token the device
        registered again after that time is kept (Apple's rule), and the history says so."""
        for o in outcomes:
            assert o.suppress is not None and o.unregistered_at is not None
            channel, address, _ = o.suppress
            seen = conn.execute(select(func.max(contact_addresses.c.last_seen)).where(
                contact_addresses.c.channel == channel,
                contact_addresses.c.address == address)).scalar()
            if seen is not None and seen > o.unregistered_at:
                o.suppress = None
                o.reason += (f"; token kept: registered again at {rfc3339(seen)}, after APNs "
                             f"found it unregistered at {rfc3339(o.unregistered_at)}")

    # -- reading ----------------------------------------------------------------------------

    def get(self, message_id: str) -> MessageView | None:
        with self._read() as conn:
            row = conn.execute(select(messages).where(messages.c.id == message_id)).first()
            if row is None:
                return None
            view = self._view(row)
            view.next_leg_id = conn.execute(
                select(messages.c.id).where(messages.c.parent_id == message_id)
            ).scalar()
            view.attempts = [
                Attempt(
                    number=a.number, at=a.at, provider=a.provider, outcome=a.outcome,
                    latency_ms=a.latency_ms, status=a.status, provider_code=a.provider_code,
                    cause=a.cause, maybe_sent=bool(a.maybe_sent), detail=a.detail or "",
                    raw=a.raw,
                )
                for a in conn.execute(
                    select(attempts).where(attempts.c.message_id == message_id)
                    .order_by(attempts.c.id)
                )
            ]
            view.history = [
                Transition(at=e.at, src=e.src, dst=e.dst, reason=e.reason, cause=e.cause)
                for e in conn.execute(
                    select(events).where(events.c.message_id == message_id).order_by(events.c.id)
                )
            ]
            return view

    @staticmethod
    def _view(row: Any) -> MessageView:
        failure = None
        if row.failure:
            f = json.loads(row.failure)
            failure = Failure(f["cause"], f["transient"], f.get("provider_code"),
                              f["explanation"], f["fix"], f.get("provider"), f.get("rule"))
        return MessageView(
            id=row.id, channel=row.channel, to=row.to_addr, content=json.loads(row.content),
            topic=row.topic, priority=row.priority, state=State(row.state),
            created_at=row.created_at, updated_at=row.updated_at, next_at=row.next_at,
            expires_at=row.expires_at, attempts_count=row.attempts,
            idempotency_key=row.idem_key, last_provider=row.last_provider,
            provider_message_id=row.provider_message_id, delivered_at=row.delivered_at,
            failure=failure if row.state != State.DELIVERED.value else None,
            parent_id=row.parent_id, contact_id=row.contact_id,
            confirm_within=row.confirm_within, confirmed_at=row.confirmed_at,
            fallback=json.loads(row.fallback) if row.fallback else [],
        )

    def list_messages(
        self,
        *,
        state: str | None = None,
        cause: str | None = None,
        since: float | None = None,
        limit: int = 100,
        cursor: tuple[float, str] | None = None,
    ) -> list[MessageView]:
        q = (
            select(messages)
            .order_by(messages.c.created_at.desc(), messages.c.id.desc())
            .limit(limit)
        )
        if state:
            q = q.where(messages.c.state == state)
        if cause:
            q = q.where(messages.c.last_cause == cause)
        if since is not None:
            q = q.where(messages.c.created_at >= since)
        if cursor is not None:
            at, mid = cursor
            q = q.where(or_(messages.c.created_at < at,
                            and_(messages.c.created_at == at, messages.c.id < mid)))
        with self._read() as conn:
            return [self._view(r) for r in conn.execute(q)]

    def stats(self) -> QueueStats:
        now = time.time()
        with self._read() as conn:
            counts = {
                s: n
                for s, n in conn.execute(
                    select(messages.c.state, func.count())
                    .where(messages.c.state.in_((*READY_STATES, State.SENDING.value)))
                    .group_by(messages.c.state)
                )
            }
            oldest = conn.execute(
                select(func.min(messages.c.next_at)).where(
                    READY, messages.c.next_at <= now
                )
            ).scalar()
            nsup = conn.execute(select(func.count()).select_from(suppressions)).scalar() or 0
        return QueueStats(counts, max(0.0, now - oldest) if oldest else 0.0, int(nsup))

    def outcomes(self, *, since: float = 0.0) -> list[OutcomeRow]:
        first = (
            select(attempts.c.message_id, attempts.c.provider)
            .where(attempts.c.number == 1, attempts.c.outcome != "lost")
            .subquery()
        )
        q = (
            select(messages.c.id, messages.c.channel, messages.c.state, messages.c.attempts,
                   first.c.provider, messages.c.last_provider, messages.c.last_cause,
                   messages.c.failure)
            .select_from(messages.outerjoin(first, first.c.message_id == messages.c.id))
            .where(messages.c.created_at >= since)
        )
        rows = []
        with self._read() as conn:
            for r in conn.execute(q):
                f = json.loads(r.failure) if r.failure else {}
                cause = None if r.state == State.DELIVERED.value else r.last_cause
                rows.append(OutcomeRow(r.id, r.channel, r.state, r.attempts, r.provider,
                                       r.last_provider, cause, f.get("provider_code"),
                                       f.get("rule") if cause else None))
        return rows

    def add_receipt(
        self, message_id: str, provider_message_id: str, note: str, *, cause: str | None = None,
        suppress: tuple[str, str] | None = None, by_provider: bool = False,
        confirmed: bool = False,
    ) -> bool:
        now = time.time()
        args = {"provider_message_id": provider_message_id, "note": note, "cause": cause,
                "suppress": list(suppress) if suppress else None, "by_provider": by_provider,
                "confirmed": confirmed}
        with self._write() as conn:
            if self._apply_receipt(conn, message_id, args, now):
                return True
            # A fast provider can call back before the worker's batched commit has recorded
            # the outcome: hold the receipt and apply it with the outcome. The row lock waits
            # for a worker's open transaction, so we never hold a receipt for an outcome that
            # is committing right now (it would never see it).
            q = select(messages.c.state).where(messages.c.id == message_id)
            if self.dialect == "postgresql":
                q = q.with_for_update()
            state = conn.execute(q).scalar()
            if state == State.DELIVERED.value and self._apply_receipt(conn, message_id, args,
                                                                      now):
                return True
            if state != State.SENDING.value:
                return False
            conn.execute(insert(early_receipts).values(
                message_id=message_id, at=now, receipt=json.dumps(args)))
            conn.execute(insert(events).values(
                message_id=message_id, at=now, src=None, dst=state, cause=cause,
                reason=f"{note} (arrived before the outcome was recorded; held)"))
        return True

    def _apply_receipt(self, conn: Connection, message_id: str, args: dict[str, Any],
                       now: float) -> bool:
        # Normally the provider's own id must match what it told us when it accepted the
        # message; with by_provider, the sender is instead the provider that took it.
        pid, cause = args["provider_message_id"], args["cause"]
        matches = (messages.c.last_provider == pid if args["by_provider"]
                   else messages.c.provider_message_id == pid)
        row = conn.execute(
            select(messages).where(
                messages.c.id == message_id, matches,
                messages.c.state == State.DELIVERED.value,
            )
        ).first()
        if row is None:
            return False
        # src is NULL: a receipt annotates the history, it is not a transition.
        conn.execute(insert(events).values(
            message_id=message_id, at=now, src=None, dst=row.state, reason=args["note"],
            cause=cause,
        ))
        if args["confirmed"] and row.confirmed_at is None:
            conn.execute(update(messages).where(messages.c.id == message_id)
                         .values(confirmed_at=now, confirm_by=None))
        elif cause is not None and cause != "NO_CONSENT" and row.fallback:
            # delivered to the provider, then reported undelivered: the next leg starts
            self._start_leg(conn, row, now, f"reported undelivered ({cause})")
        if args["suppress"]:
            channel, reason = args["suppress"]
            channel = channel or row.channel
            source = f"receipt for {message_id}"
            added = conn.execute(self._insert_ignore(suppressions), [{
                "channel": channel, "address": row.to_addr, "reason": reason,
                "source": source, "created_at": now,
            }]).rowcount
            _deactivate(conn, [(channel, row.to_addr, reason, source)], now)
            if added:
                audit(conn, "receipt", "suppression.added", f"{channel}:{row.to_addr}",
                      {"reason": reason, "source": source}, now=now)
            bump(conn)
        return True

    def _apply_early_receipts(self, conn: Connection, ids: Sequence[str], now: float) -> None:
        held = self._queue.early_receipts(conn, ids)
        if not held:
            return
        for _, message_id, receipt in held:
            if not self._apply_receipt(conn, message_id, json.loads(receipt), now):
                conn.execute(insert(events).values(
                    message_id=message_id, at=now, src=None, dst=State.DELIVERED.value,
                    cause=None, reason="a held receipt did not match how the message was "
                    "sent; dropped"))
        conn.execute(delete(early_receipts).where(
            early_receipts.c.id.in_([r[0] for r in held])))

    def sweep_unconfirmed(self, limit: int = 500) -> int:
        """Start the fallback leg of delivered messages whose confirmation window passed
        without a receipt saying they arrived."""
        now = time.time()
        with self._write() as conn:
            q = select(messages).where(text("confirm_by IS NOT NULL"),
                                       messages.c.confirm_by < now,
                                       messages.c.confirmed_at.is_(None)).limit(limit)
            if self.dialect == "postgresql":
                q = q.with_for_update(skip_locked=True)
            rows = conn.execute(q).all()
            for row in rows:
                self._start_leg(conn, row, now,
                                f"not confirmed within {row.confirm_within} s")
        return len(rows)

    def _start_leg(self, conn: Connection, row: Any, now: float, why: str) -> None:
        conn.execute(update(messages).where(messages.c.id == row.id).values(confirm_by=None))
        legs = json.loads(row.fallback) if row.fallback else []
        taken = conn.execute(select(messages.c.id).where(messages.c.parent_id == row.id)
                             ).first()
        if not legs or taken is not None:
            return  # no leg left, or it already started
        child = next_leg(row.id, legs, topic=row.topic, priority=row.priority,
                         ttl=int(row.expires_at - row.created_at), contact_id=row.contact_id)
        conn.execute(insert(messages).values(message_row(child, now, State.QUEUED)))
        if child.campaign_id is not None:
            stop_campaign_returns(conn, [child.id], now)
        conn.execute(insert(events), [
            {"message_id": row.id, "at": now, "src": None, "dst": row.state,
             "reason": f"{why}: falling back to {child.channel} as {child.id}", "cause": None},
            {"message_id": child.id, "at": now, "src": State.ACCEPTED.value,
             "dst": State.QUEUED.value, "reason": f"fallback leg of {row.id} ({why})",
             "cause": None}])

    # -- suppression ------------------------------------------------------------------------

    def suppress(self, channel: str, address: str, reason: str, source: str,
                 *, actor: str = "admin") -> None:
        with self._write() as conn:
            self.suppress_in(conn, channel, address, reason, source, actor=actor)

    def suppress_in(self, conn: Connection, channel: str, address: str, reason: str,
                    source: str, *, actor: str) -> None:
        now = time.time()
        res = conn.execute(self._insert_ignore(suppressions), [{
            "channel": channel, "address": address, "reason": reason, "source": source,
            "created_at": now,
        }])
        if res.rowcount:
            audit(conn, actor, "suppression.added", f"{channel}:{address}",
                  {"reason": reason, "source": source}, now=now)
            bump(conn)

    def unsuppress(self, channel: str, address: str, *, actor: str = "admin",
                   note: str = "") -> bool:
        with self._write() as conn:
            return self.unsuppress_in(conn, channel, address, actor=actor, note=note)

    def unsuppress_in(self, conn: Connection, channel: str, address: str, *, actor: str,
                      note: str = "") -> bool:
        prior = conn.execute(select(suppressions).where(
            suppressions.c.channel == channel, suppressions.c.address == address)).first()
        if prior is None:
            return False
        conn.execute(delete(suppressions).where(
            suppressions.c.channel == channel, suppressions.c.address == address))
        audit(conn, actor, "suppression.removed", f"{channel}:{address}",
              {"reason": prior.reason, "source": prior.source,
               "created_at": prior.created_at, "note": note})
        bump(conn)
        return True

    def suppressions(self, limit: int = 100) -> list[Suppression]:
        with self._read() as conn:
            return [
                Suppression(r.channel, r.address, r.reason, r.source, r.created_at)
                for r in conn.execute(
                    select(suppressions).order_by(suppressions.c.created_at.desc()).limit(limit)
                )
            ]

    # -- API keys ---------------------------------------------------------------------------

    def create_api_key(self, name: str) -> tuple[str, str]:
        key = "pgk_" + secrets.token_urlsafe(32)
        key_id = new_id("key")
        with self._write() as conn:
            conn.execute(insert(api_keys).values(
                id=key_id, name=name, prefix=key[:10], key_hash=hash_key(key),
                created_at=time.time(),
            ))
        return key_id, key

    def api_key_id(self, key_hash: str) -> str | None:
        with self._read() as conn:
            row = conn.execute(
                select(api_keys.c.id, api_keys.c.key_hash).where(
                    api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None)
                )
            ).first()
        return None if row is None else str(row.id)

    def revoke_api_key(self, key_id: str) -> bool:
        with self._write() as conn:
            res = conn.execute(update(api_keys).where(
                api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)
            ).values(revoked_at=time.time()))
        return bool(res.rowcount)

    def api_keys(self) -> list[dict[str, object]]:
        with self._read() as conn:
            return [
                {"id": r.id, "name": r.name, "prefix": r.prefix, "created_at": r.created_at,
                 "revoked_at": r.revoked_at}
                for r in conn.execute(select(api_keys).order_by(api_keys.c.created_at))
            ]


def audit(conn: Connection, actor: str, action: str, subject: str, detail: dict[str, Any],
          *, now: float | None = None) -> None:
    """Append one entry to the audit log, inside the caller's transaction."""
    conn.execute(insert(audit_log).values(
        at=now if now is not None else time.time(), actor=actor, action=action,
        subject=subject, detail=json.dumps(detail, separators=(",", ":"), default=str)))



def _deactivate(conn: Connection, rows: Sequence[tuple[str, str, str, str]],
                now: float) -> None:
    """Deactivate contacts' copies of suppressed addresses ``(channel, address, reason,
    evidence)``, so fan-out and the doctor stop using them too."""
    conn.execute(
        update(contact_addresses).where(
            contact_addresses.c.channel == bindparam("b_channel"),
            contact_addresses.c.address == bindparam("b_address"),
            contact_addresses.c.status == "active",
        ).values(status="deactivated", status_reason=bindparam("b_reason"),
                 status_evidence=bindparam("b_source"), updated_at=now),
        [{"b_channel": ch, "b_address": a, "b_reason": r, "b_source": src}
         for ch, a, r, src in rows])


#: outcomes that put a message back in the queue
_BACK = frozenset({State.RETRY_SCHEDULED, State.DEFERRED, State.QUEUED})
#: a held message's next_at (as the campaign service holds them): later than any real time
HELD_AT = 4102444800.0
_CANCELLED = json.dumps({
    "cause": "POLICY_SUPPRESSED", "transient": False, "provider_code": None,
    "explanation": "its campaign was cancelled", "fix": "Nothing to do: the campaign was "
    "cancelled.", "provider": None, "rule": "campaign"})


def stop_campaign_returns(conn: Connection, ids: Sequence[str], now: float) -> None:
    """Messages that came back to the queue (a retry, a lease reaped, a fallback leg) while
    their campaign is paused are held with the others; if it was cancelled, they are not
    sent. Only messages of such campaigns are touched; others cost one indexed lookup."""
    ready = "state IN ('queued', 'retry_scheduled', 'deferred')"
    for i in range(0, len(ids), _IN_CHUNK):
        chunk = list(ids[i:i + _IN_CHUNK])
        marks = ", ".join(f":i{n}" for n in range(len(chunk)))
        params: dict[str, Any] = {f"i{n}": v for n, v in enumerate(chunk)}
        found = conn.execute(text(
            f"SELECT m.id, m.state AS now_state, c.state FROM messages m "
            f"JOIN campaigns c ON c.id = m.campaign_id "
            f"WHERE m.id IN ({marks}) AND m.{ready} AND c.state IN ('paused', 'cancelled')"
            # on PostgreSQL, wait for a pause or cancel being committed, and see its state
            + (" FOR SHARE OF c" if conn.dialect.name == "postgresql" else "")),
            params).all()
        if not found:
            continue
        held = [r.id for r in found if r.state == "paused"]
        gone = [r.id for r in found if r.state == "cancelled"]
        was = {r.id: r.now_state for r in found}
        if held:
            conn.execute(update(messages).where(messages.c.id.in_(held)).values(
                next_at=HELD_AT))
        if gone:
            conn.execute(update(messages).where(messages.c.id.in_(gone)).values(
                state=State.SUPPRESSED.value, updated_at=now, last_cause="POLICY_SUPPRESSED",
                failure=_CANCELLED))
        conn.execute(insert(events), [
            {"message_id": mid, "at": now, "src": None if mid in held else was[mid],
             "dst": was[mid] if mid in held else State.SUPPRESSED.value,
             "reason": "held: its campaign is paused" if mid in held
             else "not sent: its campaign was cancelled",
             "cause": None if mid in held else "POLICY_SUPPRESSED"} for mid in held + gone])
