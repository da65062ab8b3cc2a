"""Segment filters: a small JSON language compiled to one SQL condition on ``contacts``.

A filter is a condition, or ``{"all": [...]}``, ``{"any": [...]}``, ``{"not": {...}}``::

    {"all": [
        {"attribute": "plan", "op": "eq", "value": "pro"},
        {"field": "locale", "op": "in", "value": ["fr", "fr-CA"]},
        {"consent": {"topic": "news", "channel": "email", "status": "granted"}},
        {"address": {"channel": "email", "status": "active"}},
        {"engagement": {"state": "delivered", "within_days": 30, "min": 1}},
        {"not": {"attribute": "churned", "op": "exists"}}
    ]}

Everything is compiled to SQL (JSON functions for attributes, EXISTS for consent, addresses and
engagement), so counting a million contacts is one query in the database, not a Python loop.
Attribute paths and operators are checked here; values are always bound parameters.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pushguard.addresses import CHANNELS
from pushguard.exceptions import InputError

OPS = ("eq", "ne", "in", "not_in", "exists", "missing", "gt", "gte", "lt", "lte", "has")
FIELDS = ("external_id", "locale", "timezone")
CONSENT_STATUSES = ("granted", "withdrawn", "pending", "none")
ADDRESS_STATUSES = ("active", "deactivated", "none")
ENGAGEMENT_STATES = ("delivered", "failed", "suppressed", "sent")
_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
MAX_DEPTH = 6
MAX_CONDITIONS = 50
_COMPARE = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


@dataclass
class Compiled:
    """A SQL condition over ``contacts`` (aliased ``c``) and its bound parameters."""

    sql: str
    params: dict[str, Any] = field(default_factory=dict)


class _Compiler:
    def __init__(self, dialect: str, now: float) -> None:
        self.pg = dialect == "postgresql"
        self.now = now
        self.params: dict[str, Any] = {}
        self.count = 0

    def bind(self, value: Any) -> str:
        name = f"f{len(self.params)}"
        self.params[name] = value
        return f":{name}"

    def node(self, raw: Any, where: str, depth: int = 0) -> str:
        if not isinstance(raw, Mapping) or len(raw) == 0:
            raise InputError(where, "must be a JSON object holding one condition")
        if depth > MAX_DEPTH:
            raise InputError(where, f"nests deeper than {MAX_DEPTH} levels")
        self.count += 1
        if self.count > MAX_CONDITIONS:
            raise InputError(where, f"more than {MAX_CONDITIONS} conditions")
        for group, joiner in (("all", " AND "), ("any", " OR ")):
            if group in raw:
                _only(raw, {group}, where)
                items = raw[group]
                if not isinstance(items, list) or not items:
                    raise InputError(f"{where}.{group}", "must be a non-empty list of conditions")
                parts = [self.node(x, f"{where}.{group}[{i}]", depth + 1)
                         for i, x in enumerate(items)]
                return "(" + joiner.join(parts) + ")"
        if "not" in raw:
            _only(raw, {"not"}, where)
            return f"(NOT {self.node(raw['not'], f'{where}.not', depth + 1)})"
        if "attribute" in raw:
            return self.attribute(raw, where)
        if "field" in raw:
            return self.field(raw, where)
        if "consent" in raw:
            _only(raw, {"consent"}, where)
            return self.consent(raw["consent"], f"{where}.consent")
        if "address" in raw:
            _only(raw, {"address"}, where)
            return self.address(raw["address"], f"{where}.address")
        if "engagement" in raw:
            _only(raw, {"engagement"}, where)
            return self.engagement(raw["engagement"], f"{where}.engagement")
        raise InputError(where, "unknown condition; expected one of: all, any, not, attribute, "
                         "field, consent, address, engagement")

    # -- contact data -----------------------------------------------------------------------

    def _op(self, raw: Mapping[str, Any], where: str) -> tuple[str, Any]:
        op = raw.get("op", "eq")
        if op not in OPS:
            raise InputError(f"{where}.op", f"unknown operator {op!r}; expected one of: "
                             f"{', '.join(OPS)}")
        value = raw.get("value")
        if op in ("exists", "missing"):
            if "value" in raw:
                raise InputError(f"{where}.value", f"{op} takes no value")
        elif op in ("in", "not_in"):
            if not isinstance(value, list) or not value or len(value) > 1000 \
                    or not all(_scalar(v) for v in value):
                raise InputError(f"{where}.value", f"{op} needs a list of 1 to 1000 values "
                                 "(text, numbers, or bools)")
        elif "value" not in raw or not _scalar(value):
            raise InputError(f"{where}.value", f"{op} needs one value (text, number, or bool)")
        if op in ("gt", "gte", "lt", "lte") and (isinstance(value, bool)
                                                  or not isinstance(value, int | float | str)):
            raise InputError(f"{where}.value", f"{op} compares numbers or text")
        return op, value

    def attribute(self, raw: Mapping[str, Any], where: str) -> str:
        _only(raw, {"attribute", "op", "value"}, where)
        path = raw["attribute"]
        if not isinstance(path, str) or not all(_KEY.match(p) for p in path.split(".")):
            raise InputError(f"{where}.attribute", "must be a dotted path of letters, digits, "
                             "_ and - (e.g. address.city)")
        keys = path.split(".")
        op, value = self._op(raw, where)
        if self.pg:
            # key by key with ->, which reads object keys only (like SQLite's $."k"): #> with
            # a text[] path would index lists with numeric keys and read a key named NULL as
            # SQL NULL
            node = "(CAST(c.attributes AS jsonb)" + "".join(
                f" -> CAST({self.bind(k)} AS text)" for k in keys) + ")"
            if op in ("exists", "missing"):
                return f"({node} IS {'NOT ' if op == 'exists' else ''}NULL)"
            if op in ("in", "not_in"):
                vals = ", ".join(f"CAST({self.bind(json.dumps(v))} AS jsonb)" for v in value)
                neg = "NOT " if op == "not_in" else ""
                return f"({node} IS NOT NULL AND {neg}{node} IN ({vals}))"
            if op == "has":
                return f"(jsonb_typeof({node}) = 'array' AND {node} @> " \
                       f"CAST({self.bind(json.dumps([value]))} AS jsonb))"
            if op in ("eq", "ne"):
                return f"({node} IS NOT NULL AND {node} {_COMPARE[op]} " \
                       f"CAST({self.bind(json.dumps(value))} AS jsonb))"
            kind = "number" if isinstance(value, int | float) else "string"
            # text compares in byte order (as SQLite does), whatever the database's collation
            cast = "CAST({} AS numeric)" if kind == "number" else 'CAST({} AS text) COLLATE "C"'
            return (f"(CASE WHEN jsonb_typeof({node}) = '{kind}' THEN "
                    f"{cast.format(node + ' #>> ' + repr('{}'))} END {_COMPARE[op]} "
                    f"{self.bind(value)})")
        p = self.bind("$." + ".".join(f'"{k}"' for k in keys))
        typ = f"json_type(c.attributes, {p})"
        val = f"json_extract(c.attributes, {p})"
        # json_extract turns true/false into 1/0 and a list into its JSON text: every match
        # checks the JSON type too, so SQLite selects what PostgreSQL's jsonb equality does
        if op in ("exists", "missing"):
            return f"({typ} IS {'NOT ' if op == 'exists' else ''}NULL)"
        if op in ("in", "not_in", "eq", "ne"):
            neg = "NOT " if op in ("not_in", "ne") else ""
            values = value if op in ("in", "not_in") else [value]
            return f"({typ} IS NOT NULL AND {neg}{self._sqlite_in(typ, val, values)})"
        if op == "has":
            return (f"({typ} = 'array' AND EXISTS (SELECT 1 FROM json_each(c.attributes, {p}) "
                    f"AS j WHERE {self._sqlite_in('j.type', 'j.value', [value])}))")
        kinds = "('integer', 'real')" if isinstance(value, int | float) else "('text')"
        return f"({typ} IN {kinds} AND {val} {_COMPARE[op]} {self.bind(value)})"

    def _sqlite_in(self, typ: str, val: str, values: list[Any]) -> str:
        """SQL true when a JSON value (its json_type and its SQL value) equals one of
        ``values``, type for type (never NULL when ``typ`` is not NULL)."""
        texts = [v for v in values if isinstance(v, str)]
        nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        bools = sorted({"'true'" if v else "'false'" for v in values if isinstance(v, bool)})
        parts = []
        if texts:
            parts.append(f"({typ} = 'text' AND {val} IN "
                         f"({', '.join(self.bind(v) for v in texts)}))")
        if nums:
            parts.append(f"({typ} IN ('integer', 'real') AND {val} IN "
                         f"({', '.join(self.bind(v) for v in nums)}))")
        if bools:
            parts.append(f"{typ} IN ({', '.join(bools)})")
        return "(" + " OR ".join(parts) + ")"

    def field(self, raw: Mapping[str, Any], where: str) -> str:
        _only(raw, {"field", "op", "value"}, where)
        name = raw["field"]
        if name not in FIELDS:
            raise InputError(f"{where}.field", f"unknown field {name!r}; expected one of: "
                             f"{', '.join(FIELDS)} (a contact's own data is an attribute)")
        op, value = self._op(raw, where)
        col = f"c.{name}"
        if op in ("exists", "missing"):
            return f"({col} IS {'NOT ' if op == 'exists' else ''}NULL)"
        if op == "has":
            raise InputError(f"{where}.op", "has works on list attributes only")
        if op in ("in", "not_in"):
            vals = ", ".join(self.bind(str(v)) for v in value)
            return f"({col} IS NOT NULL AND {col} {'NOT ' if op == 'not_in' else ''}IN ({vals}))"
        if self.pg and op in ("gt", "gte", "lt", "lte"):
            col += ' COLLATE "C"'  # byte order, as SQLite compares
        return f"({col} IS NOT NULL AND {col} {_COMPARE[op]} {self.bind(str(value))})"

    # -- relations --------------------------------------------------------------------------

    def consent(self, raw: Any, where: str) -> str:
        spec = _table(raw, where, {"topic", "channel", "status"}, required={"topic"})
        topic = _text(spec, "topic", where)
        status = spec.get("status", "granted")
        if status not in CONSENT_STATUSES:
            raise InputError(f"{where}.status", f"must be one of: {', '.join(CONSENT_STATUSES)}")
        cond = f"k.contact_id = c.id AND k.topic = {self.bind(topic)}"
        if "channel" in spec:
            cond += f" AND k.channel = {self.bind(_consent_channel(spec['channel'], where))}"
        if status == "none":
            return f"(NOT EXISTS (SELECT 1 FROM consent k WHERE {cond}))"
        return f"(EXISTS (SELECT 1 FROM consent k WHERE {cond} AND k.status = " \
               f"{self.bind(status)}))"

    def address(self, raw: Any, where: str) -> str:
        spec = _table(raw, where, {"channel", "status", "verified"}, required={"channel"})
        channel = spec["channel"]
        if not isinstance(channel, str) or channel not in CHANNELS:
            raise InputError(f"{where}.channel", f"unknown channel {channel!r}")
        status = spec.get("status", "active")
        if status not in ADDRESS_STATUSES:
            raise InputError(f"{where}.status", f"must be one of: {', '.join(ADDRESS_STATUSES)}")
        cond = f"a.contact_id = c.id AND a.channel = {self.bind(channel)}"
        if status == "none":
            return f"(NOT EXISTS (SELECT 1 FROM contact_addresses a WHERE {cond} " \
                   "AND a.status = 'active'))"
        cond += f" AND a.status = {self.bind(status)}"
        if "verified" in spec:
            if not isinstance(spec["verified"], bool):
                raise InputError(f"{where}.verified", "must be true or false")
            cond += f" AND a.verified = {self.bind(spec['verified'])}"
        return f"(EXISTS (SELECT 1 FROM contact_addresses a WHERE {cond}))"

    def engagement(self, raw: Any, where: str) -> str:
        spec = _table(raw, where, {"state", "within_days", "min", "channel", "topic"},
                      required={"within_days"})
        state = spec.get("state", "delivered")
        if state not in ENGAGEMENT_STATES:
            raise InputError(f"{where}.state", f"must be one of: {', '.join(ENGAGEMENT_STATES)}")
        days = spec["within_days"]
        if isinstance(days, bool) or not isinstance(days, int | float) or not 0 < days <= 3660:
            raise InputError(f"{where}.within_days", "must be a number of days from 0 to 3660")
        least = spec.get("min", 1)
        if isinstance(least, bool) or not isinstance(least, int) or not 0 <= least <= 10 ** 9:
            raise InputError(f"{where}.min", "must be a whole number, 0 or more")
        cond = f"m.contact_id = c.id AND m.created_at >= {self.bind(self.now - days * 86400)}"
        if state == "sent":
            cond += " AND m.attempts > 0"
        else:
            cond += f" AND m.state = {self.bind(state)}"
        if "channel" in spec:
            cond += f" AND m.channel = {self.bind(_text(spec, 'channel', where))}"
        if "topic" in spec:
            cond += f" AND m.topic = {self.bind(_text(spec, 'topic', where))}"
        if least == 1:
            return f"(EXISTS (SELECT 1 FROM messages m WHERE {cond}))"
        return f"((SELECT COUNT(*) FROM messages m WHERE {cond}) >= {self.bind(least)})"


def compile_filter(raw: Any, dialect: str, *, now: float | None = None,
                   where: str = "filter") -> Compiled:
    """The SQL condition of a filter (``{}`` or None: every contact)."""
    if raw is None or raw == {}:
        return Compiled("1 = 1")
    c = _Compiler(dialect, time.time() if now is None else now)
    sql = c.node(raw, where)
    return Compiled(sql, c.params)


def _only(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(raw) - allowed)
    if extra:
        raise InputError(f"{where}.{extra[0]}", "unknown key here")


def _table(raw: Any, where: str, allowed: set[str], *, required: set[str]) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise InputError(where, "must be a JSON object")
    _only(raw, allowed, where)
    for key in sorted(required - set(raw)):
        raise InputError(f"{where}.{key}", "is required")
    return raw


def _text(spec: Mapping[str, Any], key: str, where: str) -> str:
    value = spec[key]
    if not isinstance(value, str) or not value or len(value) > 128:
        raise InputError(f"{where}.{key}", "must be a non-empty string")
    return value


def _consent_channel(channel: Any, where: str) -> str:
    from pushguard.audience.gate import CONSENT_CHANNELS, consent_channel

    if not isinstance(channel, str):
        raise InputError(f"{where}.channel", "must be a string")
    got = consent_channel(channel)
    if got not in CONSENT_CHANNELS:
        raise InputError(f"{where}.channel", f"unknown consent channel {channel!r}; expected "
                         f"one of: {', '.join(CONSENT_CHANNELS)}")
    return got


def _scalar(value: Any) -> bool:
    """A value a condition compares with: text, a bool, or a number SQLite can hold."""
    if isinstance(value, bool | str):
        return True
    if isinstance(value, int):
        return -(2 ** 63) <= value < 2 ** 63
    return isinstance(value, float) and math.isfinite(value)
