"""The store contract: every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select

from pushguard import taxonomy
from pushguard.exceptions import IdempotencyConflict
from pushguard.models import Accepted, Attempt, Failure, NewMessage, Outcome
from pushguard.states import State
from pushguard.store.schema import api_keys, metadata
from pushguard.store.sql import SQLStore, hash_key


def msg(to: str = "https://example.com/h", **kw: object) -> NewMessage:
    return NewMessage(channel="webhook", to=to, content={"n": 1}, **kw)  # type: ignore[arg-type]


def test_enqueue_commits_queued_message_with_history(store: SQLStore) -> None:
    (res,) = store.enqueue([msg()], scope="k")
    assert isinstance(res, Accepted) and res.state is State.QUEUED
    view = store.get(res.id)
    assert view is not None and view.state is State.QUEUED
    assert [(t.src, t.dst) for t in view.history] == [("accepted", "queued")]
    assert view.content == {"n": 1}


def test_enqueue_stores_the_content_intake_encoded_or_encodes_it(store: SQLStore) -> None:
    """Intake encodes the content to check its size and hands the encoding on; a message
    built elsewhere (a fallback leg, a test) has none, and the store encodes it. Every column
    of the row goes to the driver as given, in one statement for the batch."""
    content = {"title": "Hé", "n": [1, 2.5, None]}
    given = NewMessage(channel="webhook", to="https://example.com/h", content=content,
                       content_json='{"title":"Hé","n":[1,2.5,null]}')
    plain = NewMessage(channel="webhook", to="https://example.com/h", content=content,
                       topic="news", priority=0, ttl=120)
    a, b = store.enqueue([given, plain], scope="k")
    assert isinstance(a, Accepted) and isinstance(b, Accepted)
    for r, m in ((a, given), (b, plain)):
        view = store.get(r.id)
        assert view is not None and view.content == content
        assert (view.channel, view.to, view.topic) == (m.channel, m.to, m.topic)
        assert view.expires_at - view.created_at == pytest.approx(m.ttl)


def test_idempotency_replays_same_body_and_refuses_another(store: SQLStore) -> None:
    (first,) = store.enqueue([msg(idempotency_key="k1", request_hash="h1")], scope="a")
    (again,) = store.enqueue([msg(idempotency_key="k1", request_hash="h1")], scope="a")
    (other,) = store.enqueue([msg(idempotency_key="k1", request_hash="h2")], scope="a")
    (elsewhere,) = store.enqueue([msg(idempotency_key="k1", request_hash="h2")], scope="b")
    assert isinstance(first, Accepted) and isinstance(again, Accepted)
    assert again.id == first.id and again.replayed and not first.replayed
    assert isinstance(other, IdempotencyConflict)
    assert isinstance(elsewhere, Accepted) and elsewhere.id != first.id


def test_same_key_twice_in_one_batch_is_one_message(store: SQLStore) -> None:
    a, b = store.enqueue(
        [msg(idempotency_key="dup", request_hash="h"), msg(idempotency_key="dup",
                                                             request_hash="h")], scope="s")
    assert isinstance(a, Accepted) and isinstance(b, Accepted) and a.id == b.id
    assert len(store.list_messages()) == 1


def test_concurrent_requests_with_one_key_make_one_message(store_url: str,
                                                           store: SQLStore) -> None:
    barrier = threading.Barrier(6)

    def submit(_: int) -> str:
        s = SQLStore(store_url)
        try:
            barrier.wait()
            (r,) = s.enqueue([msg(idempotency_key="race", request_hash="h")], scope="s")
            assert isinstance(r, Accepted)
            return r.id
        finally:
            s.close()

    with ThreadPoolExecutor(6) as pool:
        ids = set(pool.map(submit, range(6)))
    assert len(ids) == 1
    assert len(store.list_messages()) == 1


def test_claim_order_priority_then_due_time_and_future_waits(store: SQLStore) -> None:
    now = time.time()
    bulk, = store.enqueue([msg(priority=2)], scope="s")
    normal, = store.enqueue([msg(priority=1)], scope="s")
    high, = store.enqueue([msg(priority=0)], scope="s")
    later, = store.enqueue([msg(priority=0, send_at=now + 3600)], scope="s")
    jobs = store.claim("w1", 10, 30)
    assert [j.id for j in jobs] == [high.id, normal.id, bulk.id]  # type: ignore[union-attr]
    assert later.id not in {j.id for j in jobs}  # type: ignore[union-attr]
    assert store.claim("w2", 10, 30) == []  # leased to w1


def test_concurrent_claimers_never_share_a_message(store_url: str, store: SQLStore) -> None:
    store.enqueue([msg(to=f"https://example.com/{i}") for i in range(300)], scope="s")

    def drain(name: str) -> list[str]:
        s = SQLStore(store_url)
        got: list[str] = []
        try:
            while batch := s.claim(name, 25, 60):
                got += [j.id for j in batch]
        finally:
            s.close()
        return got

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(drain, ["a", "b", "c", "d"]))
    everything = [i for r in results for i in r]
    assert len(everything) == 300 and len(set(everything)) == 300


def test_record_writes_outcome_attempt_and_suppression(store: SQLStore) -> None:
    (res,) = store.enqueue([msg(to="https://gone.example/h")], scope="s")
    (job,) = store.claim("w", 1, 30)
    failure = Failure("UNREGISTERED_TOKEN", False, "HTTP 410", "gone", "removed", "webhook")
    n = store.record("w", [Outcome(
        job.id, State.FAILED, "UNREGISTERED_TOKEN: permanent",
        attempt=Attempt(1, time.time(), "webhook", "failed", 3.0, 410, "HTTP 410",
                        "UNREGISTERED_TOKEN"),
        failure=failure, provider="webhook",
        suppress=("webhook", "https://gone.example/h", "UNREGISTERED_TOKEN"),
    )])
    assert n == 1
    view = store.get(res.id)  # type: ignore[union-attr]
    assert view is not None and view.state is State.FAILED
    assert view.failure == failure
    assert view.attempts[0].status == 410 and view.attempts[0].cause == "UNREGISTERED_TOKEN"
    (again,) = store.enqueue([msg(to="https://gone.example/h")], scope="s")
    assert isinstance(again, Accepted) and again.state is State.SUPPRESSED
    assert store.get(again.id).failure.cause == "POLICY_SUPPRESSED"  # type: ignore[union-attr]


def test_record_by_a_worker_that_lost_its_lease_changes_nothing(store: SQLStore) -> None:
    store.enqueue([msg()], scope="s")
    (job,) = store.claim("w1", 1, 30)
    late = Outcome(
        job.id, State.FAILED, "late", provider="webhook",
        attempt=Attempt(1, time.time(), "webhook", "failed", 1.0, 410, "HTTP 410",
                        "UNREGISTERED_TOKEN"),
        suppress=("webhook", job.to, "UNREGISTERED_TOKEN"),
    )
    assert store.record("intruder", [late]) == 0
    view = store.get(job.id)
    assert view is not None and view.state is State.SENDING
    assert view.attempts == [] and [t.dst for t in view.history] == ["queued", "sending"]
    assert store.suppressions() == []


def test_reap_requeues_expired_leases_and_dead_letters_crash_loops(store: SQLStore) -> None:
    (res,) = store.enqueue([msg()], scope="s")
    for round_ in range(taxonomy.INTERNAL_CRASH.max_attempts):
        jobs = store.claim("doomed", 1, -1)  # a lease that is already over
        assert len(jobs) == 1, f"round {round_}"
        assert store.reap() == 1
    view = store.get(res.id)  # type: ignore[union-attr]
    assert view is not None and view.state is State.DEAD
    assert view.failure is not None and view.failure.cause == "INTERNAL_CRASH"
    assert {a.outcome for a in view.attempts} == {"lost"}
    assert all(a.maybe_sent for a in view.attempts)


def test_list_filters_and_stats(store: SQLStore) -> None:
    store.enqueue([msg() for _ in range(3)], scope="s")
    (job, *_) = store.claim("w", 1, 30)
    store.record("w", [Outcome(job.id, State.RETRY_SCHEDULED, "r", next_at=time.time() + 60,
                               failure=Failure("PROVIDER_OUTAGE", True, "HTTP 503", "e", "f"))])
    assert len(store.list_messages(state="queued")) == 2
    assert [v.id for v in store.list_messages(cause="PROVIDER_OUTAGE")] == [job.id]
    stats = store.stats()
    assert stats.by_state == {"queued": 2, "retry_scheduled": 1}
    assert stats.oldest_due_age >= 0


def test_api_keys_are_stored_hashed_and_revocable(store: SQLStore) -> None:
    key_id, key = store.create_api_key("ci")
    assert store.api_key_id(hash_key(key)) == key_id
    with store._reader.connect() as conn:
        stored = conn.execute(select(api_keys.c.key_hash)).scalars().all()
    assert key not in stored and hash_key(key) in stored
    assert store.revoke_api_key(key_id)
    assert store.api_key_id(hash_key(key)) is None


def test_the_head_revision_constant_is_alembics_head(tmp_path: Path) -> None:
    from pushguard.store import migrations
    from pushguard.store.sql import HEAD_REVISION

    assert migrations.head() == HEAD_REVISION
    fresh = SQLStore(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        assert not fresh.schema_is_current()  # no alembic_version table at all
        with fresh._write() as conn:
            migrations.upgrade(conn, "0010")
        assert not fresh.schema_is_current()  # one migration behind
        fresh.migrate()
        assert fresh.schema_is_current()
    finally:
        fresh.close()


def test_migrations_create_exactly_the_schema(store: SQLStore) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    assert store.schema_is_current()
    with store._reader.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


@pytest.mark.parametrize("bad", ["sqlite:////nonexistent-dir/\0bad.db"])
def test_unusable_database_is_a_store_error(bad: str) -> None:
    from pushguard.exceptions import PushguardError

    with pytest.raises((PushguardError, ValueError)):
        SQLStore(bad).ping()
