"""What a template holds for each channel, how it splits into fields to render, and locales.

A template's content is JSON, per channel::

    email    {"subject", "html"?, "text"?, "from"?, "reply_to"?}   subject and html or text
    push     {"title"?, "body"?, "image"?, "data"?: {key: str}}      title or body
    sms      {"text"}
    webhook  {"json": {...}}                                         every string in it
    layout   the fields of its channel that wrap a message: email html/text, push body,
             sms text; each holds {% block content %}{% endblock %}
    partial  {"body"}                                                {% include "name" %}

Every string is a Jinja template. Header-bound fields (email subject, from, reply_to; a push
title, which is one line on every device) must render without CR, LF or NUL. Only ``html`` is
autoescaped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pushguard.exceptions import InputError

Mode = Literal["html", "text"]

CHANNELS = ("email", "push", "sms", "webhook")
KINDS = ("message", "layout", "partial")
#: the channel recorded for a partial, which any template may include
ANY = "any"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}\Z")
DEFAULT_LOCALE = "default"
MAX_SOURCE = 200_000
MAX_JSON_DEPTH = 8
MAX_DATA_KEYS = 100

#: field -> how it renders, per channel; the first field of each tuple is required
MESSAGE_FIELDS: dict[str, dict[str, Mode]] = {
    "email": {"subject": "text", "html": "html", "text": "text", "from": "text",
              "reply_to": "text"},
    "push": {"title": "text", "body": "text", "image": "text"},
    "sms": {"text": "text"},
    "webhook": {},
}
HEADER_FIELDS: dict[str, frozenset[str]] = {
    "email": frozenset({"subject", "from", "reply_to"}),
    "push": frozenset({"title"}),
}
LAYOUT_FIELDS: dict[str, tuple[str, ...]] = {
    "email": ("html", "text"), "push": ("body",), "sms": ("text",),
}
#: the block a layout puts the message's field into
BLOCK = "content"


@dataclass(frozen=True, slots=True)
class Field:
    """One string of a template's content, to be rendered on its own."""

    path: str  # "subject", "data.order_id", "json.items[0].name"
    source: str
    mode: Mode
    header: bool = False


def check_name(name: str, field: str = "name") -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise InputError(field, "must be 1 to 128 characters of A-Z a-z 0-9 _ . - "
                         "starting with a letter or digit")
    return name


def normalize_locale(raw: str | None, field: str = "locale") -> str:
    """``fr_ca`` -> ``fr-CA``; ``None``, ``""`` and ``default`` -> ``default``."""
    if raw is None or raw.strip() in ("", DEFAULT_LOCALE):
        return DEFAULT_LOCALE
    parts = re.split(r"[-_]", raw.strip())
    if not re.fullmatch(r"[A-Za-z]{2,3}", parts[0]) or not all(
            re.fullmatch(r"[A-Za-z0-9]{2,8}", p) for p in parts[1:]) or len(parts) > 4:
        raise InputError(field, f"{raw!r} is not a language tag like fr, fr-CA or zh-Hant-TW")
    out = [parts[0].lower()]
    for p in parts[1:]:
        if len(p) == 2 and p.isalpha():
            out.append(p.upper())
        elif len(p) == 4 and p.isalpha():
            out.append(p.title())
        else:
            out.append(p.lower())
    return "-".join(out)


def fallbacks(locale: str | None) -> list[str]:
    """Where a contact's locale looks for a version: ``fr-CA`` -> ``fr-CA, fr, default``.
    An unreadable locale (contacts are imported from anywhere) goes straight to default."""
    try:
        tag = normalize_locale(locale)
    except InputError:
        return [DEFAULT_LOCALE]
    chain = []
    parts = tag.split("-") if tag != DEFAULT_LOCALE else []
    while parts:
        chain.append("-".join(parts))
        parts.pop()
    return [*chain, DEFAULT_LOCALE]


def pick_locale(locale: str | None, available: Mapping[str, Any] | set[str]) -> str | None:
    """The first of :func:`fallbacks` that has a version, or None."""
    return next((c for c in fallbacks(locale) if c in available), None)


