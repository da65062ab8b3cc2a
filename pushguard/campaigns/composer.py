"""Render a campaign's templates for many contacts at once.

Contacts are grouped by the template version their locale picks, and each group is rendered
in one call to the render pool (a batch per process round trip, not a message). The version
of each locale is the newest when the composer is built, unless the campaign pins one.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pushguard.campaigns.models import CampaignIn
from pushguard.exceptions import InputError, NotFound
from pushguard.templates import content as tc
from pushguard.templates.errors import TemplateError
from pushguard.templates.render import Bundle, Rendered, context
from pushguard.templates.service import Templates
from pushguard.templates.store import TemplateRow, Version
from pushguard.templates.variables import Path, uses

#: contexts per render call (a fan-out batch is rendered in parts, in parallel)
BATCH = 125


@dataclass(frozen=True, slots=True)
class Missing:
    """A contact attribute a template reads without a default."""

    path: Path
    text: str


class Composer:
    def __init__(self, templates: Templates, spec: CampaignIn) -> None:
        self.templates = templates
        self.spec = spec
        self._rows: dict[str, TemplateRow] = {}
        self._current: dict[str, dict[str, Version]] = {}
        self._bundles: dict[tuple[str, int], Bundle] = {}
        self._paths: dict[tuple[str, int], list[Missing]] = {}
        self._versions: dict[tuple[str, int, str | None], Version] = {}

    # -- which template -----------------------------------------------------------------------

    def variant_of(self, campaign_id: str, contact_id: str) -> str | None:
        """The experiment variant of a contact: stable, and spread by the variants' weights."""
        exp = self.spec.experiment
        if exp is None:
            return None
        total = sum(v.weight for v in exp.variants)
        h = hashlib.sha256(f"{campaign_id}:{exp.name}:{contact_id}".encode()).digest()
        point = int.from_bytes(h[:8], "big") % total
        for v in exp.variants:
            if point < v.weight:
                return v.name
            point -= v.weight
        return exp.variants[-1].name  # pragma: no cover - the loop always returns

    def template_of(self, step: int, variant: str | None) -> str:
        if step == 0 and variant is not None and self.spec.experiment is not None:
            for v in self.spec.experiment.variants:
                if v.name == variant:
                    return v.template
        return self.spec.channels[step].template

    def row(self, name: str) -> TemplateRow:
        if name not in self._rows:
            self._rows[name] = self.templates.store.find(name)
            t = self._rows[name]
            self._current[name] = self.templates.store.current([t.id])[t.id]
        return self._rows[name]

    def version(self, name: str, step: int, locale: str | None) -> Version:
        key = (name, step, locale)
        if key not in self._versions:
            self._versions[key] = self._version(name, step, locale)
        return self._versions[key]

    def _version(self, name: str, step: int, locale: str | None) -> Version:
        t = self.row(name)
        pinned = self.spec.channels[step].version
        if pinned is not None and name == self.spec.channels[step].template:
            return self.templates.store.version(t.id, pinned)
        chosen = tc.pick_locale(locale, self._current[name])
        if chosen is None:
            raise NotFound(f"template {name} has no version for {locale!r} nor a default one")
        return self._current[name][chosen]

    def bundle(self, name: str, v: Version) -> Bundle:
        key = (name, v.version)
        if key not in self._bundles:
            self._bundles[key] = self.templates.renderer.bundle(self.row(name), v)
        return self._bundles[key]

    # -- what templates need ----------------------------------------------------------------

    def missing(self, name: str, step: int, contact: Mapping[str, Any]) -> list[Missing]:
        """The attributes this contact lacks that its template version reads unguarded."""
        v = self.version(name, step, contact.get("locale"))
        key = (name, v.version)
        if key not in self._paths:
            found: dict[Path, Missing] = {}
            for tree in self.bundle(name, v).parsed.values():
                for use in uses(tree):
                    if (len(use.path) > 2 and use.path[:2] == ("contact", "attributes")
                            and not use.guarded):
                        found.setdefault(use.path[2:], Missing(use.path[2:], use.dotted))
            self._paths[key] = list(found.values())
        attrs = contact.get("attributes") or {}
        return [m for m in self._paths[key] if not _has(attrs, m.path)]

    # -- rendering --------------------------------------------------------------------------

    def render(self, name: str, step: int, channel: str,
               contacts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any] | TemplateError]:
        """Message content for each contact (or the error that stops it), in order."""
        out: list[dict[str, Any] | TemplateError | None] = [None] * len(contacts)
        groups: dict[int, list[int]] = defaultdict(list)
        versions: dict[int, Version] = {}
        for i, c in enumerate(contacts):
            try:
                v = self.version(name, step, c.get("locale"))
            except NotFound as exc:
                out[i] = TemplateError(exc.message, template_id="", name=name, version=0,
                                       locale=str(c.get("locale")), kind="not_found")
                continue
            versions[v.version] = v
            groups[v.version].append(i)
        for number, idx in groups.items():
            b = self.bundle(name, versions[number])
            if b.problems:
                err = TemplateError(b.problems[0][2], template_id=b.template.id, name=name,
                                    version=number, locale=b.version.locale,
                                    kind=b.problems[0][3])
                for i in idx:
                    out[i] = err
                continue
            parts = [idx[at:at + BATCH] for at in range(0, len(idx), BATCH)]

            def one(part: list[int], b: Bundle = b) -> list[Rendered | TemplateError]:
                return self.templates.renderer.render(
                    b, [context(b, contacts[i], self.spec.data) for i in part])

            # the render processes work in parallel on a batch's parts
            with ThreadPoolExecutor(min(len(parts), self.templates.pool.size)) as threads:
                for part, results in zip(parts, threads.map(one, parts), strict=True):
                    for i, r in zip(part, results, strict=True):
                        out[i] = r if isinstance(r, TemplateError) \
                            else tc.message_content(r.content, channel)
        assert all(x is not None for x in out)
        return [x for x in out if x is not None]

    def check(self) -> None:
        """Every template the campaign names exists, is a message template, and fits its
        channel; raises InputError naming the field."""
        names = [(f"channels[{i}].template", s.template, s.channel)
                 for i, s in enumerate(self.spec.channels)]
        if self.spec.experiment is not None:
            first = self.spec.channels[0].channel
            names += [(f"experiment.variants[{i}].template", v.template, first)
                      for i, v in enumerate(self.spec.experiment.variants)]
        for fld, name, channel in names:
            try:
                t = self.row(name)
            except NotFound as exc:
                raise InputError(fld, exc.message) from exc
            wanted = tc.TEMPLATE_CHANNEL.get(channel)
            if t.kind != "message":
                raise InputError(fld, f"{name!r} is a {t.kind}, not a message template")
            if t.channel != wanted:
                raise InputError(fld, f"{name!r} is a {t.channel} template; a {channel} "
                                 f"message needs a {wanted} one")
            if not self._current[name]:
                raise InputError(fld, f"{name!r} has no version")


def _has(value: Any, path: Path) -> bool:
    for p in path:
        in_map = isinstance(value, Mapping) and p in value
        in_list = isinstance(value, list) and isinstance(p, int) and -len(value) <= p < len(value)
        if not (in_map or in_list):
            return False
        value = value[p]
    return value is not None

