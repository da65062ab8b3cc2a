"""Rehearsals: a dry run that plans every message without sending one, and a test send to a
few internal recipients through the real providers.

The dry run ("shadow send") renders every message and applies every policy and routing rule
the fan-out would: the plan is recipient x channel x provider, with the fallback chain, the
gate's verdict at the send time and the estimated cost. Nothing is written but the plan.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import IO, TYPE_CHECKING, Any

from pushguard.audience.links import add_links
from pushguard.campaigns.fanout import render_targets
from pushguard.campaigns.service import spec_of
from pushguard.campaigns.survey import walk
from pushguard.exceptions import ConfigError, Conflict, InputError, NotFound
from pushguard.models import PRIORITIES, Accepted, NewMessage
from pushguard.store.sql import audit
from pushguard.templates.errors import TemplateError
from pushguard.templates.store import template_contact

if TYPE_CHECKING:
    from pushguard.campaigns.service import Campaigns

TEST_SCOPE = "campaign-test"


def dry_run(c: Campaigns, ref: str, *, limit: int = 100,
            out: IO[str] | None = None) -> dict[str, Any]:
    """The plan's summary and its first ``limit`` rows; every row goes to ``out`` (JSON
    lines) when given."""
    started = time.perf_counter()
    row = c.find(ref)
    spec = spec_of(row)
    composer = c.composer(spec)
    when = spec.schedule.at.timestamp() if spec.schedule and spec.schedule.at else time.time()
    outcomes: Counter[str] = Counter()
    routes: Counter[tuple[str, str]] = Counter()
    reasons: Counter[str] = Counter()
    cost = 0.0
    size = 0
    rows: list[dict[str, Any]] = []
    for targets in walk(c, spec, when):
        live = [t for t in targets if t.problem is None
                and (t.stop is None or t.stop.state.value == "deferred")]
        variants = {t.id: composer.variant_of(row.id, t.id) for t in live}
        contents = render_targets(composer, live, variants)
        for t in targets:
            reason: str | None
            plan: dict[str, Any] = {"contact": t.contact["external_id"], "channel": t.channel,
                                    "to": t.address, "variant": variants.get(t.id)}
            if t.problem is not None:
                outcome, reason = "not_sent", f"{t.problem[0]}: {t.problem[1]}"
            elif t.stop is not None and t.stop.state.value != "deferred":
                outcome, reason = "not_sent", f"{t.stop.rule}: {t.stop.detail}"
            else:
                assert t.step is not None and t.channel is not None
                content = contents[(t.id, t.step)]
                name = composer.template_of(t.step, variants.get(t.id))
                plan["template"] = name
                if isinstance(content, TemplateError):
                    outcome, reason = "not_sent", f"TEMPLATE_ERROR: {content}"
                else:
                    outcome = "deferred" if t.stop is not None else "send"
                    reason = t.stop.detail if t.stop is not None else None
                    providers = c.app.config.providers_for(t.channel)
                    first = providers[0]
                    plan.update(provider=first.name, failover=[p.name for p in providers[1:]],
                                fallback=[ch for _, ch, _ in t.legs], cost=first.cost or 0.0,
                                bytes=len(json.dumps(content).encode()))
                    routes[(t.channel, first.name)] += 1
                    cost += first.cost or 0.0
                    size += plan["bytes"]
            plan.update(outcome=outcome, reason=reason)
            outcomes[outcome] += 1
            if reason and outcome == "not_sent":
                reasons[reason.split(":")[0]] += 1
            if len(rows) < limit:
                rows.append(plan)
            if out is not None:
                out.write(json.dumps(plan) + "\n")
    total = sum(outcomes.values())
    return {
        "campaign": row.id, "recipients": total, "outcomes": dict(outcomes),
        "not_sent_by": dict(reasons.most_common()),
        "routes": [{"channel": ch, "provider": p, "messages": n}
                   for (ch, p), n in routes.most_common()],
        "estimated_cost": round(cost, 4), "rendered_bytes": size,
        "elapsed_seconds": round(time.perf_counter() - started, 3),
        "plan": rows, "plan_truncated": total > len(rows),
    }


def test_send(c: Campaigns, ref: str, *, to: list[str] | None = None,
              as_contact: str | None = None, actor: str) -> dict[str, Any]:
    """Render the campaign for one real recipient (``as_contact``, or the segment's first)
    and send it to internal addresses (``to``, or the campaign's seeds) now, without the
    campaign's topic: internal addresses hold no consent, and these messages are not part
    of the campaign's results. A marketing email carries the unsubscribe header and links
    as in the real send, with stand-ins (:meth:`Links.test_url`) for the contact's own."""
    row = c.find(ref)
    spec = spec_of(row)
    seeds = list(to or spec.seeds)
    if not seeds:
        raise InputError("to", "give the addresses to send the test to, or set the "
                         "campaign's seeds")
    contact = _as_contact(c, spec, as_contact)
    composer = c.composer(spec)
    marketing = c.app.audience.topic_kinds().get(spec.topic) == "marketing"
    steps = {s.channel: i for i, s in enumerate(spec.channels)}
    memo: dict[tuple[str, str], str] = {}
    msgs = []
    for i, seed in enumerate(seeds):
        channel, _, address = seed.partition(":")
        if channel not in steps or not address:
            channel, address = spec.channels[0].channel, seed
        step = steps[channel]
        name = composer.template_of(step, None)
        (content,) = composer.render(name, step, channel, [contact])
        if isinstance(content, TemplateError):
            raise InputError(f"to[{i}]", f"the {channel} template does not render for "
                             f"{contact.get('external_id')}: {content}")
        if marketing and channel == "email":
            content = _test_links(c, content, spec.topic)
        msgs.append(NewMessage(
            channel=channel, to=c.app.intake._target(channel, address, content, f"to[{i}].",
                                                    memo),
            content=content, priority=PRIORITIES["high"], ttl=3600, template=name))
    results = c.store.enqueue(msgs, scope=TEST_SCOPE)
    with c.store._write() as conn:
        audit(conn, actor, "campaign.test_send", f"campaign:{row.id}",
              {"to": [m.to for m in msgs], "as": contact.get("external_id")})
    return {"campaign": row.id, "rendered_as": contact.get("external_id"), "sent": [
        {"channel": m.channel, "to": m.to, "id": r.id, "state": r.state.value}
        for m, r in zip(msgs, results, strict=True) if isinstance(r, Accepted)]}


def _test_links(c: Campaigns, content: dict[str, Any], topic: str) -> dict[str, Any]:
    """A marketing email as the send path dresses it (List-Unsubscribe headers, the links in
    the body or a footer), with stand-in links: the real ones would unsubscribe the contact
    the test is rendered as, from wherever the test message is forwarded."""
    try:
        links = c.app.links
    except ConfigError as exc:
        raise Conflict("no PUSHGUARD_SECRET_KEY to sign the unsubscribe link a marketing "
                       "email must carry: set it, or the campaign's emails will be held "
                       "too") from exc
    return add_links(content, links.test_url("unsubscribe", topic, "email"),
                     links.test_url("preferences", topic, "email"))


def _as_contact(c: Campaigns, spec: Any, ref: str | None) -> dict[str, Any]:
    if ref is not None:
        try:
            return c.app.templates.store.contact(ref)
        except NotFound as exc:
            raise InputError("as", exc.message) from exc
    for page in c.segments.members(c.segments.filter_of(spec.segment, spec.filter), page=1):
        return template_contact(page[0])
    return {"id": None, "external_id": "(a contact with no data)", "attributes": {}}
