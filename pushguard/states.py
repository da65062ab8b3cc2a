"""The message state machine.

::

    accepted ─► queued ─► sending ─► delivered
                  ▲  │        │
                  │  │        ├─► retry_scheduled ─► sending ...
                  │  │        ├─► failed      (permanent cause)
                  │  │        ├─► dead        (attempts exhausted)
                  │  │        ├─► expired     (TTL reached, keeps the last cause)
                  │  │        └─► suppressed  (address suppressed / no consent)
                  │  ├─► deferred ─► queued   (policy: wait until an allowed time)
                  │  ├─► suppressed
                  │  └─► expired
                  └── sending (lease expired: the work is re-claimed)

``accepted`` exists only inside the intake transaction: a message is committed as ``queued``
with both transitions recorded, so a 202 always names a message that a worker can claim.
Terminal states never change again; every transition is recorded with its reason.
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
#: states a worker may claim (``sending`` only once its lease has expired).
CLAIMABLE = frozenset({State.QUEUED, State.RETRY_SCHEDULED, State.DEFERRED, State.SENDING})

ALLOWED: dict[State, frozenset[State]] = {
    State.ACCEPTED: frozenset({State.QUEUED, State.SUPPRESSED}),
    State.QUEUED: frozenset({State.SENDING, State.DEFERRED, State.SUPPRESSED, State.EXPIRED}),
    State.DEFERRED: frozenset({State.SENDING, State.QUEUED, State.SUPPRESSED, State.EXPIRED}),
    State.RETRY_SCHEDULED: frozenset(
        {State.SENDING, State.DEFERRED, State.SUPPRESSED, State.EXPIRED}
    ),
    State.SENDING: frozenset(
        {
            State.SENDING,  # re-claimed after a lease expired
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
