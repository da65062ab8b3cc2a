"""A campaign as a client describes it: what to send, to whom, when and how fast."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class ChannelStep(BaseModel):
    """One channel of a campaign, with the template rendered for it. A recipient gets the
    first step they have an active address for; the later ones are their fallback chain."""

    model_config = ConfigDict(extra="forbid")

    channel: str = Field(max_length=32)
    template: str = Field(min_length=1, max_length=128)
    version: int | None = Field(default=None, ge=1, le=1_000_000,
                                description="default: the newest")


class Schedule(BaseModel):
    """When to send: at one moment (``at``), or at a local time in each contact's timezone
    (``local_time``, on ``date`` or the next time it comes). Without either: now."""

    model_config = ConfigDict(extra="forbid")

    at: AwareDatetime | None = None
    local_time: str | None = Field(default=None, description="HH:MM in each contact's zone")
    date: dt.date | None = None
    #: for contacts without a timezone
    default_timezone: str | None = Field(default=None, max_length=64)

    @field_validator("local_time")
    @classmethod
    def _hhmm(cls, v: str | None) -> str | None:
        if v is not None and not _HHMM.match(v):
            raise ValueError("must be HH:MM, e.g. 09:30")
        return v


class AutoPause(BaseModel):
    """Pause the campaign when, of its messages that moved in the last five minutes (and
    since it started, resumed or retried), at least ``min_finished`` were tried and more than
    ``failure_rate`` of those failed, or wait for or are in a retry after a failed try. A
    message that handed its recipient to a fallback leg is not counted (the leg is)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    failure_rate: float = Field(default=0.2, gt=0, le=1)
    min_finished: int = Field(default=50, ge=1)


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    template: str = Field(min_length=1, max_length=128,
                          description="replaces the first channel's template")
    weight: int = Field(default=1, ge=1, le=1000)


class Experiment(BaseModel):
    """An A/B test: each recipient is assigned a variant, by weight, stably (a hash of the
    campaign and the contact), and the results are reported per variant."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    variants: list[Variant] = Field(min_length=2, max_length=10)


class CampaignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")
    topic: str = Field(min_length=1, max_length=128,
                       description="what it is about: consent, caps and quiet hours follow it")
    channels: list[ChannelStep] = Field(min_length=1, max_length=5)
    segment: str | None = Field(default=None, description="a saved segment's name or id")
    filter: dict[str, Any] | None = Field(default=None, description="or an inline filter")
    data: dict[str, Any] = Field(default_factory=dict, description="the templates' `data`")
    schedule: Schedule | None = None
    throttle: int | None = Field(default=None, ge=1, le=10_000_000,
                                 description="messages per minute (default: as fast as the "
                                 "providers take them)")
    auto_pause: AutoPause = Field(default_factory=AutoPause)
    experiment: Experiment | None = None
    priority: Literal["high", "normal", "bulk"] = "bulk"
    ttl: int = Field(default=86400, ge=60, le=30 * 86400,
                     description="seconds each message may wait to be sent")
    #: a predicted delivery rate under this blocks the send (unless overridden)
    min_predicted_rate: float = Field(default=0.8, ge=0, le=1)
    #: addresses of internal recipients for test sends ("channel:address" or an address on
    #: the first channel)
    seeds: list[str] = Field(default_factory=list, max_length=50)
