"""The pre-flight check: what would fail if this campaign were sent now, and why.

It walks every recipient through what the fan-out does (channel choice, address, the pre-send
gate at the send time, the template's variables) without rendering a million messages:
templates are linted once per version with a sample of the real recipients, and links and
images are checked over HTTP once per unique URL. Providers are checked from configuration
(credentials resolvable, options valid) and from their recent record (credential failures,
failure rates, rate limits against the audience).

Each finding has a count, examples, a severity (``block`` stops the send unless overridden,
``warn`` does not) and the fix. The report states the predicted delivery rate.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update

from pushguard import taxonomy
from pushguard.audience.gate import RULE_FIX
from pushguard.campaigns.models import CampaignIn
from pushguard.campaigns.service import spec_of, templates_mark
from pushguard.campaigns.survey import EXAMPLES, Survey, survey_all
from pushguard.exceptions import ConfigError, DeliveryError, NotFound
from pushguard.providers.base import ProviderContext
from pushguard.providers.registry import provider_class
from pushguard.store.schema import attempts, campaigns, messages
from pushguard.templates.lint import Report
from pushguard.views import rfc3339

if TYPE_CHECKING:
    from pushguard.campaigns.service import Campaigns

#: a provider failing more than this share of its calls in the last day is worth a warning
PROVIDER_WARN_RATE = 0.10
_PROVIDER_FAILURES = frozenset(c.name for c in taxonomy.CAUSES.values() if c.trips_breaker)

#: what the gate and the targets stop, by finding code (survey.GATE_CODES names the gate's):
#: (severity, problem, fix)
_GATE = {
    "suppressed": ("warn", "on a suppression list (bounced, complained or "
                    "unsubscribed)", RULE_FIX["suppression"]),
    "deactivated_address": ("warn", "their address was deactivated",
                RULE_FIX["address"]),
    "no_consent": ("warn", "never consented to this topic on this channel",
                   RULE_FIX["consent"]),
    "withdrawn": ("warn", "withdrew consent to this topic on this channel",
                  "Nothing to do: they said no. Never re-add them without new consent."),
    "unverified": ("warn", "subscribed but never confirmed (no double opt-in)",
                   "Send them a confirmation (pushguard contacts subscribe, or POST "
                   "/v1/contacts/{ref}/subscriptions) and send after they confirm; only "
                   "confirmed contacts get marketing."),
    "quiet_hours": ("warn", "in quiet hours at the send time: their message "
                    "waits until the hours end", RULE_FIX["quiet_hours"]),
    "frequency_cap": ("warn", "already received as many messages as the cap "
                      "allows", RULE_FIX["frequency_cap"]),
    "unknown_topic": ("block", "the topic does not exist", RULE_FIX["topic"]),
    "no_address": ("warn", "no active address on any of the campaign's "
                   "channels", "Add a channel they can be reached on, or collect addresses."),
    "invalid_address": ("warn", "their address is not valid for its "
                        "channel", "Fix or remove the address (pushguard doctor data finds "
                        "them all)."),
}
#: recipients these stop are not sent (quiet hours only delay)
_NOT_SENT = {"suppressed", "deactivated_address", "no_consent", "withdrawn", "unverified",
             "frequency_cap", "unknown_topic", "no_address", "invalid_address",
             "missing_variable"}


def finding(code: str, severity: str, count: int, problem: str, fix: str,
            examples: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"code": code, "severity": severity, "count": count, "problem": problem,
            "fix": fix, "examples": examples or [], **{k: v for k, v in extra.items()
                                                        if v is not None}}


class Preflight:
    def __init__(self, campaigns: Campaigns) -> None:
        self.c = campaigns
        self.app = campaigns.app

    def run(self, ref: str, *, links: bool = True, record: bool = True,
            processes: int | None = None, exact: bool = False) -> dict[str, Any]:
        """The pre-flight report of a campaign. From ``survey.SAMPLE_FROM`` recipients on, the
        audience's tallies are estimated from a uniform random sample (the report's
        ``sample`` says how many, and the margin of the predicted rate) unless ``exact``."""
        started = time.perf_counter()
        row = self.c.find(ref)
        spec = spec_of(row)
        now = time.time()
        mark = templates_mark(self.c.store)  # before reading them: a change meanwhile shows
        when = spec.schedule.at.timestamp() if spec.schedule and spec.schedule.at else now
        composer = self.c.composer(spec)
        seen = survey_all(self.c, row, spec, when, processes=processes, exact=exact)
        tally, total, per_channel, samples = seen, seen.total, seen.per_channel, seen.samples
        findings = self._audience_findings(tally, total)
        findings += self._template_findings(spec, composer, samples, links=links)
        findings += self._provider_findings(spec, per_channel, now, live=links)
        not_sent = sum(n for code, n in tally.count.items() if code in _NOT_SENT)
        predicted = total - not_sent
        rate = predicted / total if total else 0.0
        if total == 0:
            findings.append(finding("empty_audience", "block", 0, "the segment matches no "
                                    "contact", "Check the segment's filter (pushguard "
                                    "segments preview)."))
        elif rate < spec.min_predicted_rate:
            top = [f for f in findings if f["code"] in _NOT_SENT]
            top.sort(key=lambda f: -f["count"])
            findings.append(finding(
                "low_predicted_rate", "block", total - predicted,
                f"only {rate:.0%} of the {total} recipients would receive it (the campaign "
                f"asks for at least {spec.min_predicted_rate:.0%}); mostly: "
                + "; ".join(f"{f['count']} {f['problem']}" for f in top[:3]),
                "Fix the causes above, narrow the segment to those who can receive it, or "
                "lower min_predicted_rate if this is expected."))
        findings.sort(key=lambda f: (f["severity"] != "block", -f["count"]))
        report = {
            "campaign": row.id, "name": row.name, "checked_at": rfc3339(now),
            "checked_at_ts": now, "updated_at_ts": row.updated_at, "templates_mark": mark,
            "send_time": rfc3339(when),
            "recipients": total,
            "predicted": {"delivered": predicted, "not_sent": not_sent,
                          "deferred": tally.count.get("quiet_hours", 0),
                          "delivery_rate": round(rate, 4),
                          "by_channel": dict(per_channel)},
            "sample": None if seen.sampled is None else {
                "surveyed": seen.sampled[0], "recipients": seen.sampled[1],
                "delivery_rate_margin": round(seen.margin(rate), 4)},
            "blocking": sum(1 for f in findings if f["severity"] == "block"),
            "findings": findings,
            "estimate": self._estimate(spec, per_channel, now),
            "elapsed_seconds": round(time.perf_counter() - started, 3),
        }
        if record:
            with self.c.store._write() as conn:
                conn.execute(update(campaigns).where(campaigns.c.id == row.id).values(
                    preflight=json.dumps(report)))
        return report

    # -- findings ---------------------------------------------------------------------------

    def _audience_findings(self, tally: Survey, total: int) -> list[dict[str, Any]]:
        out = []
        for code, n in tally.count.items():
            if code == "missing_variable":
                out.append(finding(
                    code, "warn", n, "their data lacks a variable the template reads without a "
                    f"default ({tally.detail[code]}): their message would fail to render",
                    "Add the attribute to those contacts, or give it a default in the "
                    "template: {{ contact.attributes.x | default(\"...\") }}",
                    tally.examples[code]))
                continue
            severity, problem, fix = _GATE[code]
            share = f" ({n / total:.0%} of the audience)" if total else ""
            out.append(finding(code, severity, n, f"{problem}{share}", fix,
                               tally.examples[code], detail=tally.detail.get(code)))
        return out

    def _template_findings(self, spec: CampaignIn, composer: Any,
                           samples: dict[str, list[dict[str, Any]]], *,
                           links: bool) -> list[dict[str, Any]]:
        templates = self.app.templates
        reports: list[Report] = []
        names = dict.fromkeys([s.template for s in spec.channels] + [
            v.template for v in (spec.experiment.variants if spec.experiment else [])])
        for name in names:
            t = composer.row(name)
            topic_kind = templates.store.topic_kind(t.topic) if t.topic else None
            for v in composer._current[name].values():
                reports.append(templates.linter.lint(
                    t, v, samples=samples.get(name) or [], data=spec.data,
                    topic_kind=topic_kind))
        if links:  # on a thread of its own: the caller may be inside an event loop
            with ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, templates.check_links(reports)).result()
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for r in reports:
            for f in r.findings:
                key = (f.code, f.url or f.problem)
                if key in out:
                    continue
                out[key] = finding(
                    f"template.{f.code}", "block" if f.severity == "error" else "warn",
                    len(f.contacts) or 1, f"{r.template.name} [{r.version.locale}]: "
                    f"{f.summary}", f.fix, f.contacts[:EXAMPLES], url=f.url, field=f.field)
        return list(out.values())

    def _provider_findings(self, spec: CampaignIn, per_channel: Counter[str],
                           now: float, *, live: bool = True) -> list[dict[str, Any]]:
        out = []
        context = ProviderContext(self.app.settings, self.app.guard)
        names = {n: s.channel for s in spec.channels
                 for n in self.app.config.channels.get(s.channel, ())}
        built = {}
        for name, channel in names.items():
            pc = self.app.config.providers[name]
            try:
                built[name] = provider_class(pc.type)(pc, context)
            except (ConfigError, NotFound) as exc:
                out.append(finding("provider_config", "block", per_channel.get(channel, 0),
                                   f"provider {name} ({channel}) cannot start: {exc}",
                                   "Fix its options in pushguard.toml, or set the environment "
                                   "variables its credentials name.", provider=name))
        if live and built:
            with ThreadPoolExecutor(1) as pool:  # the caller may be inside an event loop
                failures = pool.submit(asyncio.run, _live_checks(built)).result()
            for name, err in failures.items():
                first = names[name] == spec.channels[0].channel
                out.append(finding(
                    "provider_live_check", "block" if first else "warn",
                    per_channel.get(names[name], 0), f"provider {name} failed a live check "
                    f"(connect and log in as a send would; no message reaches anyone): "
                    f"{err.cause.name}: {err.detail}",
                    err.cause.fix, provider=name, provider_code=err.provider_code))
        since = now - 86400
        with self.c.store._read() as conn:
            auth = conn.execute(select(attempts.c.provider, func.count(), func.max(
                attempts.c.at)).where(attempts.c.at >= since, attempts.c.provider.in_(
                    list(names)), attempts.c.cause == "AUTH_CREDENTIALS")
                .group_by(attempts.c.provider)).all()
            calls = conn.execute(select(attempts.c.provider, attempts.c.cause, func.count())
                                 .where(attempts.c.at >= since,
                                        attempts.c.provider.in_(list(names)))
                                 .group_by(attempts.c.provider, attempts.c.cause)).all()
        for name, n, last in auth:
            out.append(finding(
                "provider_credentials", "block", int(n), f"provider {name} refused pushguard's "
                f"credentials {n} time(s) in the last 24 h (last at {rfc3339(last)})",
                "Renew the credentials (API key, token, certificate) and check them with a "
                "test send before sending the campaign.", provider=name))
        # Only the kinds of failure that can open a provider's circuit (outages, timeouts,
        # rate limits) say it is failing; bad addresses and refused content say nothing about
        # it. Attempts do not keep the scope of a rate limit, so a per-device 429 counts too.
        by: dict[str, Counter[str]] = defaultdict(Counter)
        for name, cause, n in calls:
            by[name][cause or ""] += int(n)
        for name, c in by.items():
            made = sum(c.values())
            own = {k: n for k, n in c.items() if k in _PROVIDER_FAILURES}
            bad = sum(own.values())
            if made >= 20 and bad / made > PROVIDER_WARN_RATE:
                causes = ", ".join(f"{k} {n}" for k, n in sorted(own.items(), key=lambda kv:
                                                                  -kv[1]))
                out.append(finding(
                    "provider_failing", "warn", bad, f"provider {name} failed {bad} of its "
                    f"{made} calls in the last 24 h ({bad / made:.0%}: {causes})",
                    "Look at why (pushguard failures --by cause --provider NAME); the failover "
                    "order or a retry through another provider may be safer.", provider=name))
        return out

    def _estimate(self, spec: CampaignIn, per_channel: Counter[str],
                  now: float) -> dict[str, Any]:
        """How long sending would take: the throttle, each channel's provider rate limit, or
        the rate this installation delivered at lately, whichever binds."""
        with self.c.store._read() as conn:
            recent = conn.execute(select(func.count()).select_from(messages).where(
                messages.c.delivered_at >= now - 600)).scalar_one()
        measured = recent / 600.0 if recent else None
        seconds = 0.0
        limits: dict[str, Any] = {}
        for channel, n in per_channel.items():
            first = self.app.config.providers_for(channel)
            rate = first[0].rate if first and first[0].rate else None
            if spec.throttle is not None:
                rate = min(rate or float("inf"), spec.throttle / 60.0)
            if rate is None:
                rate = measured
            limits[channel] = {"recipients": n, "per_second": rate}
            if rate:
                seconds = max(seconds, n / rate)
        if spec.throttle is not None:  # the throttle is the whole campaign's, every channel
            seconds = max(seconds, sum(per_channel.values()) * 60.0 / spec.throttle)
        costs = {ch: (self.app.config.providers_for(ch)[0].cost or 0.0) * n
                 for ch, n in per_channel.items() if self.app.config.providers_for(ch)}
        return {"seconds": round(seconds, 1) if seconds else None, "channels": limits,
                "measured_per_second": round(measured, 2) if measured else None,
                "cost": round(sum(costs.values()), 4),
                "expires_before_sent": bool(seconds and seconds > spec.ttl)}


async def _live_checks(providers: dict[str, Any]) -> dict[str, DeliveryError]:
    """Each provider's live check, at once; the failures by provider."""
    async def one(p: Any) -> DeliveryError | None:
        try:
            await p.check()
        except DeliveryError as exc:
            return exc
        finally:
            await p.close()
        return None

    got = await asyncio.gather(*(one(p) for p in providers.values()))
    return {name: err for name, err in zip(providers, got, strict=True) if err is not None}
