"""What would have caught it: failure causes mapped to the pre-flight checks that flag them
before a send (:mod:`pushguard.campaigns.preflight`), the blocking findings a campaign was sent
despite (its recorded override) as root causes of their own, and the fixes to recommend.

A check that exists is not a check that fired: each cause says whether the campaign's recorded
pre-flight flagged it, whether the block was overridden, and what the check cannot see (an
outage that starts mid-send is no pre-flight's to predict).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, func, select
from sqlalchemy.sql.elements import ColumnElement

from pushguard import taxonomy
from pushguard.store.schema import messages

if TYPE_CHECKING:
    from pushguard.app import App

MAX_CAUSES = 20
EXAMPLES = 5

#: the pre-flight findings (pushguard/campaigns/preflight.py) that flag each failure cause
#: before a send; ``template.*`` is any finding of the template linter
CAUGHT_BY: dict[str, tuple[str, ...]] = {
    "TEMPLATE_ERROR": ("missing_variable", "template.*"),
    "CONTENT_REJECTED": ("template.*",),
    "NO_CONSENT": ("no_consent", "unverified", "withdrawn"),
    "POLICY_SUPPRESSED": ("suppressed", "frequency_cap", "quiet_hours"),
    "INVALID_RECIPIENT": ("invalid_address", "suppressed"),
    "UNREGISTERED_TOKEN": ("deactivated_address",),
    "AUTH_CREDENTIALS": ("provider_credentials", "provider_config"),
    "SENDER_CONFIG": ("provider_config",),
    "PROVIDER_OUTAGE": ("provider_failing",),
    "NETWORK_TIMEOUT": ("provider_failing",),
    "RATE_LIMITED": ("provider_failing",),
    "EXPIRED": ("expires_before_sent",),
}
#: what a check cannot see, said next to it
LIMITS = {
    "provider_failing": "warns only when the provider already failed in the 24 h before the "
    "check; an outage that starts during the send is caught by the failure-rate alert and "
    "survived by a second provider on the channel, not by the pre-flight",
    "expires_before_sent": "the pre-flight's time estimate (throttle and rate limits against "
    "the messages' ttl)",
}


def loads(text: str | None) -> Any:
    """JSON from a column, or None when it is empty or not JSON."""
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def findings_by_code(preflight: Any) -> dict[str, dict[str, Any]]:
    """The recorded pre-flight's findings by code (and its time estimate's verdict)."""
    out: dict[str, dict[str, Any]] = {}
    if not isinstance(preflight, dict):
        return out
    for f in preflight.get("findings") or []:
        if isinstance(f, dict) and f.get("code"):
            out.setdefault(str(f["code"]), f)
    estimate = preflight.get("estimate")
    if isinstance(estimate, dict) and estimate.get("expires_before_sent"):
        out["expires_before_sent"] = {"code": "expires_before_sent", "severity": "warn",
                                      "problem": "messages would expire before being sent"}
    return out


def caught_by(cause: str, flagged: dict[str, dict[str, Any]], overridden: set[str]
              ) -> dict[str, Any]:
    """Which pre-flight checks would have caught ``cause``, and whether they did:
    ``flagged`` is the recorded findings by code, ``overridden`` the codes sent despite."""
    found: list[dict[str, Any]] = []
    for code in CAUGHT_BY.get(cause, ()):
        hits = ([c for c in flagged if c.startswith("template.")] if code == "template.*"
                else [code] if code in flagged else [])
        if not hits:
            found.append({"check": code, "flagged": False, "overridden": False,
                          "limit": LIMITS.get(code)})
        for hit in hits:
            found.append({"check": hit, "flagged": True, "overridden": hit in overridden,
                          "severity": flagged[hit].get("severity"), "limit": LIMITS.get(hit)})
    if not found:
        text = "No pre-flight check catches this cause before a send."
    elif any(f["overridden"] for f in found):
        text = ("The pre-flight flagged it (" + ", ".join(
            f["check"] for f in found if f["overridden"]) + ") and the block was overridden.")
    elif any(f["flagged"] for f in found):
        text = ("The pre-flight flagged it (" + ", ".join(
            f["check"] for f in found if f["flagged"]) + ") and it was sent anyway.")
    else:
        text = ("Would be caught by " + ", ".join(f["check"] for f in found)
                + "; the recorded pre-flight did not flag it" + (
                    f" ({LIMITS[found[0]['check']]})" if found[0]["limit"] else "") + ".")
    return {"checks": found, "verdict": text}


def overridden_causes(conn: Connection, row: Any, mine: ColumnElement[bool]
                      ) -> list[dict[str, Any]]:
    """The blocking findings a campaign was sent despite, as root causes: a template finding
    counts the messages delivered with it, any other the recipients it flagged."""
    override = loads(row.override)
    if not isinstance(override, dict):
        return []
    full = findings_by_code(loads(row.preflight))
    spec = loads(row.spec) or {}
    steps = (spec.get("campaign") or {}).get("channels") or []
    variants = ((spec.get("campaign") or {}).get("experiment") or {}).get("variants") or []
    templates = [str(s.get("template")) for s in [*steps, *variants] if isinstance(s, dict)]
    m = messages.c
    out = []
    for f in (override.get("findings") or [])[:MAX_CAUSES]:
        code, problem = str(f.get("code")), str(f.get("problem") or "")
        finding = full.get(code, {})
        entry: dict[str, Any] = {
            "cause": code, "kind": "preflight", "campaign": row.name, "problem": problem,
            "flagged": int(f.get("count") or 0), "severity": "block",
            "fix": finding.get("fix") or "Fix what the finding names before the next send.",
            "url": finding.get("url"), "overridden_by": override.get("by"),
            "overridden_at": override.get("at"), "reason": override.get("reason"),
            "providers": [], "codes": [], "examples": []}
        if code.startswith("template."):
            name = next((t for t in templates if problem.startswith(f"{t} [")), None)
            sent = and_(mine, m.state == "delivered",
                        m.template == name if name else m.template.is_not(None))
            entry["template"] = name
            entry["count"] = int(conn.execute(select(func.count()).where(sent)).scalar_one())
            entry["counted"] = "messages delivered with it"
            entry["examples"] = list(conn.execute(select(m.id).where(sent).order_by(
                m.id.desc()).limit(EXAMPLES)).scalars())
        else:
            entry["count"] = entry["flagged"]
            entry["counted"] = "recipients the pre-flight flagged"
        entry["checks"] = {"checks": [{"check": code, "flagged": True, "overridden": True,
                                       "severity": "block", "limit": None}],
                           "verdict": f"The pre-flight flagged it ({code}) and the block was "
                                      f"overridden by {override.get('by')}: "
                                      f"{override.get('reason')}"}
        out.append(entry)
    return out


def recommend(app: App, causes: list[dict[str, Any]], channels: Iterable[str]
              ) -> list[dict[str, Any]]:
    """Each cause's fix with the checks to run before the next send, and a second provider
    for a single-provider channel that a provider-side failure hit."""
    out = []
    for c in causes:
        names = [k["check"] for k in c["checks"]["checks"]]
        out.append({"about": c["cause"], "fix": c["fix"], "checks": names})
    scoped = [c for c in causes if c["kind"] == "failure" and c["failed"]
              and taxonomy.get(c["cause"]).provider_scoped]
    for ch in sorted(set(channels)):
        if scoped and len(app.config.channels.get(ch, ())) < 2:
            out.append({"about": f"channel {ch}", "checks": [], "fix": (
                f"Channel {ch} has a single provider: add a second one to its providers so "
                f"a provider failure ({scoped[0]['cause']}) fails over automatically.")})
    return out