def _source(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise InputError(field, f"must be a string (a template), not {type(value).__name__}")
    if len(value) > MAX_SOURCE:
        raise InputError(field, f"is {len(value)} characters; the limit is {MAX_SOURCE}")
    if "\x00" in value:
        raise InputError(field, "must not contain NUL characters")
    return value


def _unknown(content: Mapping[str, Any], allowed: set[str], what: str) -> None:
    extra = sorted(set(content) - allowed)
    if extra:
        raise InputError(f"content.{extra[0]}", f"is not a field of {what}; expected one of "
                         f"{', '.join(sorted(allowed))}")


def validate(kind: str, channel: str, content: Any) -> dict[str, Any]:
    """Refuse content that is not the shape of its kind and channel; raise ``InputError``
    naming the field. Returns the content (a plain dict)."""
    if not isinstance(content, dict):
        raise InputError("content", "must be a JSON object")
    if kind == "partial":
        _unknown(content, {"body"}, "a partial")
        _source(content.get("body"), "content.body")
        return dict(content)
    if channel not in CHANNELS:
        raise InputError("channel", f"must be one of {', '.join(CHANNELS)}")
    if kind == "layout":
        allowed = set(LAYOUT_FIELDS.get(channel, ()))
        if not allowed:
            raise InputError("kind", f"{channel} templates have no layouts")
        _unknown(content, allowed, f"a {channel} layout")
        if not content:
            raise InputError("content", f"a {channel} layout needs one of "
                             f"{', '.join(sorted(allowed))}")
        for key, value in content.items():
            _source(value, f"content.{key}")
        return dict(content)
    if kind != "message":
        raise InputError("kind", f"must be one of {', '.join(KINDS)}")
    if channel == "webhook":
        _unknown(content, {"json"}, "a webhook template")
        if not isinstance(content.get("json"), dict):
            raise InputError("content.json", "is required: the JSON object to send")
        for _ in _json_fields(content["json"], "json", 0):
            pass
        return dict(content)
    fields = MESSAGE_FIELDS[channel]
    _unknown(content, set(fields) | ({"data"} if channel == "push" else set()),
             f"a {channel} template")
    for key, value in content.items():
        if key != "data":
            _source(value, f"content.{key}")
    if channel == "email":
        if not content.get("subject"):
            raise InputError("content.subject", "is required for email")
        if not content.get("html") and not content.get("text"):
            raise InputError("content.text", "email needs a text or an html body (or both)")
    elif channel == "push":
        if not content.get("title") and not content.get("body"):
            raise InputError("content.body", "a push needs a title or a body")
        data = content.get("data", {})
        if not isinstance(data, dict):
            raise InputError("content.data", "must be an object of strings")
        if len(data) > MAX_DATA_KEYS:
            raise InputError("content.data", f"has {len(data)} keys; the limit is "
                             f"{MAX_DATA_KEYS}")
        for key, value in data.items():
            if not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", key):
                raise InputError(f"content.data.{key}", "keys must be 1 to 64 characters of "
                                 "A-Z a-z 0-9 _ -")
            _source(value, f"content.data.{key}")
    elif channel == "sms" and not content.get("text"):
        raise InputError("content.text", "is required for SMS")
    return dict(content)


def _json_fields(value: Any, path: str, depth: int) -> Iterator[Field]:
    if depth > MAX_JSON_DEPTH:
        raise InputError(f"content.{path}", f"nests deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        yield Field(path, _source(value, f"content.{path}"), "text")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _json_fields(v, f"{path}.{k}", depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _json_fields(v, f"{path}[{i}]", depth + 1)


def fields(kind: str, channel: str, content: Mapping[str, Any]) -> list[Field]:
    """The strings of ``content`` to render, each with its path and mode."""
    if kind == "partial":
        return [Field("body", content["body"], "text")]
    if kind == "layout":
        return [Field(k, v, "html" if k == "html" else "text") for k, v in content.items()]
    if channel == "webhook":
        return list(_json_fields(content["json"], "json", 0))
    modes = MESSAGE_FIELDS[channel]
    headers = HEADER_FIELDS.get(channel, frozenset())
    out = [Field(k, content[k], modes[k], k in headers) for k in modes
           if isinstance(content.get(k), str) and content[k]]
    if channel == "push":
        out += [Field(f"data.{k}", v, "text") for k, v in (content.get("data") or {}).items()]
    return out


def assemble(kind: str, channel: str, content: Mapping[str, Any],
             rendered: Mapping[str, str]) -> dict[str, Any]:
    """Rendered fields back into the content's shape (non-string JSON values kept)."""
    if channel == "webhook" and kind == "message":
        return {"json": _rebuild(content["json"], "json", rendered)}
    out: dict[str, Any] = {}
    data: dict[str, str] = {}
    for path, text in rendered.items():
        if path.startswith("data."):
            data[path[5:]] = text
        else:
            out[path] = text
    if data:
        out["data"] = data
    return out


def _rebuild(value: Any, path: str, rendered: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return rendered.get(path, value)
    if isinstance(value, dict):
        return {k: _rebuild(v, f"{path}.{k}", rendered) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebuild(v, f"{path}[{i}]", rendered) for i, v in enumerate(value)]
    return value


def push_content(rendered: Mapping[str, Any], provider: str) -> dict[str, Any]:
    """A rendered push template as the content of an ``fcm``, ``apns`` or ``webpush``
    message. APNs has no image field: the URL goes in ``data.image`` with
    ``mutable_content``, for a notification service extension to fetch."""
    out = {k: rendered[k] for k in ("title", "body") if rendered.get(k)}
    data = dict(rendered.get("data") or {})
    image = rendered.get("image")
    if provider == "apns":
        if image:
            data["image"] = image
            out["mutable_content"] = True
    elif image:
        out["image"] = image
    if data:
        out["data"] = data
    return out


#: which template channel serves each message channel
TEMPLATE_CHANNEL = {"email": "email", "sms": "sms", "fcm": "push", "apns": "push",
                    "webpush": "push", "webhook": "webhook"}


def message_content(rendered: Mapping[str, Any], channel: str) -> dict[str, Any]:
    """A rendered template as the content of a message on ``channel``: push templates are
    shaped for each push provider; a webhook template holds the JSON to send under ``json``."""
    wanted = TEMPLATE_CHANNEL.get(channel)
    if wanted == "webhook":
        body = rendered.get("json")
        return body if isinstance(body, dict) else {}
    return push_content(rendered, channel) if wanted == "push" else dict(rendered)
