"""The message state machine.

::

    accepted ─┬─► queued ──────────┐
              ├─► deferred (quiet hours, at intake)
              └─► suppressed       ▼
                       ┌──────► sending ─┬─► delivered
    retry_scheduled ───┤                 ├─► failed      (permanent cause; the address may
    deferred ──────────┘                 │                also be put on the suppression list)
         ▲    ▲                          ├─► dead        (attempts for the cause exhausted,
         │    └──────────────────────────┤                or a worker died holding it 5 times)
         │                               ├─► expired     (TTL reached; keeps the last cause)
         └───────────────────────────────┼─► suppressed  (not sent: suppression list, policy)
                                         ├─► retry_scheduled (transient failure, an open
                                         │                circuit, or the worker's lease expired)
                                         └─► deferred    (policy: wait until an allowed time)

``accepted`` exists only inside the intake transaction: a message is committed as ``queued``
(or ``suppressed`` / ``deferred`` by the pre-send gate) and the ``accepted -> ...`` transition
is recorded, so a 202 always names a message a worker can claim. Terminal states never change
again. Every transition is a row in ``events`` with its reason and cause; every call to a
provider is a row in ``attempts``.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    ACCEPTED = "accepted"
    QUEUED = "queued"
    SENDING = "sending"
    RETRY_SCHEDULED = "retry_scheduled"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    SUPPRESSED = "suppressed"
    FAILED = "failed"
    EXPIRED = "expired"
    DEAD = "dead"

    def __str__(self) -> str:
        return self.value

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {State.DELIVERED, State.SUPPRESSED, State.FAILED, State.EXPIRED, State.DEAD}
)

_WAITING = frozenset({State.SENDING})
ALLOWED: dict[State, frozenset[State]] = {
    State.ACCEPTED: frozenset({State.QUEUED, State.SUPPRESSED, State.DEFERRED}),
    State.QUEUED: _WAITING,
    State.DEFERRED: _WAITING,
    State.RETRY_SCHEDULED: _WAITING,
    State.SENDING: frozenset(
        {
            State.DELIVERED,
            State.RETRY_SCHEDULED,
            State.DEFERRED,
            State.SUPPRESSED,
            State.FAILED,
            State.EXPIRED,
            State.DEAD,
        }
    ),
}


def can_move(src: State, dst: State) -> bool:
    """Whether ``src -> dst`` is a legal transition."""
    return dst in ALLOWED.get(src, frozenset())
