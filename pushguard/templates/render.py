"""A template version, a contact and per-message data, rendered into message content.

:meth:`Renderer.bundle` gathers everything one version needs into plain sources: its fields,
its layout's fields (each message field is wrapped as ``{% extends %}`` plus ``{% block
content %}`` on its first line, so line numbers stay the author's) and every partial it
includes, at the version's locale. The pool renders a bundle for many contexts at once.

Variables a template sees:

* ``contact``: ``id``, ``external_id``, ``attributes`` (the contact's own data), ``locale``,
  ``timezone``;
* ``data``: what the message carries;
* ``unsubscribe_url`` and ``preferences_url`` in a marketing-topic email. They render as the
  literal ``{{unsubscribe_url}}`` and ``{{preferences_url}}``, which the send path
  (:func:`pushguard.audience.links.with_unsubscribe`) replaces with the signed links of the
  contact the message goes to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import TemplateSyntaxError

from pushguard.addresses import check_header_value
from pushguard.documents import not_text
from pushguard.exceptions import InputError
from pushguard.providers.email_message import parse_mailbox
from pushguard.templates import content as tc
from pushguard.templates.errors import TemplateError
from pushguard.templates.pool import RenderPool
from pushguard.templates.store import TemplateRow, TemplateStore, Version
from pushguard.templates.worker import environment

#: partials one template may pull in, transitively
MAX_PARTIALS = 50
UNSUBSCRIBE_PLACEHOLDERS = {"unsubscribe_url": "{{unsubscribe_url}}",
                            "preferences_url": "{{preferences_url}}"}
CONTACT_FIELDS = ("id", "external_id", "attributes", "locale", "timezone")


@dataclass(slots=True)
class Bundle:
    """One version with everything it includes, ready for the pool."""

    template: TemplateRow
    version: Version
    topic_kind: str | None
    fields: list[tc.Field]
    #: source name -> source: "@subject", "@layout/html", partial names
    sources: dict[str, str] = field(default_factory=dict)
    #: the parsed templates, by source name, for lint
    parsed: dict[str, nodes.Template] = field(default_factory=dict)
    #: partial name -> the version it was taken from
    partials: dict[str, Version] = field(default_factory=dict)
    layout: tuple[TemplateRow, Version] | None = None
    #: (source name, line, problem, kind): includes that cannot work, found while gathering
    problems: list[tuple[str, int | None, str, str]] = field(default_factory=list)

    @property
    def marketing(self) -> bool:
        return self.topic_kind == "marketing" and self.template.channel == "email"

    @property
    def jobs(self) -> list[tuple[str, str, str]]:
        """(field, source name, mode) for the pool."""
        return [(f.path, source_name(f.path), f.mode) for f in self.fields]

    def origin(self, name: str | None) -> str | None:
        """Where a source name came from, for messages: None for the template's own field."""
        if not name or name.startswith("@") and not name.startswith("@layout/"):
            return None
        if name.startswith("@layout/") and self.layout is not None:
            return f"layout {self.layout[0].name}"
        return f"partial {name}"

    def field_of(self, name: str | None) -> str | None:
        if name and name.startswith("@layout/"):
            return name[len("@layout/"):]
        if name and name.startswith("@"):
            return name[1:]
        return None


@dataclass(frozen=True, slots=True)
class Rendered:
    content: dict[str, Any]
    fields: dict[str, str]


def source_name(path: str) -> str:
    return f"@{path}"


def wrap_in_layout(source: str, path: str) -> str:
    # One line, so the author's line numbers are unchanged.
    return (f'{{% extends "@layout/{path}" %}}{{% block {tc.BLOCK} %}}'
            f"{source}{{% endblock %}}")


def contact_vars(contact: Mapping[str, Any] | None) -> dict[str, Any]:
    c = contact or {}
    return {"id": c.get("id"), "external_id": c.get("external_id"),
            "attributes": dict(c.get("attributes") or {}), "locale": c.get("locale"),
            "timezone": c.get("timezone")}


def context(bundle: Bundle, contact: Mapping[str, Any] | None, data: Mapping[str, Any] | None,
            *, lenient: Sequence[str] = ()) -> dict[str, Any]:
    """One render's variables, as the worker takes them."""
    ctx: dict[str, Any] = {"vars": {"contact": contact_vars(contact), "data": dict(data or {})},
                           "lenient": list(lenient)}
    if bundle.marketing:
        ctx["markup"] = dict(UNSUBSCRIBE_PLACEHOLDERS)
    return ctx


