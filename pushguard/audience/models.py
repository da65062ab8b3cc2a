"""What clients send about contacts, topics and consent, and how it is checked.

Every model forbids unknown fields, and none of them can set consent or suppression: those
change only through their own endpoints, which record who, when, how and the proof
(mass assignment, OWASP API3).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pushguard.audience.rules import Cap, QuietHours, check_timezone
from pushguard.exceptions import InputError

EXTERNAL_ID = r"^[^\x00-\x1f\x7f]{1,255}$"
LOCALE = r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$"
TOPIC_NAME = r"^[A-Za-z0-9_.:\-]{1,128}$"
#: fields that look settable on a contact but are not: they have their own endpoints.
GUARDED_FIELDS = {
    "consent": "consent changes only through POST /v1/contacts/{id}/consent, with its source "
    "and proof",
    "consents": "consent changes only through POST /v1/contacts/{id}/consent, with its source "
    "and proof",
    "suppressed": "suppression changes only through /v1/suppressions (audited)",
    "suppression": "suppression changes only through /v1/suppressions (audited)",
    "status": "an address is deactivated through POST /v1/contacts/{id}/addresses/{aid}/status",
    "id": "ids are assigned by pushguard; use external_id",
}


MAX_ATTRIBUTES_BYTES = 16 * 1024
MAX_ATTRIBUTES_DEPTH = 8


def _shallow(value: Any, depth: int) -> None:
    """Refuse attributes nested deeper than a person's data needs (and than JSON tools and
    templates cope with)."""
    if depth > MAX_ATTRIBUTES_DEPTH:
        raise ValueError(f"are nested deeper than {MAX_ATTRIBUTES_DEPTH} levels")
    if isinstance(value, dict):
        for v in value.values():
            _shallow(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _shallow(v, depth + 1)


def _problem(exc: Exception) -> str:
    return str(exc)


class AddressIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: str = Field(max_length=32, description="email, sms, fcm, apns, webpush, chat, "
                         "webhook")
    address: str = Field(min_length=1, max_length=8192)
    platform: Literal["ios", "android", "web"] | None = None
    environment: Literal["production", "sandbox"] | None = None
    verified: bool = False
    #: when the address was last seen in use (UNIX seconds): a new address defaults to now;
    #: an existing one changes only when this is given, and never into the future
    last_seen: float | None = Field(default=None, ge=0)

    @field_validator("last_seen")
    @classmethod
    def _not_future(cls, v: float | None) -> float | None:
        import time

        if v is not None and v > time.time() + 300:
            raise ValueError("is in the future")
        return v


class ContactIn(BaseModel):
    """A contact to create or update (matched on ``external_id``)."""

    model_config = ConfigDict(extra="forbid")

    external_id: str = Field(pattern=EXTERNAL_ID, description="your id for this person")
    attributes: dict[str, Any] | None = Field(
        default=None, description="merged into the stored attributes; a null value removes "
        "the key")
    timezone: str | None = Field(default=None, max_length=64, description="IANA name")
    locale: str | None = Field(default=None, max_length=35, pattern=LOCALE)
    quiet_hours: str | None = Field(default=None, max_length=16,
                                    description="HH:MM-HH:MM in the contact's timezone")
    addresses: list[AddressIn] = Field(default_factory=list, max_length=100)

    @field_validator("attributes")
    @classmethod
    def _attrs(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            _shallow(v, depth=0)
            if len(json.dumps(v, separators=(",", ":"))) > MAX_ATTRIBUTES_BYTES:
                raise ValueError(f"are larger than {MAX_ATTRIBUTES_BYTES} bytes as JSON")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            return check_timezone(v)
        except InputError as exc:
            raise ValueError(exc.problem) from None

    @field_validator("quiet_hours")
    @classmethod
    def _qh(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        try:
            return str(QuietHours.parse(v))
        except InputError as exc:
            raise ValueError(exc.problem) from None


class TopicIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=TOPIC_NAME)
    kind: Literal["marketing", "transactional"]
    description: str = Field(default="", max_length=1000)
    double_opt_in: bool = Field(default=False, description="subscribing sends a confirmation "
                                "first; consent is granted only when it is confirmed")
    cap: str | None = Field(default=None, description="e.g. 3/1d: per contact, this topic")
    quiet_hours: str | None = Field(default=None, description="overrides the default window")

    @field_validator("cap")
    @classmethod
    def _cap(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        try:
            Cap.parse(v)
        except InputError as exc:
            raise ValueError(exc.problem) from None
        return v.strip()

    @field_validator("quiet_hours")
    @classmethod
    def _qh(cls, v: str | None) -> str | None:
        return ContactIn._qh(v)


CONSENT_SOURCES = ("form", "api", "import", "admin", "double_opt_in", "unsubscribe",
                   "preferences", "sms_keyword", "complaint")
#: sources a client may name when it records consent through the API
CLIENT_SOURCES = ("form", "api", "import", "admin")


class ConsentIn(BaseModel):
    """One consent change, as the API records it."""

    model_config = ConfigDict(extra="forbid")

    topic: str = Field(pattern=TOPIC_NAME)
    channel: Literal["email", "sms", "push", "webpush", "chat", "webhook"]
    status: Literal["granted", "withdrawn"]
    source: Literal["form", "api", "import", "admin"] = "api"
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=1024)
    proof: str | None = Field(default=None, max_length=4096,
                              description="evidence: a form id, a recording, a ticket")
    policy_version: str | None = Field(default=None, max_length=64)


class SubscribeIn(BaseModel):
    """A subscription request: confirmed opt-in when the topic asks for it."""

    model_config = ConfigDict(extra="forbid")

    topic: str = Field(pattern=TOPIC_NAME)
    channel: Literal["email", "sms", "push", "webpush", "chat", "webhook"]
    source: Literal["form", "api", "import", "admin"] = "form"
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=1024)
    policy_version: str | None = Field(default=None, max_length=64)


class AddressStatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["active", "deactivated"]
    reason: str = Field(min_length=1, max_length=64)
    evidence: str | None = Field(default=None, max_length=4096)


def guarded(raw: Any, prefix: str = "") -> None:
    """Refuse a contact body that tries to set consent, suppression or ids."""
    if isinstance(raw, dict):
        for key, why in GUARDED_FIELDS.items():
            if key in raw:
                raise InputError(prefix + key, f"cannot be set here: {why}")
