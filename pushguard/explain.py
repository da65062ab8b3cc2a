"""The story of one message in plain words: what happened, the verdict, and what to do.

Used by ``pushguard why`` and ``GET /v1/messages/{id}/explain``. The lessons operators left on
the message's causes, providers and template (:mod:`pushguard.diagnosis.lessons`) come with it,
so what was learned the last time is read where it is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pushguard import taxonomy
from pushguard.models import MessageView
from pushguard.states import State
from pushguard.views import rfc3339


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S.%f")[:-3]


def explain(view: MessageView, lessons: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """A structured explanation: ``verdict``, ``summary``, ``steps``, ``fix``, and the
    ``lessons`` given (JSON, from :meth:`Lessons.for_message`)."""
    steps: list[tuple[float, str]] = []
    for t in view.history:
        if t.src == State.ACCEPTED.value:
            steps.append((t.at, f"accepted for {view.channel} {view.to} ({t.reason})"))
            break
    providers_used: list[str] = []
    for a in view.attempts:
        if a.provider not in providers_used and a.provider != "(unknown)":
            providers_used.append(a.provider)
        if a.outcome == "delivered":
            line = f"attempt {a.number} via {a.provider}: delivered"
            if a.status is not None:  # an SMTP reply starts its detail with its code
                smtp = view.channel == "email" and (a.detail or "").startswith(str(a.status))
                line += f" ({'SMTP' if smtp else 'HTTP'} {a.status})"
        elif a.outcome == "lost":
            line = f"attempt {a.number}: {a.detail}; the lease expired and it was re-queued"
        else:
            code = f" [{a.provider_code}]" if a.provider_code else ""
            line = f"attempt {a.number} via {a.provider}: {a.cause}{code} - {a.detail}"
            if a.maybe_sent:
                line += " (the provider may have received it; a retry reuses the same id)"
        if a.latency_ms is not None:
            line += f" in {a.latency_ms:.0f} ms"
        steps.append((a.at, line))
    for t in view.history:
        if t.src == State.SENDING.value and t.dst not in (State.DELIVERED.value,):
            steps.append((t.at, f"-> {t.dst}: {t.reason}"))
        elif t.src is None:  # a provider's receipt, after it accepted the message
            steps.append((t.at, t.reason))
    steps.sort(key=lambda step: step[0])

    retries = max(0, sum(1 for a in view.attempts if a.outcome != "lost") - 1)
    failed_over = len(providers_used) > 1
    state = view.state
    fix = ""
    bounced = [t for t in view.history if t.src is None and t.cause]
    if state is State.DELIVERED and bounced:
        verdict = "delivered, then reported undelivered"
        last = bounced[-1]
        summary = (f"Accepted by {view.last_provider}, which later reported it undelivered: "
                   f"{last.reason} ({last.cause}).")
        fix = taxonomy.describe(taxonomy.get(last.cause or ""), provider=view.last_provider
                                or "")[1]
    elif state is State.DELIVERED:
        verdict = "delivered"
        summary = f"Delivered via {view.last_provider}"
        if retries:
            summary += f" after {retries} retr{'y' if retries == 1 else 'ies'}"
        if failed_over:
            summary += f", failing over across {', '.join(providers_used)}"
        summary += "."
    elif state.terminal:
        verdict = state.value
        f = view.failure
        if f is not None:
            summary = f"{state.value.capitalize()}: {f.explanation}"
            fix = f.fix
        else:
            summary = f"{state.value.capitalize()}."
    elif state is State.DEFERRED and view.failure is not None and view.failure.rule:
        verdict = "deferred"
        summary = (f"Waiting, by the {view.failure.rule.replace('_', ' ')} rule: "
                   f"{view.failure.explanation.rstrip('.')}. It goes at "
                   f"{rfc3339(view.next_at)}; gives up at {rfc3339(view.expires_at)}.")
        fix = view.failure.fix
    else:
        verdict = "pending"
        summary = f"Not finished: {state.value}"
        if view.failure is not None:
            summary += f"; last problem: {view.failure.explanation.rstrip('.')}"
            fix = view.failure.fix
        summary += f". Next try at {rfc3339(view.next_at)}; gives up at {rfc3339(view.expires_at)}."
    cause = view.failure.cause if view.failure and state is not State.DELIVERED else None
    return {
        "id": view.id,
        "state": state.value,
        "verdict": verdict,
        "summary": summary,
        "cause": cause,
        "rule": view.failure.rule if view.failure and state is not State.DELIVERED else None,
        "transient": taxonomy.get(cause).transient if cause else None,
        "fix": fix,
        "retries": retries,
        "providers": providers_used,
        "steps": [f"{_clock(at)} {text}" for at, text in steps],
        "lessons": list(lessons),
    }


def as_text(story: dict[str, Any]) -> str:
    lines = [f"Message {story['id']}: {story['verdict'].upper()}", "", story["summary"]]
    if story["fix"]:
        lines += ["", f"What to do: {story['fix']}"]
    if story.get("lessons"):
        from pushguard.diagnosis.lessons import as_lines

        lines += ["", "Lessons from earlier failures of this kind:"]
        lines += as_lines(story["lessons"])
    lines += ["", "What happened:"]
    lines += [f"  {s}" for s in story["steps"]]
    return "\n".join(lines)
