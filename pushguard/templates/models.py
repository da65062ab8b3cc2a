"""Template requests as clients send them, for the HTTP API and the CLI alike."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
TOPIC_PATTERN = r"^[A-Za-z0-9_.:\-]+$"


class TemplateIn(BaseModel):
    """A new template and its first version."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=NAME_PATTERN,
                      description="unique; partials and layouts are referred to by it")
    kind: Literal["message", "layout", "partial"] = "message"
    channel: Literal["email", "push", "sms", "webhook"] | None = Field(
        default=None, description="required for messages and layouts")
    topic: str | None = Field(default=None, max_length=128, pattern=TOPIC_PATTERN,
                              description="a marketing topic gets unsubscribe_url and the "
                              "unsubscribe checks")
    layout: str | None = Field(default=None, max_length=128, pattern=NAME_PATTERN,
                               description="the name of a layout template to wrap it in")
    locale: str | None = Field(default=None, max_length=35,
                               description="the first version is the default one; leave out")
    content: dict[str, Any] = Field(description="per channel; every string is a Jinja "
                                    "template (see docs/how-to/templates.md)")
    data: dict[str, Any] | None = Field(default=None, description="sample per-message data "
                                        "to lint with")


class VersionIn(BaseModel):
    """A new version of a template, for one locale."""

    model_config = ConfigDict(extra="forbid")

    locale: str | None = Field(default=None, max_length=35,
                               description="fr, fr-CA...; leave out for the default")
    content: dict[str, Any]
    data: dict[str, Any] | None = None


class ContactSample(BaseModel):
    """A made-up contact to preview with."""

    model_config = ConfigDict(extra="forbid")

    external_id: str | None = Field(default=None, max_length=255)
    attributes: dict[str, Any] = Field(default_factory=dict)
    locale: str | None = Field(default=None, max_length=35)
    timezone: str | None = Field(default=None, max_length=64)


class LintIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    locale: str | None = Field(default=None, max_length=35,
                               description="lint this locale's version; default: every "
                               "locale's current version")
    version: int | None = Field(default=None, ge=1, le=1_000_000)
    data: dict[str, Any] | None = Field(default=None, description="sample per-message data")
    sample: int = Field(default=20, ge=1, le=200, description="real contacts to render with")
    check_links: bool = Field(default=True, description="check links and images over HTTP")


class RenderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact: str | ContactSample | None = Field(
        default=None, description="a contact's id or external id, or a made-up contact")
    data: dict[str, Any] | None = None
    locale: str | None = Field(default=None, max_length=35,
                               description="default: the contact's locale")
    version: int | None = Field(default=None, ge=1, le=1_000_000)
