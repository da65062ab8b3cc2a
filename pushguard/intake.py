"""Intake: turn a request into a validated :class:`NewMessage`, or say exactly what is wrong.

Shared by the HTTP API and the CLI, so both refuse the same inputs with the same words. Nothing
is enqueued unless it is valid; what is valid is committed before anyone is told it was accepted.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from pushguard.addresses import CHANNELS, check_header_value, normalize_address
from pushguard.config import Config
from pushguard.documents import find_problem
from pushguard.exceptions import IdempotencyConflict, InputError, NotFound
from pushguard.maildns import MailDomains
from pushguard.models import PRIORITIES, Accepted, NewMessage
from pushguard.providers.registry import provider_class
from pushguard.settings import Settings
from pushguard.ssrf import OutboundGuard
from pushguard.store.base import Store

if TYPE_CHECKING:
    from pushguard.audience.service import Audience
    from pushguard.templates.service import Templates

MAX_SEND_AHEAD = 366 * 86400


MAX_FALLBACK_LEGS = 5
#: channels whose contacts have several devices: a message to the contact goes to each
PUSH_CHANNELS = frozenset({"fcm", "apns", "webpush"})
MAX_DEVICES = 20


class FallbackLeg(BaseModel):
    """Where to try next when the message fails for good."""

    model_config = ConfigDict(extra="forbid")

    channel: str = Field(max_length=32)
    to: str = Field(min_length=1, max_length=8192)
    content: dict[str, Any]


class TemplateRef(BaseModel):
    """A stored template to render into the message's content."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, description="the template's name or id")
    version: int | None = Field(default=None, ge=1, le=1_000_000,
                                description="default: the newest")
    locale: str | None = Field(default=None, max_length=35,
                               description="default: the contact's, then the template's")
    data: dict[str, Any] = Field(default_factory=dict, description="the template's `data`")


class MessageIn(BaseModel):
    """One message as a client sends it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    channel: str = Field(max_length=32, description="webhook, email, sms, fcm, apns, webpush, chat")
    to: str | None = Field(default=None, min_length=1, max_length=8192,
                           description="the address on that channel (or give contact)")
    contact: str | None = Field(
        default=None, min_length=1, max_length=255,
        description="a contact's id or external id: without `to`, the message goes to its best "
        "active address on the channel; consent, caps and quiet hours are the contact's")
    content: dict[str, Any] | None = Field(
        default=None, description="channel-specific content (a JSON object), or use template")
    template: TemplateRef | None = Field(
        default=None, description="render a stored template (for the contact) into content")
    topic: str | None = Field(
        default=None, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$",
        description="what the message is about (consent and frequency rules use it)",
    )
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)
    priority: Literal["high", "normal", "bulk"] = "normal"
    send_at: AwareDatetime | None = Field(default=None, description="RFC 3339 time to send at")
    ttl: int | None = Field(default=None, ge=1, description="seconds the message may wait")
    fallback: list[FallbackLeg] | None = Field(
        default=None, max_length=MAX_FALLBACK_LEGS,
        description="legs tried in order when the message fails for good (e.g. push -> sms)",
    )
    confirm_within: int | None = Field(
        default=None, ge=30, le=7 * 86400,
        description="seconds: once the provider took the message, a receipt must confirm it "
        "arrived within this time, or the fallback chain starts",
    )


def request_hash(msg: NewMessage) -> str:
    """A fingerprint of what was asked, after normalisation and without the idempotency key:
    ``+1 415 555 0100`` and ``+14155550100`` are the same request."""
    body = [msg.channel, msg.to, msg.content, msg.topic, msg.priority, msg.send_at, msg.ttl,
            msg.fallback, msg.contact_id, msg.confirm_within]
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def problem_text(err: Mapping[str, Any]) -> str:
    """One pydantic error in words a person can act on."""
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "is required"
    if kind == "literal_error":  # pydantic's "'form', 'api' or 'admin'": the field's own
        expected = str((err.get("ctx") or {}).get("expected", ""))
        choices = re.findall(r"'([^']*)'", expected) or re.split(r", | or ", expected)
        return f"must be one of: {', '.join(c for c in choices if c)}"
    if kind == "timezone_aware":
        return "must be an RFC 3339 time with a timezone, e.g. 2026-01-31T09:00:00Z"
    if kind in ("dict_type", "model_attributes_type", "model_type"):
        return "must be a JSON object"
    msg = str(err.get("msg") or "is invalid")
    if kind == "value_error":  # our own validators' words, without pydantic's prefix
        msg = msg.removeprefix("Value error, ")
    return msg[0].lower() + msg[1:]


def field_path(loc: Sequence[int | str]) -> str:
    """``("fallback", 0, "to")`` -> ``fallback[0].to``."""
    out = ""
    for part in loc:
        if part in ("body", "query", "path"):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def pydantic_problems(exc: ValidationError, prefix: str = "") -> list[InputError]:
    """Pydantic's errors as ``(field, problem)`` pairs."""
    out = []
    for err in exc.errors(include_url=False):
        loc = field_path(err["loc"])
        field = f"{prefix}{loc}" if loc else (prefix.rstrip(".") or "body")
        out.append(InputError(field, problem_text(err)))
    return out


