"""Fixtures for template tests: a render pool, the template service over a real store, a
link server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pushguard.audience.models import ContactIn, TopicIn
from pushguard.audience.service import Audience, normalise_contact
from pushguard.ssrf import OutboundGuard
from pushguard.store.sql import SQLStore
from pushguard.templates.linkcheck import LinkChecker
from pushguard.templates.pool import RenderPool
from pushguard.templates.service import Templates
from tests.templates.linkserver import LinkServer, link_server


@pytest.fixture
def guard() -> OutboundGuard:
    return OutboundGuard(["127.0.0.1"])


@pytest.fixture
def pool() -> Iterator[RenderPool]:
    p = RenderPool(size=2, time_limit=0.5, max_output=64 * 1024)
    yield p
    p.close()


@pytest.fixture
def svc(store: SQLStore, guard: OutboundGuard, pool: RenderPool) -> Templates:
    return Templates(store, guard, pool=pool, checker=LinkChecker(guard, timeout=1.0))


@pytest.fixture
def audience(store: SQLStore, guard: OutboundGuard) -> Audience:
    return Audience(store, guard)


def add_contacts(audience: Audience, *contacts: dict[str, Any]) -> None:
    audience.upsert([normalise_contact(ContactIn.model_validate(c), audience.guard)
                     for c in contacts])


def add_topic(audience: Audience, name: str, kind: str) -> None:
    audience.put_topic(TopicIn(name=name, kind=kind, description=name))


@pytest.fixture
def links() -> Iterator[LinkServer]:
    with link_server() as server:
        yield server
