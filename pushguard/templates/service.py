"""Templates as the HTTP API and the CLI use them: create, version, list, lint, render.

Every save is linted first, without the network: a version with lint errors is refused
(:class:`~pushguard.templates.errors.LintRefused`, a 422 naming the field), and its warnings
come back with the saved version. Linting on demand also checks links and images over HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from pushguard.exceptions import ConfigError, InputError, NotFound
from pushguard.ssrf import OutboundGuard
from pushguard.store.base import Store
from pushguard.store.sql import SQLStore
from pushguard.templates import content as tc
from pushguard.templates.errors import LintRefused
from pushguard.templates.linkcheck import LinkChecker
from pushguard.templates.lint import Finding, Linter, Report
from pushguard.templates.models import ContactSample, TemplateIn, VersionIn
from pushguard.templates.pool import RenderPool
from pushguard.templates.render import Renderer
from pushguard.templates.store import TemplateRow, TemplateStore, Version
from pushguard.views import rfc3339

#: real contacts a save is linted with
SAVE_SAMPLE = 20


def template_json(t: TemplateRow, current: Mapping[str, Version]) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "kind": t.kind, "channel": t.channel,
            "topic": t.topic, "layout": t.layout, "created_at": rfc3339(t.created_at),
            "locales": {loc: v.version for loc, v in sorted(current.items())},
            "latest_version": max((v.version for v in current.values()), default=None)}


def version_json(v: Version) -> dict[str, Any]:
    return {"version": v.version, "locale": v.locale, "content": v.content,
            "created_at": rfc3339(v.created_at), "created_by": v.created_by}


class Templates:
    """The template service over one store. ``pool`` renders; ``checker`` checks links."""

    def __init__(self, store: SQLStore, guard: OutboundGuard, *, pool: RenderPool | None = None,
                 checker: LinkChecker | None = None) -> None:
        self.store = TemplateStore(store)
        self.pool = pool or RenderPool()
        self.renderer = Renderer(self.store, self.pool)
        self.linter = Linter(self.renderer)
        self.checker = checker or LinkChecker(guard)

    @classmethod
    def over(cls, store: Store, guard: OutboundGuard, **kw: Any) -> Templates:
        if not isinstance(store, SQLStore):
            raise ConfigError("templates need the SQL store")
        return cls(store, guard, **kw)

    def close(self) -> None:
        self.pool.close()

    # -- saving -----------------------------------------------------------------------------

    def _topic_kind(self, topic: str | None) -> str | None:
        if not topic:
            return None
        kind = self.store.topic_kind(topic)
        if kind is None:
            raise InputError("topic", f"there is no topic {topic!r}; create it first "
                             "(POST /v1/topics or pushguard topics add)")
        return kind

    def _lint_save(self, t: TemplateRow, v: Version, data: Mapping[str, Any] | None,
                   topic_kind: str | None) -> Report:
        samples = self.store.sample_contacts(SAVE_SAMPLE, topic=t.topic)
        report = self.linter.lint(t, v, samples=samples, data=data, topic_kind=topic_kind)
        if report.errors:
            raise LintRefused(report.findings)
        return report

    def create(self, body: TemplateIn, *, actor: str) -> dict[str, Any]:
        """Lint, then save a template and its version 1."""
        name = tc.check_name(body.name)
        kind = body.kind
        if kind == "partial":
            channel = tc.ANY
            for key in ("topic", "layout"):
                if getattr(body, key):
                    raise InputError(key, "a partial has no " + key)
        elif body.channel is None:
            raise InputError("channel", f"is required for a {kind}")
        else:
            channel = body.channel
        if kind == "layout" and (body.topic or body.layout):
            raise InputError("topic" if body.topic else "layout",
                             "a layout has neither topic nor layout of its own")
        locale = tc.normalize_locale(body.locale)
        if locale != tc.DEFAULT_LOCALE:
            raise InputError("locale", "the first version is the default one, used when no "
                             "locale matches; add other locales as versions")
        content = tc.validate(kind, channel, body.content)
        topic_kind = self._topic_kind(body.topic)
        draft = TemplateRow("(new)", name, kind, channel, body.topic, body.layout, time.time())
        if self.store.find_name(name) is not None:
            raise InputError("name", f"a template named {name!r} already exists; add a "
                             "version to it instead")
        report = self._lint_save(draft, Version(draft.id, 0, locale, content, 0.0, actor),
                                 body.data, topic_kind)
        t, v = self.store.create(name=name, kind=kind, channel=channel, topic=body.topic,
                                 layout=body.layout, locale=locale, content=content,
                                 actor=actor)
        return {**template_json(t, {v.locale: v}), "version": version_json(v),
                "lint": _saved(report, t, v)}

    def add_version(self, ref: str, body: VersionIn, *, actor: str) -> dict[str, Any]:
        """Lint, then save the next version of a template for one locale."""
        t = self.store.find(ref)
        locale = tc.normalize_locale(body.locale)
        content = tc.validate(t.kind, t.channel, body.content)
        topic_kind = self.store.topic_kind(t.topic) if t.topic else None
        report = self._lint_save(t, Version(t.id, 0, locale, content, 0.0, actor), body.data,
                                 topic_kind)
        v = self.store.add_version(t.id, locale=locale, content=content, actor=actor)
        current = self.store.current([t.id])[t.id]
        return {**template_json(t, current), "version": version_json(v),
                "lint": _saved(report, t, v)}

    # -- reading ----------------------------------------------------------------------------

    def get(self, ref: str, *, version: int | None = None) -> dict[str, Any]:
        t = self.store.find(ref)
        current = self.store.current([t.id])[t.id]
        out = template_json(t, current)
        if version is not None:
            out["version"] = version_json(self.store.version(t.id, version))
            return out
        out["current"] = {loc: version_json(v) for loc, v in sorted(current.items())}
        out["versions"] = [{"version": v.version, "locale": v.locale,
                            "created_at": rfc3339(v.created_at), "created_by": v.created_by}
                           for v in self.store.versions(t.id)]
        return out

    def list_all(self) -> list[dict[str, Any]]:
        rows = self.store.templates()
        current = self.store.current([t.id for t in rows])
        return [template_json(t, current[t.id]) for t in rows]

    # -- lint -------------------------------------------------------------------------------

    def lint(self, ref: str, *, locale: str | None = None, version: int | None = None,
             data: Mapping[str, Any] | None = None, sample: int = 20) -> list[Report]:
        """Lint a version (``version``), one locale's current version (``locale``) or every
        locale's current version, with real contacts. Links are checked by
        :meth:`check_links`."""
        t = self.store.find(ref)
        current = self.store.current([t.id])[t.id]
        if version is not None:
            versions = [self.store.version(t.id, version)]
        elif locale is not None:
            versions = [self.store.pick(t.id, tc.normalize_locale(locale))]
        else:
            versions = sorted(current.values(),
                              key=lambda v: (v.locale != tc.DEFAULT_LOCALE, v.locale))
        topic_kind = self.store.topic_kind(t.topic) if t.topic else None
        samples = self.store.sample_contacts(sample, topic=t.topic)
        reports = []
        for v in versions:
            group = [s for s in samples if tc.pick_locale(s.get("locale"), current) == v.locale]
            report = self.linter.lint(t, v, samples=group or samples, data=data,
                                      topic_kind=topic_kind)
            if t.topic and topic_kind is None:
                report.add(Finding("warning", "unknown_topic", f"the topic {t.topic!r} no "
                                   "longer exists", "create the topic again",
                                   input="topic"))
            reports.append(report)
        return reports

    async def check_links(self, reports: Sequence[Report]) -> None:
        for r in reports:
            await self.linter.check_links(r, self.checker)

    # -- render -----------------------------------------------------------------------------

    def render(self, ref: str, *, contact: str | ContactSample | None = None,
               data: Mapping[str, Any] | None = None, locale: str | None = None,
               version: int | None = None) -> dict[str, Any]:
        """Render a message template for a contact (or a made-up one) and data: what the
        contact would receive. Raises :class:`~pushguard.templates.errors.TemplateError`."""
        t = self.store.find(ref)
        if t.kind != "message":
            raise InputError("template", f"{t.name} is a {t.kind}; only messages render on "
                             "their own")
        who: dict[str, Any] | None
        if isinstance(contact, str):
            who = self.store.contact(contact)
        elif contact is not None:
            who = contact.model_dump()
        else:
            who = None
        wanted = locale if locale is not None else (who or {}).get("locale")
        if version is not None:
            v = self.store.version(t.id, version)
        else:
            try:
                v = self.store.pick(t.id, tc.normalize_locale(wanted) if locale else wanted)
            except NotFound as exc:
                raise InputError("locale", str(exc)) from exc
        bundle = self.renderer.bundle(t, v)
        rendered = self.renderer.render_one(bundle, who, data)
        return {"template_id": t.id, "name": t.name, "channel": t.channel,
                "version": v.version, "locale": v.locale,
                "contact": (who or {}).get("external_id"), "content": rendered.content}


def _saved(report: Report, t: TemplateRow, v: Version) -> dict[str, Any]:
    report.template, report.version = t, v
    return report.as_dict()
