"""The pre-flight's survey: every recipient walked through the send's own path (channel,
address, the pre-send gate at the send time, the template's variables), tallied by what would
stop them.

The walk is CPU-bound Python over a page of contacts at a time (about 100-200 us a recipient
on one core). From :data:`SAMPLE_FROM` recipients on, the pre-flight therefore walks a uniform
random sample of :data:`SAMPLE` of them and scales the tallies up, saying so and giving the
margin of its predicted rate; an exact survey (``exact``) splits the audience into ranges of
contact ids surveyed by several processes at once (one per core, up to four), each with its
own connection and gate, and adds the tallies up.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from pushguard.audience.gate import UNCONFIRMED, WITHDREW
from pushguard.campaigns.models import CampaignIn
from pushguard.campaigns.service import spec_of
from pushguard.campaigns.targets import Target, plan
from pushguard.store.schema import contacts

if TYPE_CHECKING:
    from pushguard.campaigns.service import Campaigns
    from pushguard.config import Config
    from pushguard.settings import Settings

EXAMPLES = 5
LINT_SAMPLE = 20
#: from this many contacts on, an exact survey runs on several processes
PARALLEL_FROM = 100_000
MAX_PROCESSES = 4
#: from this many recipients on, the pre-flight surveys a random sample of SAMPLE of them
SAMPLE_FROM = 250_000
SAMPLE = 100_000

#: the finding code of each gate rule (consent split by why) and target problem
GATE_CODES = {"suppression": "suppressed", "address": "deactivated_address",
              "no_consent": "no_consent", "withdrawn": "withdrawn",
              "unverified": "unverified", "quiet_hours": "quiet_hours",
              "frequency_cap": "frequency_cap", "topic": "unknown_topic"}


@dataclass
class Survey:
    count: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    detail: dict[str, str] = field(default_factory=dict)
    total: int = 0
    #: recipients that would be sent (now or after quiet hours), per channel
    per_channel: Counter[str] = field(default_factory=Counter)
    #: real recipients per template, to lint it with
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: (recipients surveyed, recipients) when the tallies are scaled up from a sample
    sampled: tuple[int, int] | None = None

    def scale_to(self, recipients: int) -> None:
        """Scale the tallies of a uniform sample up to the whole audience."""
        k = self.total
        factor = recipients / k if k else 0.0
        self.count = Counter({c: round(n * factor) for c, n in self.count.items()})
        self.per_channel = Counter({c: round(n * factor) for c, n in self.per_channel.items()})
        self.sampled = (k, recipients)
        self.total = recipients

    def margin(self, rate: float) -> float:
        """Half the 95 % confidence interval of a rate estimated from the sample (0 when
        every recipient was surveyed)."""
        if self.sampled is None:
            return 0.0
        k, n = self.sampled
        if k == 0 or k >= n:
            return 0.0
        return 1.96 * math.sqrt(rate * (1 - rate) / k * (1 - k / n))

    def add(self, code: str, who: str, detail: str | None = None) -> None:
        self.count[code] += 1
        got = self.examples.setdefault(code, [])
        if len(got) < EXAMPLES:
            got.append(who)
        if detail and code not in self.detail:
            self.detail[code] = detail

    def merge(self, other: Survey) -> None:
        self.count.update(other.count)
        for code, who in other.examples.items():
            mine = self.examples.setdefault(code, [])
            mine.extend(who[:EXAMPLES - len(mine)])
        for code, text in other.detail.items():
            self.detail.setdefault(code, text)
        self.total += other.total
        self.per_channel.update(other.per_channel)
        for name, got in other.samples.items():
            mine_s = self.samples.setdefault(name, [])
            mine_s.extend(got[:LINT_SAMPLE - len(mine_s)])


def walk(c: Campaigns, spec: CampaignIn, when: float, *, after: str = "",
         until: str | None = None, ids: Sequence[str] | None = None) -> Iterator[list[Target]]:
    """The campaign's recipients (with ids in ``(after, until]``, or among ``ids``) as
    targets, a page at a time, gated at ``when`` (under a ``local_time`` schedule, at each
    contact's send time from ``when`` on)."""
    memo: dict[tuple[str, str], str] = {}
    raw = c.segments.filter_of(spec.segment, spec.filter)
    members = c.segments.members(raw, after=after, until=until) if ids is None \
        else c.segments.members_in(raw, ids)
    for page in members:
        with c.store._read() as conn:
            yield plan(c.store, conn, spec, page, c.app.guard, now=when, memo=memo,
                       default_tz=c.app.config.audience.default_timezone)


def stop_code(t: Target) -> str:
    assert t.stop is not None
    if t.stop.rule != "consent":
        return GATE_CODES[t.stop.rule]
    if UNCONFIRMED in t.stop.detail:
        return "unverified"
    return "withdrawn" if WITHDREW in t.stop.detail else "no_consent"


def survey(c: Campaigns, row: Any, spec: CampaignIn, when: float, *, after: str = "",
           until: str | None = None, ids: Sequence[str] | None = None) -> Survey:
    composer = c.composer(spec)
    s = Survey()
    for targets in walk(c, spec, when, after=after, until=until, ids=ids):
        for t in targets:
            s.total += 1
            who = str(t.contact["external_id"])
            if t.problem is not None:
                s.add(t.problem[0], who, t.problem[1])
                continue
            assert t.step is not None and t.channel is not None
            if t.stop is not None:
                s.add(stop_code(t), who, t.stop.detail)
                if t.stop.state.value == "suppressed":
                    continue
            name = composer.template_of(t.step, composer.variant_of(row.id, t.id))
            lacking = composer.missing(name, t.step, t.contact)
            if lacking:
                s.add("missing_variable", who, f"{name}: {', '.join(m.text for m in lacking)}")
                continue
            s.per_channel[t.channel] += 1
            got = s.samples.setdefault(name, [])
            if len(got) < LINT_SAMPLE:
                got.append(t.contact)
    return s


def survey_all(c: Campaigns, row: Any, spec: CampaignIn, when: float, *,
               processes: int | None = None, exact: bool = False) -> Survey:
    """:func:`survey` over the recipients: a random sample of a large audience unless
    ``exact``, else every one (on several processes for a large audience)."""
    if not exact:
        raw = c.segments.filter_of(spec.segment, spec.filter)
        n = c.segments.count(raw)
        if n >= SAMPLE_FROM:
            s = survey(c, row, spec, when, ids=c.segments.sample(raw, SAMPLE))
            s.scale_to(n)
            return s
    with c.store._read() as conn:
        n = int(conn.execute(select(func.count()).select_from(contacts)).scalar_one())
        k = processes if processes is not None else (
            min(os.cpu_count() or 1, MAX_PROCESSES) if n >= PARALLEL_FROM else 1)
        k = max(1, min(k, n))
        bounds = [conn.execute(select(contacts.c.id).order_by(contacts.c.id)
                               .offset(n * i // k).limit(1)).scalar_one() for i in range(1, k)]
    if k == 1:
        return survey(c, row, spec, when)
    ranges = list(zip(["", *bounds], [*bounds, None], strict=True))
    app = c.app
    with ProcessPoolExecutor(k - 1, mp_context=get_context("spawn")) as pool:
        others = [pool.submit(_survey_elsewhere, app.settings, app.config, c.store.url, row.id,
                              when, lo, hi) for lo, hi in ranges[1:]]
        result = survey(c, row, spec, when, after=ranges[0][0], until=ranges[0][1])
        for f in others:
            result.merge(f.result())
    return result


def _survey_elsewhere(settings: Settings, config: Config, url: str, campaign_id: str,
                      when: float, after: str, until: str | None) -> Survey:
    """One range, in a process of its own (its own connection, gate and caches)."""
    from pushguard.app import App
    from pushguard.store.sql import SQLStore

    store = SQLStore(url)
    app = App(settings=settings, store=store, config=config)
    try:
        row = app.campaigns.find(campaign_id)
        return survey(app.campaigns, row, spec_of(row), when, after=after, until=until)
    finally:
        app.templates.close()
        store.close()
