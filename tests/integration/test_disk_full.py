"""A full disk (SQLite's real SQLITE_FULL, through max_page_count) loses nothing: intake
answers 503 and accepts nothing; a worker keeps its outcomes until it can write them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from pushguard.app import App
from pushguard.config import Config, ProviderConfig, RetryConfig
from pushguard.models import NewMessage
from pushguard.providers.fake import FakeProvider
from pushguard.settings import Settings
from pushguard.states import State
from pushguard.store.sql import SQLStore
from tests.conftest import serve_api


class Disk:
    """Makes the SQLite database 'full' for every write transaction while ``full`` is set."""

    def __init__(self, store: SQLStore) -> None:
        self.full = False
        event.listen(store._writer, "checkout", self._checkout)

    def _checkout(self, dbapi: Any, _record: Any, _proxy: Any) -> None:
        cur = dbapi.cursor()
        if self.full:
            pages = cur.execute("PRAGMA page_count").fetchone()[0]
            cur.execute(f"PRAGMA max_page_count={pages}")
        else:
            cur.execute("PRAGMA max_page_count=1073741823")
        cur.close()


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[SQLStore]:
    store = SQLStore(sqlite_url)
    store.migrate()
    yield store
    store.close()


def test_intake_answers_503_and_accepts_nothing_while_the_disk_is_full(
    sqlite_store: SQLStore,
) -> None:
    app = App(settings=Settings(outbound_allow="127.0.0.1"), store=sqlite_store,
              config=Config(channels={"webhook": ("webhook",)},
                            providers={"webhook": ProviderConfig("webhook", "fake")}))
    _, key = sqlite_store.create_api_key("t")
    disk = Disk(sqlite_store)
    body = {"channel": "webhook", "to": "http://127.0.0.1/h", "content": {"x": "y" * 20000}}
    with serve_api(app) as url, httpx.Client(base_url=url) as client:
        auth = {"Authorization": f"Bearer {key}"}
        disk.full = True
        refused = [client.post("/v1/messages", json=body, headers=auth) for _ in range(5)]
        disk.full = False
        accepted = client.post("/v1/messages", json=body, headers=auth)
    assert {r.status_code for r in refused} == {503}
    assert refused[0].json()["error"]["type"] == "store_unavailable"
    assert refused[0].headers["Retry-After"] == "1"
    assert accepted.status_code == 202
    assert len(sqlite_store.list_messages()) == 1


async def test_worker_keeps_outcomes_until_it_can_write_them(sqlite_store: SQLStore) -> None:
    config = Config(
        channels={"webhook": ("fake",)},
        providers={"fake": ProviderConfig("fake", "fake", {"delay": 0.3})},
        retry=RetryConfig(base=0.01, cap=0.05),
    )
    app = App(settings=Settings(), store=sqlite_store, config=config)
    ids = [r.id for r in sqlite_store.enqueue(  # type: ignore[union-attr]
        [NewMessage("webhook", f"a{i}", {"i": i}) for i in range(200)], scope="t")]
    disk = Disk(sqlite_store)
    providers = app.build_providers()
    # 200 outcomes in one write need new pages in every table they touch, so "full" bites.
    worker = app.build_worker(providers, poll=0.02, concurrency=200, batch=200)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    for _ in range(200):  # wait until all are claimed and in flight at the provider
        if sqlite_store.stats().by_state.get("sending") == 200:
            break
        await asyncio.sleep(0.01)
    disk.full = True
    for _ in range(300):  # deliveries finish; their outcomes cannot be written
        if worker.store_errors and worker.processed == 200:
            break
        await asyncio.sleep(0.01)
    assert worker.store_errors > 0
    # Outcomes are held, not lost (a small early flush may still fit in free page space).
    assert sqlite_store.stats().by_state.get("sending", 0) > 0
    disk.full = False
    for _ in range(100):
        await asyncio.sleep(0.05)
        if not sqlite_store.stats().by_state:
            break
    stop.set()
    await task
    fake = providers["fake"]
    assert isinstance(fake, FakeProvider)
    assert sorted(d.message_id for d in fake.sent) == sorted(ids)  # each sent exactly once
    assert {sqlite_store.get(i).state for i in ids} == {State.DELIVERED}  # type: ignore[union-attr]
