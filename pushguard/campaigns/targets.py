"""Where each recipient of a campaign would be sent, and whether the pre-send gate lets it.

Pre-flight, the dry run and the fan-out all start here, so what the pre-flight predicts is
what the fan-out does: the same channel choice, the same address, the same gate.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from datetime import time as dtime
from typing import Any

from sqlalchemy import Connection

from pushguard.audience.gate import ContactRule, Item, Stop
from pushguard.audience.rules import zone
from pushguard.campaigns.models import CampaignIn
from pushguard.ssrf import OutboundGuard
from pushguard.store.sql import SQLStore
from pushguard.templates.store import template_contact

PUSH_CHANNELS = frozenset({"fcm", "apns", "webpush"})
MAX_DEVICES = 20
_IN = 500


@dataclass(slots=True)
class Target:
    """One recipient: the contact, the channel step chosen and its address, the fallback legs
    (later steps the contact has an address for), the other devices of a push."""

    contact: dict[str, Any]
    step: int | None = None
    channel: str | None = None
    address: str | None = None
    legs: list[tuple[int, str, str]] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    #: why it cannot be sent at all: (finding code, detail)
    problem: tuple[str, str] | None = None
    #: what the pre-send gate says (None: it would go now)
    stop: Stop | None = None
    #: the contact's timezone and quiet hours, for the gate
    rule: ContactRule | None = None

    @property
    def id(self) -> str:
        return str(self.contact["id"])


def _addresses(conn: Connection, ids: Sequence[str], channels: Sequence[str],
               pg: bool) -> dict[tuple[str, str], list[str]]:
    """Active addresses per (contact, channel), best first (verified, then last seen)."""
    found: dict[tuple[str, str], list[tuple[Any, ...]]] = defaultdict(list)
    mark = "%s" if pg else "?"
    chans = ", ".join(mark for _ in channels)
    for i in range(0, len(ids), _IN):
        chunk = list(ids[i:i + _IN])
        sql = (f"SELECT contact_id, channel, address, verified, last_seen, created_at "
               f"FROM contact_addresses WHERE status = 'active' AND channel IN ({chans}) "
               f"AND contact_id IN ({', '.join(mark for _ in chunk)})")
        for cid, ch, addr, verified, seen, created in conn.exec_driver_sql(
                sql, tuple(channels) + tuple(chunk)):
            found[(cid, ch)].append((bool(verified), seen or 0, created, addr))
    return {k: [r[3] for r in sorted(v, reverse=True)] for k, v in found.items()}


def due_at(spec: CampaignIn, contact: Any, start: float, default_tz: str) -> float:
    """When a contact's message may go: the start, or the campaign's local time in the
    contact's timezone (the next time it comes, or at once if its date has passed)."""
    s = spec.schedule
    if s is None or s.local_time is None:
        return start
    tz = zone(contact.timezone, s.default_timezone or default_tz)
    hh, mm = (int(x) for x in s.local_time.split(":"))
    day = s.date or datetime.fromtimestamp(start, tz).date()
    at = datetime.combine(day, dtime(hh, mm), tzinfo=tz).timestamp()
    if at >= start:
        return at
    if s.date is not None:
        return start
    return datetime.combine(day.fromordinal(day.toordinal() + 1), dtime(hh, mm),
                            tzinfo=tz).timestamp()


def plan(store: SQLStore, conn: Connection, spec: CampaignIn, rows: Sequence[Any],
         guard: OutboundGuard, *, now: float, memo: dict[tuple[str, str], str],
         gate: bool = True, default_tz: str = "UTC") -> list[Target]:
    """A target per contact row, with the gate's verdict at the send time unless ``gate`` is
    False (the fan-out: intake runs the gate as it commits the messages). The send time is
    ``now``, or under a ``local_time`` schedule each contact's own (:func:`due_at` from
    ``now``, in the contact's timezone or ``default_tz``): quiet hours, caps and consent are
    judged when that contact's message would go."""
    channels = [s.channel for s in spec.channels]
    held = _addresses(conn, [r.id for r in rows], sorted(set(channels)),
                      store.dialect == "postgresql")
    out = []
    for r in rows:
        t = Target(template_contact(r))
        if gate:  # the row is a contact as the segment read it (with its quiet hours)
            t.rule = ContactRule.of(r.id, r.timezone, r.quiet_hours)
        for step, ch in enumerate(channels):
            addrs = held.get((r.id, ch))
            if not addrs:
                continue
            good = [a for a in addrs[:MAX_DEVICES] if _valid(ch, a, guard, memo)]
            if not good:
                if t.problem is None:
                    t.problem = ("invalid_address", f"{ch} address {addrs[0]!r} is not valid")
                continue
            if t.channel is None:
                t.step, t.channel, t.address = step, ch, good[0]
                t.devices = good[1:] if ch in PUSH_CHANNELS else []
            elif ch != t.channel:
                t.legs.append((step, ch, good[0]))
        if t.channel is not None:
            t.problem = None
        elif t.problem is None:
            t.problem = ("no_address", f"no active address on {', '.join(dict.fromkeys(channels))}")
        out.append(t)
    if not gate:
        return out
    # The contact and its active address were just read: the gate need not read them again.
    # Under a local_time schedule, each recipient is judged at their own send time.
    local = spec.schedule is not None and spec.schedule.local_time is not None
    items = [Item(t.id, t.channel, t.address, spec.topic, t.id, rule=t.rule,
                  at=due_at(spec, r, now, default_tz) if local else None)
             for t, r in zip(out, rows, strict=True)
             if t.channel is not None and t.address is not None]
    store.gate.check(conn, items, now, sending=False)
    stops: dict[str, Stop | None] = {it.id: it.stop for it in items}
    for t in out:
        t.stop = stops.get(t.id)
    return out


def _valid(channel: str, address: str, guard: OutboundGuard,
           memo: dict[tuple[str, str], str]) -> bool:
    """A stored address was validated and normalised when it was written; here it only has
    to look like one (an address imported before validation, or edited in the database,
    does not). Checking each again in full costs more than the rest of a pre-flight."""
    if (channel, address) in memo:
        return True
    pattern = _PLAUSIBLE.get(channel)
    if _UNSAFE.search(address) or (pattern is not None and not pattern.match(address)):
        return False
    memo[(channel, address)] = address
    return True


_PLAUSIBLE = {"email": re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+\Z"),
              "sms": re.compile(r"\+[1-9][0-9]{6,14}\Z")}
_UNSAFE = re.compile(r"[\r\n\x00]|\A\Z")