class Renderer:
    def __init__(self, store: TemplateStore, pool: RenderPool) -> None:
        self.store = store
        self.pool = pool

    # -- gathering --------------------------------------------------------------------------

    def bundle(self, template: TemplateRow, version: Version, *,
               topic_kind: str | None = None) -> Bundle:
        """Everything ``version`` needs to render. Raises :class:`TemplateError` for a
        syntax error in any of it; other include problems are in ``problems``."""
        if topic_kind is None and template.topic:
            topic_kind = self.store.topic_kind(template.topic)
        b = Bundle(template, version, topic_kind,
                   tc.fields(template.kind, template.channel, version.content))
        layout = self._layout(template, version.locale) if template.kind == "message" else None
        b.layout = layout
        for f in b.fields:
            src = f.source
            if layout is not None and f.path in layout[1].content:
                src = wrap_in_layout(src, f.path)
                b.sources[f"@layout/{f.path}"] = layout[1].content[f.path]
            b.sources[source_name(f.path)] = src
        self._partials(b)
        return b

    def _layout(self, template: TemplateRow, locale: str) -> tuple[TemplateRow, Version] | None:
        if not template.layout:
            return None
        row = self.store.find_name(template.layout)
        if row is None or row.kind != "layout":
            return None  # lint reports it; render then runs without it
        current = self.store.current([row.id])[row.id]
        chosen = tc.pick_locale(locale, current)
        return None if chosen is None else (row, current[chosen])

    def _parse(self, b: Bundle, name: str) -> nodes.Template:
        try:
            tree = environment().parse(b.sources[name], name=name)
        except TemplateSyntaxError as exc:
            raise self.error(b, {"kind": "syntax", "message": exc.message or str(exc),
                                 "template": name, "line": exc.lineno,
                                 "field": b.field_of(name)}) from exc
        b.parsed[name] = tree
        return tree

    def _partials(self, b: Bundle) -> None:
        todo = list(b.sources)
        seen: set[str] = set()
        while todo:
            name = todo.pop(0)
            if name in seen:
                continue
            seen.add(name)
            tree = self._parse(b, name)
            for node in tree.find_all((nodes.Include, nodes.Import, nodes.FromImport,
                                       nodes.Extends)):
                assert isinstance(node, nodes.Include | nodes.Import | nodes.FromImport
                                  | nodes.Extends)
                ref = node.template
                if isinstance(node, nodes.Extends) and not (
                        name.startswith("@") and isinstance(ref, nodes.Const)
                        and str(ref.value).startswith("@layout/")):
                    b.problems.append((name, node.lineno, "{% extends %} is not allowed; set "
                                       "the template's layout instead", "extends"))
                    continue
                if not isinstance(ref, nodes.Const) or not isinstance(ref.value, str):
                    b.problems.append((name, node.lineno, "the partial's name must be a "
                                       "literal string, like {% include \"footer\" %}",
                                       "dynamic_include"))
                    continue
                target = ref.value
                if target in b.sources or target.startswith("@"):
                    continue
                if len(b.partials) >= MAX_PARTIALS:
                    b.problems.append((name, node.lineno, f"more than {MAX_PARTIALS} partials",
                                       "too_many_partials"))
                    continue
                found = self._partial(target, b.version.locale)
                if isinstance(found, str):
                    b.problems.append((name, node.lineno, found, "unknown_partial"))
                    continue
                b.partials[target] = found
                b.sources[target] = found.content["body"]
                todo.append(target)
        for name in list(b.sources):
            if name not in b.parsed:
                self._parse(b, name)

    def _partial(self, name: str, locale: str) -> Version | str:
        row = self.store.find_name(name)
        if row is None:
            return f"no partial named {name!r}"
        if row.kind != "partial":
            return f"{name!r} is a {row.kind} template, not a partial"
        current = self.store.current([row.id])[row.id]
        chosen = tc.pick_locale(locale, current)
        if chosen is None:
            return f"partial {name!r} has no version for {locale!r} nor a default one"
        return current[chosen]

    # -- rendering --------------------------------------------------------------------------

    def render(self, bundle: Bundle,
               contexts: Sequence[Mapping[str, Any]]) -> list[Rendered | TemplateError]:
        """One result per context, in order."""
        answers = self.pool.render(bundle.sources, bundle.jobs, contexts)
        return [self._result(bundle, a, lenient=bool(c.get("lenient")))
                for a, c in zip(answers, contexts, strict=True)]

    def render_one(self, bundle: Bundle, contact: Mapping[str, Any] | None,
                   data: Mapping[str, Any] | None) -> Rendered:
        """Render for one contact; raises :class:`TemplateError`."""
        (result,) = self.render(bundle, [context(bundle, contact, data)])
        if isinstance(result, TemplateError):
            raise result
        return result

    def _result(self, b: Bundle, answer: Mapping[str, Any], *,
                lenient: bool = False) -> Rendered | TemplateError:
        if "error" in answer:
            return self.error(b, answer["error"])
        out: dict[str, str] = answer["ok"]
        headers = tc.HEADER_FIELDS.get(b.template.channel, frozenset())
        for path, value in out.items():
            if not_text(value):  # '{{ "\ud800" }}', or a variable holding one
                return self.error(b, {"kind": "invalid", "field": path, "message": (
                    "renders text that is not valid Unicode (a lone UTF-16 surrogate); does "
                    "a string in the template, or a variable's value, hold one?")})
            if path not in headers:
                continue
            try:
                check_header_value(value, f"content.{path}")
                if not value.strip() and path in ("subject", "title"):
                    raise InputError(f"content.{path}", "renders empty")
                # a placeholder for sample data is not an address; the real value will be
                placeholder = lenient and "{" in value and "}" in value
                if path in ("from", "reply_to") and value.strip() and not placeholder:
                    parse_mailbox(value, f"content.{path}")
            except InputError as exc:
                problem, kind = exc.problem, "invalid"
                if problem.startswith("contains "):
                    problem = (f"renders with {problem.removeprefix('contains ')}; "
                               "header-bound fields must be one line (does a variable's value "
                               "hold one?)")
                    kind = "header"
                return self.error(b, {"kind": kind, "message": problem, "field": path})
        return Rendered(tc.assemble(b.template.kind, b.template.channel, b.version.content,
                                    out), out)

    def error(self, b: Bundle, e: Mapping[str, Any]) -> TemplateError:
        name = e.get("template")
        field = e.get("field") or b.field_of(name)
        return TemplateError(
            str(e.get("message")), template_id=b.template.id, name=b.template.name,
            version=b.version.version, locale=b.version.locale, field=field,
            line=e.get("line"), variable=e.get("variable"), kind=str(e.get("kind") or "error"),
            partial=b.origin(name))