class Intake:
    def __init__(
        self, store: Store, config: Config, guard: OutboundGuard, settings: Settings,
        *, audience: Audience | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.guard = guard
        self.settings = settings
        self.audience = audience
        #: the template service, built on first use (it starts render processes)
        self.templates: Callable[[], Templates] | None = None
        self.mail_domains = MailDomains(settings.dns_server) if settings.email_dns_check \
            else None
        self._topics: dict[str, str] = {}
        self._topics_at = 0.0

    def topic_kind(self, name: str, field: str = "topic") -> str:
        """``marketing`` or ``transactional``; an unknown topic is refused. Topics are never
        deleted, so a cached hit is safe; a miss is always checked against the database."""
        if self.audience is None:
            return "transactional"
        now = time.monotonic()
        if name not in self._topics or now - self._topics_at > 5.0:
            self._topics = self.audience.topic_kinds()
            self._topics_at = now
        kind = self._topics.get(name)
        if kind is None:
            raise InputError(field, f"unknown topic {name!r}; create it first (pushguard "
                             "topics add, or POST /v1/topics)")
        return kind

    def parse(self, raw: Any, *, prefix: str = "", check: bool = True) -> MessageIn:
        """A message from JSON. ``check``: whether it may hold what the store cannot (a
        lone surrogate, deep nesting); False when its bytes were already judged clean (a
        batch's body, :func:`pushguard.api.body.suspect_body`)."""
        if not isinstance(raw, dict):
            raise InputError(prefix.rstrip(".") or "body", "must be a JSON object")
        problem = find_problem(raw) if check else None
        if problem is not None:
            field, what = problem
            raise InputError(prefix + field if field != "body" else prefix.rstrip(".") or
                             "body", what)
        try:
            return MessageIn.model_validate(raw)
        except ValidationError as exc:
            problems = pydantic_problems(exc, prefix)
            raise problems[0] from exc

    def prepare(
        self, item: MessageIn, *, header_key: str | None = None, prefix: str = "",
        memo: dict[tuple[str, str], str] | None = None,
    ) -> NewMessage:
        """Validate one message; raise ``InputError`` naming the field and the problem.

        ``memo`` remembers normalised addresses across the messages of one batch (a campaign
        often sends many messages to few endpoints); the send-time checks still run."""
        def f(name: str) -> str:
            return prefix + name

        contact_id = None
        to_raw = item.to
        devices: list[str] = []
        if item.topic is not None:
            self.topic_kind(item.topic, f("topic"))
        if item.contact is not None:
            if self.audience is None:
                raise InputError(f("contact"), "this store keeps no contacts")
            try:
                if to_raw is None:
                    contact_id, found = self.audience.active_addresses(item.contact,
                                                                       item.channel)
                    to_raw = found[0]
                    if item.channel in PUSH_CHANNELS:
                        devices = found[1:MAX_DEVICES]
                else:
                    contact_id = self.audience.resolve(item.contact)
            except NotFound as exc:
                raise InputError(f("contact"), exc.message) from exc
            except InputError as exc:
                raise InputError(f("contact"), exc.problem) from exc
        if to_raw is None:
            raise InputError(f("to"), "is required (or name a contact)")
        if (item.content is None) == (item.template is None):
            raise InputError(f("content"), "give either content or template (one of them)")
        if contact_id is not None and item.to is not None:
            to_raw = self._held_by(contact_id, item.channel, to_raw, f("to"), memo)
        content = item.content if item.template is None else self._render(
            item.template, item.channel, contact_id, f("template"))
        assert content is not None
        to, encoded = self._checked(item.channel, to_raw, content, prefix, memo)
        key = item.idempotency_key
        if header_key is not None:
            if key is not None and key != header_key:
                raise InputError(
                    f("idempotency_key"), "differs from the Idempotency-Key header"
                )
            key = header_key
        if key is not None:
            check_header_value(key, f("idempotency_key"))
        legs = [
            {"channel": leg.channel,
             "to": self._target(leg.channel, leg.to, leg.content, f"{prefix}fallback[{i}].",
                                memo),
             "content": leg.content}
            for i, leg in enumerate(item.fallback or [])
        ]
        ttl = item.ttl if item.ttl is not None else self.settings.default_ttl
        if ttl > self.settings.max_ttl:
            raise InputError(f("ttl"), f"must be at most {self.settings.max_ttl} seconds")
        send_at = _timestamp(item.send_at)
        if send_at is not None and send_at > time.time() + MAX_SEND_AHEAD:
            raise InputError(f("send_at"), "must be within a year from now")
        msg = NewMessage(
            channel=item.channel,
            to=to,
            content=content,
            topic=item.topic,
            priority=PRIORITIES[item.priority],
            send_at=send_at,
            ttl=ttl,
            idempotency_key=key,
            fallback=legs,
            contact_id=contact_id,
            confirm_within=item.confirm_within,
            template=item.template.name if item.template is not None else None,
            content_json=encoded,
        )
        if item.confirm_within is not None and not legs:
            raise InputError(f("confirm_within"), "needs a fallback chain to fall back to")
        if key is not None:
            msg.request_hash = request_hash(msg)
        for i, device in enumerate(devices, start=1):
            one = NewMessage(
                channel=msg.channel, to=self._address(msg.channel, device, prefix, memo),
                content=msg.content, topic=msg.topic, priority=msg.priority,
                send_at=msg.send_at, ttl=msg.ttl,
                idempotency_key=f"{key}#device{i}" if key is not None else None,
                fallback=legs, contact_id=contact_id, confirm_within=item.confirm_within,
                fanout_of=msg.id, template=msg.template, content_json=encoded,
            )
            if key is not None:
                one.request_hash = request_hash(one)
            msg.fanout.append(one)
        return msg

    def _render(self, ref: TemplateRef, channel: str, contact_id: str | None,
                field: str) -> dict[str, Any]:
        """Render a template into this channel's content (at intake: a template that cannot
        render for this contact is refused now, naming the problem)."""
        from pushguard.templates.content import TEMPLATE_CHANNEL, message_content
        from pushguard.templates.errors import TemplateError

        if self.templates is None:
            raise InputError(field, "this store keeps no templates")
        wanted = TEMPLATE_CHANNEL.get(channel)
        try:
            got = self.templates().render(ref.name, contact=contact_id, data=ref.data,
                                          locale=ref.locale, version=ref.version)
        except TemplateError as exc:
            raise InputError(field, exc.detail) from exc
        except NotFound as exc:
            raise InputError(field + ".name", exc.message) from exc
        except InputError as exc:
            raise InputError(f"{field}.{exc.field}", exc.problem) from exc
        if got["channel"] != wanted:
            raise InputError(field + ".name", f"{ref.name!r} is a {got['channel']} template; "
                             f"a {channel} message needs a {wanted} one")
        return message_content(got["content"], channel)

    def _held_by(self, contact_id: str, channel: str, to: str, field: str,
                 memo: dict[tuple[str, str], str] | None) -> str:
        """A message naming a contact and an address: the address must be one of the
        contact's active ones, or the contact's consent would stand in for its holder's."""
        assert self.audience is not None
        # the normal form only: _target validates and resolves the address afterwards
        address = normalize_address(channel, to, guard=self.guard, field=field, resolve=False)
        _, held = self.audience.active_addresses(contact_id, channel)
        if address not in held:
            raise InputError(field, f"is not an active {channel} address of that contact; "
                             "leave out 'to' to use the contact's own address")
        return address

    def _target(
        self, channel: str, to: str, content: dict[str, Any], prefix: str,
        memo: dict[tuple[str, str], str] | None = None, *, stored: bool = False,
    ) -> str:
        """Check one channel + address + content; returns the normalised address.
        ``stored``: the address is a contact's, normalised when it was written (a campaign's
        fan-out), so only the content is checked."""
        return self._checked(channel, to, content, prefix, memo, stored=stored)[0]

    def _checked(
        self, channel: str, to: str, content: dict[str, Any], prefix: str,
        memo: dict[tuple[str, str], str] | None = None, *, stored: bool = False,
    ) -> tuple[str, str]:
        """:meth:`_target`, also returning the content as stored (its size was checked on
        that encoding, which the store then reuses instead of encoding it again)."""
        address = self._address(channel, to, prefix, memo, stored=stored)
        encoded = json.dumps(content, separators=(",", ":"))
        size = len(encoded.encode())
        if size > self.settings.max_content_bytes:
            raise InputError(
                prefix + "content",
                f"is {size} bytes; the limit is {self.settings.max_content_bytes}",
            )
        for pc in self.config.providers_for(channel):
            try:
                provider_class(pc.type).validate_content(channel, content)
            except InputError as exc:
                raise InputError(prefix + exc.field, exc.problem) from exc
        return address, encoded

    def _address(
        self, channel: str, to: str, prefix: str,
        memo: dict[tuple[str, str], str] | None = None, *, stored: bool = False,
    ) -> str:
        """The channel checked and the address normalised (:meth:`_checked` without the
        content: a device copy carries content already checked for the same channel)."""
        if channel not in CHANNELS:
            raise InputError(
                prefix + "channel",
                f"unknown channel {channel!r}; expected one of: {', '.join(sorted(CHANNELS))}",
            )
        if channel not in self.config.channels:
            raise InputError(
                prefix + "channel",
                f"no provider is configured for channel {channel!r} "
                f"(configured: {', '.join(sorted(self.config.channels))})",
            )
        address = to if stored else (memo.get((channel, to)) if memo is not None else None)
        if address is None:
            address = normalize_address(channel, to, guard=self.guard, field=prefix + "to")
            if channel == "email" and self.mail_domains is not None:
                self.mail_domains.check(address, prefix + "to")
            if memo is not None:
                memo[(channel, to)] = address
        return address

    def submit(
        self, messages: Sequence[NewMessage], *, scope: str
    ) -> list[Accepted | IdempotencyConflict]:
        """Commit ``messages`` and their fan-out in one transaction; one result per message,
        its fan-out's results inside it."""
        if not any(m.fanout for m in messages):
            return self.store.enqueue(messages, scope=scope)
        flat = [x for m in messages for x in (m, *m.fanout)]
        results = iter(self.store.enqueue(flat, scope=scope))
        out: list[Accepted | IdempotencyConflict] = []
        for m in messages:
            first = next(results)
            rest = tuple(next(results) for _ in m.fanout)
            out.append(Accepted(first.id, first.state, first.replayed, rest)
                       if isinstance(first, Accepted) else first)
        return out


def _timestamp(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()
