"""Everything wrong with a template version, each finding with where it is and how to fix it.

In order, stopping early when what follows could not be trusted:

1. syntax, per field, with the line;
2. structure: the layout exists and fits, includes name partials that exist, layouts have
   ``{% block content %}``;
3. variables: names the template cannot see, ``contact`` fields that do not exist,
   ``unsubscribe_url`` outside marketing email, and contact attributes that real contacts
   (sampled from the ``contacts`` table) do not have -- naming those contacts;
4. a marketing email with no unsubscribe link in its body;
5. rendering for each sampled contact, in the sandbox: anything that fails (a variable, the
   time limit, the output cap, the sandbox, a line break in a header-bound field);
6. the rendered size against each channel's limit: APNs and FCM 4096 bytes, Web Push 3993
   bytes of plaintext, SMS segments and encoding, the email subject, Gmail's clipping;
7. and, on demand (:meth:`Linter.check_links`), every link and image over HTTP.

Errors stop a template from being saved; warnings are reported with it. A problem that only
some contacts' data causes is a warning naming them; one every render has is an error.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from jinja2 import nodes
from jinja2.exceptions import TemplateSyntaxError

from pushguard import sms_segments
from pushguard.exceptions import InputError
from pushguard.providers import apns, fcm, webpush
from pushguard.providers.email_message import MAX_BODY_BYTES, MAX_SUBJECT
from pushguard.templates import content as tc
from pushguard.templates import linkcheck
from pushguard.templates.errors import TemplateError
from pushguard.templates.render import (
    CONTACT_FIELDS,
    UNSUBSCRIBE_PLACEHOLDERS,
    Bundle,
    Rendered,
    Renderer,
    context,
    source_name,
)
from pushguard.templates.store import TemplateRow, Version
from pushguard.templates.variables import GLOBALS, Path, free_names, uses
from pushguard.templates.worker import environment

Severity = Literal["error", "warning"]
#: Gmail clips a message whose HTML is larger than this, hiding the rest (and the footer)
GMAIL_CLIP = 102 * 1024
#: contacts named in one finding
MAX_NAMED = 10
BASE_VARIABLES = frozenset({"contact", "data"})
_UNSUB = frozenset(UNSUBSCRIBE_PLACEHOLDERS)

_FIXES = {
    "timeout": "a loop runs too long: loop over a bounded list (a slice such as [:20]), not "
               "over nested ranges",
    "too_large": "the template produces too much text: bound its loops",
    "memory": "the template builds something huge: bound its loops and repetitions",
    "security": "templates may only use variables, filters and tests; Python internals are "
                "out of reach in the sandbox",
    "not_found": "create the partial (kind partial) or fix the name in the include",
    "crashed": "simplify the template; if it keeps happening, report it",
    "syntax": "fix the syntax at that line",
    "header": "keep line breaks out of the value, e.g. {{ x | replace('\\n', ' ') }}, or fix "
              "the contact's data",
    "invalid": "make the field render to a valid value",
}


@dataclass(slots=True)
class Finding:
    """One problem: how bad, what it is, where, and what to do."""

    severity: Severity
    code: str
    problem: str
    fix: str
    field: str | None = None
    line: int | None = None
    #: a partial or layout the problem is in, when it is not in the template itself
    source: str | None = None
    locale: str | None = None
    contacts: list[str] = dataclasses.field(default_factory=list)
    url: str | None = None
    #: the request field to name when the finding refuses a save
    input: str | None = None

    @property
    def input_field(self) -> str:
        if self.input:
            return self.input
        return f"content.{self.field}" if self.field else "content"

    @property
    def summary(self) -> str:
        where = f" in {self.source}" if self.source else ""
        line = f"line {self.line}{where}: " if self.line else (f"{where.strip()}: " if where
                                                               else "")
        return f"{line}{self.problem}"

    def as_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "code": self.code, "field": self.field,
                "line": self.line, "source": self.source, "locale": self.locale,
                "problem": self.problem, "fix": self.fix, "contacts": self.contacts,
                "url": self.url}


@dataclass(frozen=True, slots=True)
class LinkRef:
    url: str
    image: bool
    field: str
    line: int | None


@dataclass(slots=True)
class Report:
    template: TemplateRow
    version: Version
    findings: list[Finding] = dataclasses.field(default_factory=list)
    samples: int = 0
    sizes: dict[str, Any] = dataclasses.field(default_factory=dict)
    links: list[LinkRef] = dataclasses.field(default_factory=list)
    link_results: list[linkcheck.LinkResult] = dataclasses.field(default_factory=list)
    links_checked: bool = False

    def add(self, f: Finding) -> None:
        f.locale = f.locale or self.version.locale
        self.findings.append(f)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "template": self.template.name, "template_id": self.template.id,
            "version": self.version.version or None, "locale": self.version.locale,
            "errors": len(self.errors), "warnings": len(self.warnings),
            "findings": [f.as_dict() for f in self.findings],
            "samples": self.samples, "sizes": self.sizes,
            "links_checked": self.links_checked,
            "links": [r.as_dict() for r in self.link_results],
        }


def _lookup(value: Any, path: Sequence[str | int]) -> bool:
    for p in path:
        found = (isinstance(value, Mapping) and p in value) or (
            isinstance(value, list) and isinstance(p, int) and -len(value) <= p < len(value))
        if not found:
            return False
        value = value[p]
    return True


def _named(ids: Sequence[str | None]) -> list[str]:
    return [i for i in ids if i][:MAX_NAMED]


def _line_of(source: str, needle: str) -> int | None:
    at = source.find(needle)
    return None if at < 0 else source.count("\n", 0, at) + 1


class Linter:
    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer

    def lint(self, template: TemplateRow, version: Version, *,
             samples: Sequence[Mapping[str, Any]], data: Mapping[str, Any] | None = None,
             topic_kind: str | None = None) -> Report:
        """Lint ``version`` (saved, or about to be: version 0) of ``template`` with these
        sample contacts and sample per-message ``data`` (None: any ``data.x`` renders as a
        placeholder)."""
        r = Report(template, version)
        fields = tc.fields(template.kind, template.channel, version.content)
        env = environment()
        for f in fields:
            try:
                env.parse(f.source)
            except TemplateSyntaxError as exc:
                r.add(Finding("error", "syntax", exc.message or str(exc), _FIXES["syntax"],
                              field=f.path, line=exc.lineno))
        if r.errors:
            return r
        self._layout(r, template)
        try:
            b = self.renderer.bundle(template, version, topic_kind=topic_kind)
        except TemplateError as exc:
            r.add(Finding("error", exc.kind, exc.problem, _FIXES.get(exc.kind, ""),
                          field=exc.field, line=exc.line, source=exc.partial))
            return r
        for name, line, problem, kind in b.problems:
            fix = {"extends": "remove the {% extends %} tag and set the template's layout",
                   "unknown_partial": _FIXES["not_found"]}.get(
                kind, "name the partial with a literal string")
            r.add(Finding("error", kind, problem, fix, field=b.field_of(name), line=line,
                          source=b.origin(name)))
        if template.kind == "layout":
            self._blocks(r, b)
        self._variables(r, b, samples, data)
        self._unsubscribe(r, b)
        if r.errors:
            return r
        rendered = self._render(r, b, samples, data)
        if template.kind == "message":
            self._sizes(r, b, rendered)
            self._collect_links(r, b, rendered)
        return r

    # -- structure --------------------------------------------------------------------------

    def _layout(self, r: Report, t: TemplateRow) -> None:
        if t.kind != "message" or not t.layout:
            return
        row = self.renderer.store.find_name(t.layout)
        problem = None
        if row is None:
            problem = f"there is no layout named {t.layout!r}"
        elif row.kind != "layout":
            problem = f"{t.layout!r} is a {row.kind} template, not a layout"
        elif row.channel != t.channel:
            problem = f"layout {t.layout!r} is for {row.channel}, not {t.channel}"
        if problem:
            r.add(Finding("error", "layout", problem, "create that layout (kind layout, same "
                          "channel) or name another", input="layout"))

    def _blocks(self, r: Report, b: Bundle) -> None:
        for f in b.fields:
            tree = b.parsed[source_name(f.path)]
            if not any(isinstance(n, nodes.Block) and n.name == tc.BLOCK
                       for n in tree.find_all(nodes.Block)):
                r.add(Finding("error", "layout_block", f"a layout's {f.path} needs "
                              f"{{% block {tc.BLOCK} %}}{{% endblock %}} where the message "
                              "goes", f"add {{% block {tc.BLOCK} %}}{{% endblock %}}",
                              field=f.path))

    # -- variables --------------------------------------------------------------------------

    def _variables(self, r: Report, b: Bundle, samples: Sequence[Mapping[str, Any]],
                   data: Mapping[str, Any] | None) -> None:
        known = BASE_VARIABLES | _UNSUB
        attrs: dict[Path, tuple[str, str | None, str | None, int]] = {}
        data_missing: dict[str, tuple[str | None, str | None, int]] = {}
        for name, tree in b.parsed.items():
            fld = None if name.startswith("@layout/") else b.field_of(name)
            src = b.origin(name)
            free = free_names(tree) - GLOBALS
            for unknown in sorted(free - known):
                line = next((n.lineno for n in tree.find_all(nodes.Name)
                             if isinstance(n, nodes.Name) and n.name == unknown), None)
                close = difflib.get_close_matches(unknown, sorted(known), n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                r.add(Finding("error", "unknown_variable", f"{unknown!r} is not a variable "
                              "templates can read", f"{hint}templates see contact (id, "
                              f"external_id, attributes, locale, timezone) and data; write "
                              f"contact.attributes.{unknown} or data.{unknown}",
                              line=line, field=fld, source=src))
            own = b.template.kind == "message" and not b.origin(name)
            for used in sorted(free & _UNSUB):
                if own and not b.marketing:
                    line = next((n.lineno for n in tree.find_all(nodes.Name)
                                 if isinstance(n, nodes.Name) and n.name == used), None)
                    r.add(Finding("error", "unsubscribe_outside_marketing",
                                  f"{used} is only set in email templates of a marketing "
                                  "topic", "set a marketing topic on the template, or remove "
                                  "the link", line=line, field=fld, source=src))
            for use in uses(tree):
                root = use.path[0]
                if root == "contact" and len(use.path) > 1:
                    key = use.path[1]
                    if key not in CONTACT_FIELDS:
                        r.add(Finding("error", "unknown_variable",
                                      f"contact has no field {key!r}",
                                      f"a contact's own data is in contact.attributes: write "
                                      f"contact.attributes.{key}", line=use.line, field=fld,
                                      source=src))
                    elif key == "attributes" and len(use.path) > 2 and not use.guarded:
                        attrs.setdefault(use.path[2:], (use.dotted, fld, src, use.line))
                elif root == "data" and data is not None and len(use.path) > 1 \
                        and not use.guarded and not _lookup(data, use.path[1:]):
                    data_missing.setdefault(use.dotted, (fld, src, use.line))
        for path, (text, fld, src, line) in attrs.items():
            lacking = [s.get("external_id") for s in samples
                       if not _lookup(s.get("attributes") or {}, path)]
            if not lacking:
                continue
            n = len(samples)
            who = ("none of the" if len(lacking) == n else f"{len(lacking)} of the")
            r.add(Finding("warning", "missing_attribute",
                          f"{who} {n} sampled contacts {'has' if len(lacking) == n else 'have'}"
                          f" no {text}; their messages would fail with TEMPLATE_ERROR",
                          f"add the attribute to those contacts, or write "
                          f"{{{{ {text} | default(\"...\") }}}}",
                          field=fld, source=src, line=line, contacts=_named(lacking)))
        for text, (fld, src, line) in data_missing.items():
            r.add(Finding("warning", "missing_data", f"the sample data has no {text}",
                          f"send {text} with every message, or write "
                          f"{{{{ {text} | default(\"...\") }}}}",
                          field=fld, source=src, line=line))

    def _unsubscribe(self, r: Report, b: Bundle) -> None:
        if not b.marketing or b.template.kind != "message":
            return
        bodies = [n for n in b.parsed if n in ("@html", "@text", "@layout/html",
                                                "@layout/text")
                  or not n.startswith("@")]
        if any(free_names(b.parsed[n]) & {"unsubscribe_url"} for n in bodies):
            return
        r.add(Finding("warning", "no_unsubscribe_link",
                      "this marketing email has no {{ unsubscribe_url }} in its body",
                      "place <a href=\"{{ unsubscribe_url }}\">Unsubscribe</a> where readers "
                      "look for it. pushguard adds the List-Unsubscribe headers and, when "
                      "the body has no link, a small footer with one, but a link you place "
                      "reads better", field="html" if "@html" in b.parsed else "text"))

    # -- rendering --------------------------------------------------------------------------

    def _render(self, r: Report, b: Bundle, samples: Sequence[Mapping[str, Any]],
                data: Mapping[str, Any] | None) -> list[tuple[str | None, Rendered]]:
        lenient_data = [] if data is not None else ["data"]
        contexts, who = [], []
        for s in samples:
            contexts.append(context(b, s, data, lenient=lenient_data))
            who.append(s.get("external_id"))
        if not contexts:  # no contacts yet: one made-up contact whose attributes are all there
            contexts.append(context(b, None, data, lenient=["contact.attributes",
                                                            *lenient_data]))
            who.append(None)
        if b.template.kind != "message":
            for ctx in contexts:  # a partial may be used in marketing email: let it render
                ctx["markup"] = dict(UNSUBSCRIBE_PLACEHOLDERS)
        r.samples = len(samples)
        results = self.renderer.render(b, contexts)
        ok: list[tuple[str | None, Rendered]] = []
        failed: dict[tuple[Any, ...], tuple[TemplateError, list[str | None]]] = {}
        reported = {f.problem for f in r.findings}
        missing = [f.problem for f in r.findings
                   if f.code in ("missing_attribute", "missing_data")]
        for ext, res in zip(who, results, strict=True):
            if isinstance(res, TemplateError):
                key = (res.kind, res.field, res.line, res.problem, res.partial)
                failed.setdefault(key, (res, []))[1].append(ext)
            else:
                ok.append((ext, res))
        for err, exts in failed.values():
            var = err.variable or ""
            if err.kind == "undefined" and var and any(var in m for m in missing):
                continue  # reported above, with the contacts that lack it
            if err.problem in reported:
                continue
            everyone = len(exts) == len(contexts)
            severity: Severity = "error"
            if err.kind == "undefined" and samples:
                severity = "warning"  # the data of real contacts, not the template
            elif err.kind in ("header", "invalid") and samples and not everyone:
                severity = "warning"
            fix = _FIXES.get(err.kind) or (f"supply {var} or write {{{{ {var} | "
                                           f"default(\"...\") }}}}" if var else
                                           "fix the expression at that line")
            r.add(Finding(severity, err.kind, err.problem, fix, field=err.field,
                          line=err.line, source=err.partial, contacts=_named(exts)))
        return ok

    # -- sizes ------------------------------------------------------------------------------

    def _over(self, r: Report, code: str, problem: str, fix: str, fld: str,
              exts: list[str | None], total: int) -> None:
        everyone = len(exts) == total
        r.add(Finding("error" if everyone else "warning", code,
                      problem if everyone else f"{problem} for {len(exts)} of {total} "
                      "sampled contacts", fix, field=fld, contacts=_named(exts)))

    def _sizes(self, r: Report, b: Bundle, rendered: list[tuple[str | None, Rendered]]) -> None:
        if not rendered:
            return
        channel = b.template.channel
        n = len(rendered)
        if channel == "push":
            self._push_sizes(r, rendered, n)
        elif channel == "sms":
            self._sms_sizes(r, rendered, n)
        elif channel == "email":
            subj = [(e, len(x.fields.get("subject", ""))) for e, x in rendered]
            html = [(e, len(x.fields.get("html", "").encode())) for e, x in rendered]
            body = [(e, len(x.fields.get("html", "").encode())
                     + len(x.fields.get("text", "").encode())) for e, x in rendered]
            r.sizes["email"] = {"subject_max": max(s for _, s in subj),
                                "html_bytes_max": max(s for _, s in html),
                                "body_bytes_max": max(s for _, s in body)}
            long = [e for e, s in subj if s > MAX_SUBJECT]
            if long:
                self._over(r, "size", f"the subject is over {MAX_SUBJECT} characters",
                           "shorten the subject", "subject", long, n)
            big = [e for e, s in body if s > MAX_BODY_BYTES]
            if big:
                self._over(r, "size", f"the body is over {MAX_BODY_BYTES} bytes",
                           "send less; link to the rest", "html", big, n)
            clipped = [e for e, s in html if s > GMAIL_CLIP]
            if clipped and not big:
                r.add(Finding("warning", "gmail_clip", f"the HTML is over {GMAIL_CLIP // 1024}"
                              " KB: Gmail clips it, hiding the end (and the unsubscribe link)",
                              "trim the HTML (inline CSS, comments, whitespace)", field="html",
                              contacts=_named(clipped)))
        elif channel == "webhook":
            r.sizes["webhook"] = {"bytes_max": max(len(json.dumps(x.content["json"]).encode())
                                                   for _, x in rendered)}

    def _push_sizes(self, r: Report, rendered: list[tuple[str | None, Rendered]],
                    n: int) -> None:
        limits = {"apns": apns.MAX_PAYLOAD, "fcm": fcm.MAX_MESSAGE,
                  "webpush": webpush.MAX_PLAINTEXT}
        sizes: dict[str, list[tuple[str | None, int]]] = {k: [] for k in limits}
        problems: dict[tuple[str, str, str], list[str | None]] = {}
        for ext, x in rendered:
            for provider in limits:
                body = tc.push_content(x.content, provider)
                try:
                    size = _push_size(provider, body)
                except InputError as exc:
                    problems.setdefault((provider, exc.field, exc.problem), []).append(ext)
                    continue
                sizes[provider].append((ext, size))
        r.sizes["push"] = {p: {"max": max((s for _, s in v), default=None),
                               "limit": limits[p]} for p, v in sizes.items()}
        for p, v in sizes.items():
            over = [e for e, s in v if s > limits[p]]
            if over:
                name = {"apns": "APNs", "fcm": "FCM", "webpush": "Web Push"}[p]
                self._over(r, "size", f"the {name} payload is over {limits[p]} bytes "
                           f"(largest: {max(s for _, s in v)})", "shorten the title, body or "
                           "data; put long content behind a link", "body", over, n)
        for (p, fld, problem), exts in problems.items():
            self._over(r, "push_content", f"{p}: {fld}: {problem}", "fix the field so every "
                       "push service takes it", fld.removeprefix("content.") or "body",
                       exts, n)

    def _sms_sizes(self, r: Report, rendered: list[tuple[str | None, Rendered]],
                   n: int) -> None:
        infos = [(e, x.fields.get("text", ""), sms_segments.count(x.fields.get("text", "")))
                 for e, x in rendered]
        worst = max(infos, key=lambda i: i[2].segments)[2]
        r.sizes["sms"] = {"segments_max": worst.segments, "encoding": worst.encoding,
                          "characters_max": max(i[2].characters for i in infos)}
        too_long = [e for e, _, i in infos if i.too_long]
        if too_long:
            self._over(r, "size", f"the text is over {sms_segments.MAX_CHARACTERS} "
                       "characters, which no SMS can carry", "shorten the text", "text",
                       too_long, n)
            return
        ucs = [(e, t) for e, t, i in infos if i.encoding == "UCS-2"]
        if ucs:
            odd = sorted({c for _, t in ucs for c in t if c not in sms_segments.GSM7_BASIC
                          and c not in sms_segments.GSM7_EXTENDED})[:8]
            r.add(Finding("warning", "sms_encoding", "the text needs UCS-2 (70 characters a "
                          f"segment instead of 160) because of {' '.join(map(repr, odd))}",
                          "replace those characters with GSM-7 ones (straight quotes, no "
                          "emoji) if you can", field="text",
                          contacts=_named([e for e, _ in ucs]) if len(ucs) < n else []))
        multi = [e for e, _, i in infos if i.segments > 1]
        if multi:
            r.add(Finding("warning", "sms_segments", f"the text is {worst.segments} segments "
                          f"({worst.encoding}); each is billed as one SMS",
                          "shorten the text to fit one segment (160 GSM-7 or 70 UCS-2 "
                          "characters)", field="text",
                          contacts=_named(multi) if len(multi) < n else []))

    # -- links ------------------------------------------------------------------------------

    def _collect_links(self, r: Report, b: Bundle,
                       rendered: list[tuple[str | None, Rendered]]) -> None:
        sources = {f.path: f.source for f in b.fields}
        seen: dict[tuple[str, bool], LinkRef] = {}
        for _, x in rendered:
            for path, text in x.fields.items():
                if path == "image":
                    found = [(text.strip(), True, 1)] if linkcheck.usable(text.strip()) else []
                elif path == "html":
                    found = linkcheck.from_html(text)
                else:
                    found = linkcheck.from_text(text)
                for url, image, _line in found:
                    if (url, image) not in seen:
                        seen[(url, image)] = LinkRef(url, image, path,
                                                     _line_of(sources.get(path, ""), url))
        refs = list(seen.values())
        if len(refs) > linkcheck.MAX_LINKS:
            r.add(Finding("warning", "links_not_checked", f"{len(refs)} distinct links; only "
                          f"the first {linkcheck.MAX_LINKS} are checked", "fewer links, or "
                          "personalise them with query parameters less"))
            refs = refs[:linkcheck.MAX_LINKS]
        r.links = refs

    async def check_links(self, r: Report, checker: linkcheck.LinkChecker) -> None:
        """Check the links and images :meth:`lint` found, and add what is wrong."""
        results = await checker.check((ref.url, ref.image) for ref in r.links)
        r.links_checked = True
        r.link_results = [results[(ref.url, ref.image)] for ref in r.links]
        for ref, res in zip(r.links, r.link_results, strict=True):
            if res.ok:
                continue
            what = "image" if ref.image else "link"
            hard = res.code in ("unsafe", "redirect_loop", "too_many_redirects", "not_image",
                                "bad_redirect") or res.status in (404, 410)
            fix = {
                "http_error": f"fix or replace the {what}" if res.status in (404, 410)
                else f"check the {what}'s server; if it is down for now, lint again later",
                "timeout": f"the server is slow or down: check the {what} in a browser",
                "unreachable": f"check the {what}'s host name",
                "unsafe": f"point the {what} at a public host",
                "redirect_loop": "fix the redirects on that server, or link to the final page",
                "too_many_redirects": "link to the final page directly",
                "bad_redirect": "link to the final page directly",
                "not_image": "point the image at the image file itself",
                "image_too_large": "compress or resize the image",
            }.get(res.code, f"check the {what}")
            r.add(Finding("error" if hard else "warning", f"{what}_{res.code}",
                          f"{what} {res.url} {res.problem}", fix, field=ref.field,
                          line=ref.line, url=res.url))


def _push_size(provider: str, body: dict[str, Any]) -> int:
    """The bytes a provider would send for ``body``, or InputError for anything else it
    would refuse. Being over the limit is reported by size, so it is not an error here."""
    if provider == "apns":
        try:
            payload, _ = apns.build_payload(body)
        except InputError as exc:
            over = re.match(r"makes an APNs payload of (\d+) bytes", exc.problem)
            if over:
                return int(over.group(1))
            raise
        return len(payload)
    if provider == "fcm":
        return len(_json({"message": fcm.build_message(body, token="", ttl=fcm.MAX_TTL,
                                                       priority=1)}))
    return len(webpush.payload_of(body))


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
