"""Turn a sending campaign into messages: snapshot the recipients, then enqueue them in
batches, resumably.

Each batch is one transaction that commits the messages *and* marks their recipients
``enqueued``: a crash before it commits leaves the recipients pending (they are sent by the
next run), a crash after leaves them done; nobody gets two. Each message also carries an
idempotency key (campaign, round, contact), so even a batch replayed by hand is not sent twice.
A batch only commits while the campaign is still ``sending``: a pause that commits first wins.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, select, text, update

from pushguard.campaigns.composer import Composer
from pushguard.campaigns.models import CampaignIn
from pushguard.campaigns.service import LIVE, spec_of
from pushguard.campaigns.targets import Target, due_at, plan
from pushguard.exceptions import IdempotencyConflict, InputError
from pushguard.models import PRIORITIES, Accepted, NewMessage
from pushguard.routing import PREFER
from pushguard.store.schema import campaign_recipients, campaigns, messages
from pushguard.templates.errors import TemplateError

if TYPE_CHECKING:
    from pushguard.campaigns.service import Campaigns

BATCH = 500
SCOPE = "campaign"
#: without a throttle, at most this many of a campaign's messages wait in the queue at once
MAX_BACKLOG = 20_000


class _NotSending(Exception):
    """The campaign stopped sending (paused, cancelled) while a batch was prepared."""


# -- the recipients ---------------------------------------------------------------------------

def snapshot(c: Campaigns, row: Any) -> int:
    """Write the segment's members as the campaign's recipients (idempotent: a crash half
    way is finished by the next run) and return how many there are."""
    spec = spec_of(row)
    composer = c.composer(spec)
    start = float(row.started_at or time.time())
    default_tz = c.app.config.audience.default_timezone
    seq = 0
    for page in c.segments.members(c.segments.filter_of(spec.segment, spec.filter)):
        recs = [{"campaign_id": row.id, "contact_id": r.id, "seq": seq + i,
                 "due_at": due_at(spec, r, start, default_tz), "state": "pending", "round": 0,
                 "variant": composer.variant_of(row.id, r.id)} for i, r in enumerate(page)]
        seq += len(page)
        with c.store._write() as conn:
            conn.execute(c.store._insert_ignore(campaign_recipients), recs)
    with c.store._write() as conn:
        n = int(conn.execute(select(func.count()).select_from(campaign_recipients).where(
            campaign_recipients.c.campaign_id == row.id)).scalar_one())
        conn.execute(update(campaigns).where(campaigns.c.id == row.id).values(recipients=n))
    return n


# -- batches ----------------------------------------------------------------------------------

def live_messages(c: Campaigns, campaign_id: str) -> int:
    with c.store._read() as conn:
        return int(conn.execute(select(func.count()).select_from(messages).where(
            messages.c.campaign_id == campaign_id, messages.c.state.in_(LIVE))).scalar_one())


def fan_out(c: Campaigns, campaign_id: str, *, budget: int | None = None,
            deadline: float | None = None, batch: int = BATCH) -> int:
    """Enqueue due recipients until none is due, ``budget`` messages were enqueued, or
    ``deadline`` passed; returns the number of recipients handled."""
    row = c.find(campaign_id)
    spec = spec_of(row)
    composer = c.composer(spec)
    vias = {int(r["round"]): r.get("via") for r in json.loads(row.spec).get("retries", [])}
    memo: dict[tuple[str, str], str] = {}
    done = 0
    while (budget is None or done < budget) and (deadline is None or time.time() < deadline):
        size = batch if budget is None else min(batch, budget - done)
        now = time.time()
        with c.store._read() as conn:
            rows = conn.execute(text(
                "SELECT r.contact_id AS rid, r.round, r.variant, r.message_id AS prior, c.id, "
                "c.external_id, c.attributes, c.locale, c.timezone FROM campaign_recipients r "
                "LEFT JOIN contacts c ON c.id = r.contact_id WHERE r.campaign_id = :cid AND "
                "r.state = 'pending' AND r.due_at <= :now ORDER BY r.due_at, r.seq "
                f"LIMIT {int(size)}"), {"cid": row.id, "now": now}).all()
            if not rows:
                break
            present = [r for r in rows if r.id is not None]
            targets = plan(c.store, conn, spec, present, c.app.guard, now=now, memo=memo,
                           gate=False)
            prior = _prior_providers(conn, [r.prior for r in present
                                            if r.round > 0 and r.prior])
        gone = [r.rid for r in rows if r.id is None]
        try:
            done += _commit(c, row.id, spec, composer, targets,
                            {r.id: r for r in present}, prior, vias, gone,
                            {r.rid: r.round for r in rows}, memo)
        except _NotSending:
            break
    return done


def _prior_providers(conn: Connection, ids: Sequence[str]) -> dict[str, str | None]:
    if not ids:
        return {}
    q = select(messages.c.id, messages.c.last_provider).where(messages.c.id.in_(list(ids)))
    return {r.id: r.last_provider for r in conn.execute(q)}


def _commit(c: Campaigns, campaign_id: str, spec: CampaignIn, composer: Composer,
            targets: list[Target], rows: dict[str, Any], prior: dict[str, str | None],
            vias: dict[int, str | None], gone: list[str], rounds: dict[str, int],
            memo: dict[tuple[str, str], str]) -> int:
    """Enqueue one batch; the recipients are marked only if still pending in the round they
    were read in (a retry or another runner may have moved them since)."""
    skipped: list[tuple[str, str]] = [(cid, "the contact was erased") for cid in gone]
    contents = render_targets(composer, targets, {k: r.variant for k, r in rows.items()})
    msgs: list[NewMessage] = []
    owners: list[tuple[str, str, str]] = []  # (contact id, channel, variant) per message
    for t in targets:
        r = rows[t.id]
        if t.problem is not None or t.step is None or t.channel is None or t.address is None:
            code, detail = t.problem or ("no_address", "no address")
            skipped.append((t.id, f"{code}: {detail}"))
            continue
        try:
            m = _message(c, campaign_id, spec, composer, t, r, contents, prior, vias, memo)
        except (TemplateError, InputError) as exc:
            cause = "TEMPLATE_ERROR" if isinstance(exc, TemplateError) else "VALIDATION_ERROR"
            skipped.append((t.id, f"{cause}: {exc}"))
            continue
        msgs.append(m)
        owners.append((t.id, t.channel, r.variant))
    flat = [x for m in msgs for x in (m, *m.fanout)]
    firsts = {i for i, x in enumerate(flat) if x.fanout_of is None}

    def mark(conn: Connection, results: list[Accepted | IdempotencyConflict]) -> None:
        lock = " FOR UPDATE" if c.store.dialect == "postgresql" else ""
        state = conn.execute(text(f"SELECT state FROM campaigns WHERE id = :c{lock}"),
                             {"c": campaign_id}).scalar()
        if state != "sending":
            raise _NotSending(state)
        sent = [res for i, res in enumerate(results) if i in firsts]
        rows_ = [{"state": "enqueued", "mid": res.id if isinstance(res, Accepted) else None,
                  "ch": ch, "detail": None if isinstance(res, Accepted)
                  else "an earlier message with the same key differs", "cid": cid,
                  "camp": campaign_id, "round": rounds[cid]}
                 for (cid, ch, _), res in zip(owners, sent, strict=True)]
        rows_ += [{"state": "skipped", "mid": None, "ch": None, "detail": d, "cid": cid,
                   "camp": campaign_id, "round": rounds[cid]} for cid, d in skipped]
        if rows_:
            conn.execute(text(
                "UPDATE campaign_recipients SET state = :state, message_id = COALESCE(:mid, "
                "message_id), channel = COALESCE(:ch, channel), detail = :detail "
                "WHERE campaign_id = :camp AND contact_id = :cid AND state = 'pending' "
                "AND round = :round"), rows_)

    c.store.enqueue(flat, scope=SCOPE, also=mark)
    return len(targets) + len(gone)


def render_targets(composer: Composer, targets: list[Target], variants: dict[str, str | None]
                   ) -> dict[tuple[str, int], dict[str, Any] | TemplateError]:
    """Content per (contact, step) for every step a target may use, a batch per template."""
    wanted: dict[tuple[int, str, str], list[Target]] = defaultdict(list)
    for t in targets:
        if t.problem is not None or t.step is None or t.channel is None:
            continue
        variant = variants.get(t.id)
        wanted[(t.step, t.channel, composer.template_of(t.step, variant))].append(t)
        for step, ch, _ in t.legs:
            wanted[(step, ch, composer.template_of(step, None))].append(t)
    out: dict[tuple[str, int], dict[str, Any] | TemplateError] = {}
    for (step, ch, name), group in wanted.items():
        for t, content in zip(group, composer.render(name, step, ch, [t.contact for t in group]),
                              strict=True):
            out[(t.id, step)] = content
    return out


def _message(c: Campaigns, campaign_id: str, spec: CampaignIn, composer: Composer, t: Target,
             r: Any, contents: dict[tuple[str, int], dict[str, Any] | TemplateError],
             prior: dict[str, str | None], vias: dict[int, str | None],
             memo: dict[tuple[str, str], str]) -> NewMessage:
    assert t.step is not None and t.channel is not None and t.address is not None
    intake = c.app.intake
    content = contents[(t.id, t.step)]
    if isinstance(content, TemplateError):
        raise content
    legs = []
    for step, ch, addr in t.legs:
        leg = contents[(t.id, step)]
        if isinstance(leg, TemplateError):
            continue  # the leg cannot render for this contact: the chain is shorter
        legs.append({"channel": ch, "to": intake._target(ch, addr, leg, "", memo, stored=True),
                     "content": leg, "campaign": campaign_id,
                     "template": composer.template_of(step, None)})
    avoid = None
    if r.round > 0:
        via = vias.get(r.round)
        avoid = PREFER + via if via else prior.get(r.prior)
    key = f"{campaign_id}:{r.round}:{t.id}"
    common: dict[str, Any] = {
        "channel": t.channel, "content": content, "topic": spec.topic,
        "priority": PRIORITIES[spec.priority], "ttl": spec.ttl, "fallback": legs,
        "contact_id": t.id, "campaign_id": campaign_id,
        "template": composer.template_of(t.step, r.variant), "avoid_provider": avoid}
    to, encoded = intake._checked(t.channel, t.address, content, "", memo, stored=True)
    m = NewMessage(to=to, idempotency_key=key, content_json=encoded, **common)
    for i, device in enumerate(t.devices, start=1):
        m.fanout.append(NewMessage(to=device,  # a contact's stored address, content checked
                                   idempotency_key=f"{key}#device{i}", fanout_of=m.id,
                                   content_json=encoded, **common))
    return m

