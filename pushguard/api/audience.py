"""Contacts, topics, consent and suppressions over HTTP: a thin edge over
:class:`pushguard.audience.service.Audience`.

Contact bodies cannot set consent, suppression or ids (mass assignment): each has its own
endpoint, which records who changed it, when, how and with what proof.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, Field, ValidationError

from pushguard.api import errors
from pushguard.api.auth import Auth
from pushguard.api.body import CheckedRoute
from pushguard.api.errors import AUTHED
from pushguard.audience.models import (
    AddressStatusIn,
    ConsentIn,
    ContactIn,
    TopicIn,
    guarded,
)
from pushguard.audience.service import ConsentRecord, normalise_contact
from pushguard.exceptions import InputError, NotFound, PushguardError
from pushguard.intake import pydantic_problems
from pushguard.views import rfc3339

if TYPE_CHECKING:
    from pushguard.app import App

MAX_BULK = 1000


class SuppressionIn(BaseModel):
    channel: str = Field(max_length=32)
    address: str = Field(min_length=1, max_length=8192)
    reason: str = Field(default="manual", pattern=r"^[a-z_]{1,32}$")
    note: str = Field(default="", max_length=1000)


def parse_contact(app: App, raw: Any, prefix: str = "") -> Any:
    if not isinstance(raw, dict):
        raise InputError(prefix.rstrip(".") or "body", "must be a JSON object")
    guarded(raw, prefix)
    try:
        item = ContactIn.model_validate(raw)
    except ValidationError as exc:
        raise pydantic_problems(exc, prefix)[0] from exc
    return normalise_contact(item, app.guard, prefix)


def audience_router(app: App) -> APIRouter:
    router = APIRouter(route_class=CheckedRoute, responses=AUTHED)
    aud = app.audience

    # -- topics -----------------------------------------------------------------------------

    @router.post("/v1/topics", status_code=201, tags=["audience"])
    def put_topic(topic: TopicIn, key_id: Auth) -> dict[str, Any]:
        """Create or change a topic: marketing or transactional, confirmed opt-in, cap,
        quiet hours."""
        return aud.put_topic(topic, actor=f"key:{key_id}")

    @router.get("/v1/topics", tags=["audience"])
    def list_topics(_: Auth) -> dict[str, Any]:
        return {"topics": aud.topics()}

    # -- contacts ---------------------------------------------------------------------------

    @router.post("/v1/contacts", status_code=200, tags=["audience"])
    def upsert_contact(key_id: Auth, raw: Annotated[Any, Body()]) -> dict[str, Any]:
        """Create or update one contact, matched on ``external_id``; addresses are added
        (deactivate one through its status endpoint)."""
        (res,) = aud.upsert([parse_contact(app, raw)], actor=f"key:{key_id}")
        return {**aud.contact(res.id), "created": res.created}

    @router.post("/v1/contacts/bulk", tags=["audience"])
    def upsert_contacts(key_id: Auth, raw: Annotated[Any, Body()]) -> Any:
        """Up to 1000 contacts in one transaction; each gets its own result, an invalid one
        its own error naming the field."""
        items = raw.get("contacts") if isinstance(raw, dict) else None
        if not isinstance(items, list) or not 0 < len(items) <= MAX_BULK:
            raise InputError("contacts", f"must be a list of 1 to {MAX_BULK} contacts")
        results: list[dict[str, Any] | None] = [None] * len(items)
        valid, where = [], []
        for i, one in enumerate(items):
            try:
                valid.append(parse_contact(app, one, f"contacts[{i}]."))
                where.append(i)
            except InputError as exc:
                results[i] = {"index": i, **errors.describe(exc)[1]}
        if valid:
            done = {r.external_id: r for r in aud.upsert(valid, actor=f"key:{key_id}")}
            for i, c in zip(where, valid, strict=True):
                r = done[c.external_id]
                results[i] = {"index": i, "id": r.id, "external_id": r.external_id,
                              "created": r.created}
        out = [r for r in results if r is not None]
        ok = sum(1 for r in out if "id" in r)
        return {"accepted": ok, "rejected": len(items) - ok, "results": out}

    @router.get("/v1/contacts", tags=["audience"])
    def list_contacts(
        _: Auth, after: Annotated[str | None, Query(max_length=40)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> dict[str, Any]:
        page = aud.contacts(limit=limit, after=after)
        return {"contacts": page,
                "next_cursor": page[-1]["id"] if len(page) == limit else None}

    @router.get("/v1/contacts/{ref}", tags=["audience"])
    def get_contact(ref: str, _: Auth) -> dict[str, Any]:
        """A contact by id or external id, with addresses and current consent."""
        return aud.contact(ref)

    @router.delete("/v1/contacts/{ref}", tags=["audience"])
    def erase_contact(ref: str, key_id: Auth) -> dict[str, Any]:
        """Erase a contact: only a hashed suppression entry per address is kept."""
        return aud.erase(ref, actor=f"key:{key_id}")

    @router.get("/v1/contacts/{ref}/export", tags=["audience"])
    def export_contact(ref: str, _: Auth) -> dict[str, Any]:
        """Everything held about a contact."""
        return aud.export(ref)

    @router.post("/v1/contacts/{ref}/addresses/{address_id}/status", tags=["audience"])
    def address_status(ref: str, address_id: str, body: AddressStatusIn,
                       key_id: Auth) -> dict[str, Any]:
        """Deactivate (or reactivate) an address, with the reason and evidence (audited)."""
        return aud.set_address_status(ref, address_id, body.status, body.reason,
                                      body.evidence, actor=f"key:{key_id}")

    # -- consent ----------------------------------------------------------------------------

    @router.post("/v1/contacts/{ref}/consent", status_code=201, tags=["audience"])
    def record_consent(ref: str, body: ConsentIn, key_id: Auth) -> dict[str, Any]:
        """Append a consent change to the ledger (granted or withdrawn) with its proof. A
        topic that needs confirmed opt-in cannot be granted here without proof: subscribe
        through /v1/contacts/{ref}/subscriptions instead."""
        cid = aud.resolve(ref)
        try:
            topic = aud.topic(body.topic)
        except NotFound as exc:
            raise InputError("topic", exc.message) from exc
        if body.status == "granted" and topic["double_opt_in"] and not aud.confirmed(
                cid, body.topic, body.channel, body.proof):
            raise InputError("proof", f"topic {body.topic!r} needs confirmed opt-in: send the "
                             "confirmation through /v1/contacts/{ref}/subscriptions, or give "
                             "the id of a confirmation this contact completed")
        (lid,) = aud.record_consent([ConsentRecord(
            cid, body.topic, body.channel, body.status, body.source, time.time(), body.ip,
            body.user_agent, body.proof, body.policy_version or app.config.audience.policy_version,
            f"key:{key_id}")])
        return {"ledger_id": lid, "contact_id": cid, "topic": body.topic,
                "channel": body.channel, "status": body.status}

    @router.get("/v1/contacts/{ref}/consent", tags=["audience"])
    def consent_ledger(ref: str, _: Auth) -> dict[str, Any]:
        """The whole consent ledger of a contact, oldest first, and the current state."""
        contact = aud.contact(ref)
        return {"contact_id": contact["id"], "current": contact["consent"],
                "ledger": aud.ledger(ref)}

    # -- suppressions -----------------------------------------------------------------------

    @router.post("/v1/suppressions", status_code=201, tags=["audience"])
    def add_suppression(body: SuppressionIn, key_id: Auth) -> dict[str, Any]:
        """Suppress an address on a channel (audited)."""
        address = _normal(app, body.channel, body.address)
        app.store.suppress(body.channel, address, body.reason,
                           body.note or f"manual, key {key_id}", actor=f"key:{key_id}")
        return {"channel": body.channel, "address": address, "reason": body.reason}

    @router.delete("/v1/suppressions/{channel}", tags=["audience"])
    def remove_suppression(
        channel: str, key_id: Auth,
        address: Annotated[str, Query(min_length=1, max_length=8192)],
        note: Annotated[str, Query(max_length=1000)] = "",
    ) -> dict[str, Any]:
        """Lift a suppression (audited: who, when, what it was)."""
        normal = _normal(app, channel, address)
        if not app.store.unsuppress(channel, normal, actor=f"key:{key_id}", note=note):
            raise NotFound(f"{normal} is not suppressed on {channel}")
        return {"channel": channel, "address": normal, "removed": True}

    @router.get("/v1/audit", tags=["audience"])
    def audit_entries(
        _: Auth, subject: Annotated[str | None, Query(max_length=300)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """The audit log, newest first: suppressions, address status, fixes, erasures."""
        return {"entries": [{**e, "at": rfc3339(e["at"])}
                            for e in aud.audit(subject=subject, limit=limit)]}

    return router


def _normal(app: App, channel: str, address: str) -> str:
    from pushguard.addresses import normalize_address

    try:
        return normalize_address(channel, address, guard=app.guard, field="address",
                                 resolve=False)
    except InputError as exc:
        if exc.field == "to":
            raise InputError("address", exc.problem) from exc
        raise
    except PushguardError:
        raise
