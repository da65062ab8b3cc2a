"""The errors templates raise, placed in the tree of :mod:`pushguard.exceptions`::

    DeliveryError
    └── TemplateError        a template did not render (cause TEMPLATE_ERROR)
    InputError
    └── LintRefused          a template saved with lint errors; carries every finding

A :class:`TemplateError` is what a send records when its template fails for one contact, so
its detail names the template, version, locale, field, line and variable. At the API it is a
422 naming the field (:meth:`TemplateError.as_input_error`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pushguard import taxonomy
from pushguard.exceptions import DeliveryError, InputError

if TYPE_CHECKING:
    from pushguard.templates.lint import Finding


class TemplateError(DeliveryError):
    """The template failed to render."""

    def __init__(self, problem: str, *, template_id: str, name: str, version: int,
                 locale: str, field: str | None = None, line: int | None = None,
                 variable: str | None = None, kind: str = "error",
                 partial: str | None = None) -> None:
        where = f"{field}" if field else "template"
        if partial:
            where += f" (in {partial})"
        if line:
            where += f" line {line}"
        super().__init__(
            taxonomy.TEMPLATE_ERROR,
            f"template {name} ({template_id}) version {version} [{locale}], {where}: {problem}",
            provider_code=f"TEMPLATE_{kind.upper()}",
        )
        self.problem = problem
        self.template_id = template_id
        self.name = name
        self.version = version
        self.locale = locale
        self.field = field
        self.line = line
        self.variable = variable
        self.kind = kind
        self.partial = partial

    def as_dict(self) -> dict[str, Any]:
        return {"template_id": self.template_id, "name": self.name, "version": self.version,
                "locale": self.locale, "field": self.field, "line": self.line,
                "variable": self.variable, "kind": self.kind, "partial": self.partial,
                "problem": self.problem}

    def as_input_error(self) -> InputError:
        field = f"content.{self.field}" if self.field else "content"
        where = f" (in {self.partial})" if self.partial else ""
        line = f"line {self.line}{where}: " if self.line else (f"{where.strip()}: " if where
                                                               else "")
        return InputError(field, f"{line}{self.problem}")


class LintRefused(InputError):
    """The template has lint errors and was not saved."""

    def __init__(self, findings: list[Finding]) -> None:
        errors = [f for f in findings if f.severity == "error"]
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(first.input_field, first.summary + more)
        self.findings = findings
