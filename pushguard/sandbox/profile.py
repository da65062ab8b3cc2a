"""Fault profiles: the script a sandbox provider follows when deciding how to fail.

A :class:`FaultProfile` turns "which address, at what time, in which call order" into a
:class:`Fault`. Decisions come from a private :class:`random.Random` so that a seeded profile
replays exactly the same sequence of failures, which keeps demo runs and benchmarks comparable.
"""

from __future__ import annotations

import json
import random
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

FaultKind = Literal["ok", "status", "timeout", "reset"]

#: Every key accepted in ``rates`` (and as an outage ``status`` when given as a string).
FAULT_KINDS: tuple[str, ...] = (
    "500", "502", "503", "400", "401", "403", "404", "410", "413", "429",
    "timeout", "reset", "html", "invalid",
)  # fmt: skip

_PROFILE_KEYS = frozenset(
    {"seed", "latency_ms", "rates", "retry_after", "outages", "timeout_s", "address_rules"}
)


@dataclass(frozen=True, slots=True)
class Fault:
    """What one request should experience.

    ``reason`` tells services which provider-specific shape to use: ``"gone"`` (a dead address,
    or a scripted 410), ``"invalid"`` (invalid recipient), ``"html"`` (a proxy's HTML page),
    ``"outage"``, ``"flaky"``, ``"rate"`` (drawn from ``rates``) or ``""`` for success.
    """

    kind: FaultKind
    status: int = 200
    retry_after: float | None = None
    reason: str = ""
    #: injected latency, in seconds, to wait before answering at all
    delay: float = 0.0
    #: for ``kind == "timeout"``: how long to hang before giving up on the client
    hang: float = 0.0

    @property
    def outcome(self) -> str:
        """The short label recorded for this request: ``"200"``, ``"503"``, ``"timeout"``..."""
        if self.kind in ("timeout", "reset"):
            return self.kind
        return str(self.status)


@dataclass(frozen=True, slots=True)
class Outage:
    """A window, in seconds since the profile started, in which every request fails."""

    start: float
    end: float
    status: int | str = 503

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Outage:
        """Build an outage from ``{"start": s, "end": s, "status": 503 | "timeout" | ...}``."""
        status = data.get("status", 503)
        if isinstance(status, str) and status.isdigit():
            status = int(status)
        if str(status) not in FAULT_KINDS:
            raise ValueError(f"unsupported outage status {status!r}")
        start, end = float(data["start"]), float(data["end"])
        if end < start:
            raise ValueError(f"outage ends ({end}) before it starts ({start})")
        return cls(start=start, end=end, status=status)

    def to_dict(self) -> dict[str, Any]:
        """The inverse of :meth:`from_dict`."""
        return {"start": self.start, "end": self.end, "status": self.status}


@dataclass
class FaultProfile:
    """How a fake provider misbehaves; see ``FaultProfile.from_dict`` for the file format.

    Address rules (on unless ``address_rules`` is false) look at the recipient: ``dead`` is
    permanently gone, ``invalid`` is an invalid recipient, ``slow`` always times out, and
    ``flaky`` gets a 503 on its first request and succeeds afterwards. Precedence is outage,
    then address rule, then ``rates``.
    """

    seed: int | None = None
    latency_ms: tuple[float, float] = (0.0, 0.0)
    rates: dict[str, float] = field(default_factory=dict)
    retry_after: float | None = 1.0
    outages: list[Outage] = field(default_factory=list)
    timeout_s: float = 30.0
    address_rules: bool = True
    started_at: float = field(default_factory=time.monotonic, compare=False)
    _rng: random.Random = field(init=False, repr=False, compare=False)
    _cumulative: list[tuple[float, str]] = field(init=False, repr=False, compare=False)
    _flaky_seen: set[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds in rates: {sorted(unknown)}")
        if any(r < 0 for r in self.rates.values()):
            raise ValueError("fault rates must not be negative")
        lo, hi = self.latency_ms
        if lo < 0 or hi < lo:
            raise ValueError(f"latency_ms must be (low, high) with 0 <= low <= high: {lo, hi}")
        # A fixed kind order makes the draw independent of the dict's insertion order.
        total, cumulative = 0.0, []
        for kind in FAULT_KINDS:
            rate = float(self.rates.get(kind, 0.0))
            if rate > 0:
                total += rate
                cumulative.append((total, kind))
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to {total:.3f}, more than 1")
        self._cumulative = cumulative
        self._rng = random.Random(self.seed)
        self._flaky_seen = set()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultProfile:
        """Build a profile from plain data (JSON/TOML); unknown keys are rejected."""
        unknown = set(data) - _PROFILE_KEYS
        if unknown:
            raise ValueError(f"unknown profile keys: {sorted(unknown)}")
        latency = data.get("latency_ms", (0.0, 0.0))
        if isinstance(latency, int | float):
            latency = (latency, latency)
        retry_after = data.get("retry_after", 1.0)
        # TOML has no null, so `retry_after = false` is how a file says "send no header".
        if retry_after is False:
            retry_after = None
        seed = data.get("seed")
        return cls(
            seed=None if seed is None else int(seed),
            latency_ms=(float(latency[0]), float(latency[1])),
            rates={str(k): float(v) for k, v in dict(data.get("rates", {})).items()},
            retry_after=None if retry_after is None else float(retry_after),
            outages=[Outage.from_dict(o) for o in data.get("outages", [])],
            timeout_s=float(data.get("timeout_s", 30.0)),
            address_rules=bool(data.get("address_rules", True)),
        )

    @classmethod
    def load(cls, path: str | Path) -> FaultProfile:
        """Read a profile from a ``.json`` or ``.toml`` file."""
        return cls.from_dict(read_profile_file(path))

    def to_dict(self) -> dict[str, Any]:
        """Plain data that :meth:`from_dict` turns back into an equal profile."""
        return {
            "seed": self.seed,
            "latency_ms": list(self.latency_ms),
            "rates": dict(self.rates),
            "retry_after": self.retry_after,
            "outages": [o.to_dict() for o in self.outages],
            "timeout_s": self.timeout_s,
            "address_rules": self.address_rules,
        }

    def restart(self, now: float | None = None) -> None:
        """Restart the outage clock and replay the seeded sequence from the beginning."""
        self.started_at = time.monotonic() if now is None else now
        self._rng = random.Random(self.seed)
        self._flaky_seen.clear()

    def decide(self, address: str, now: float | None = None) -> Fault:
        """Decide the fate of one request to ``address`` (``now`` is a monotonic time)."""
        rng = self._rng
        # Draw every time, whatever wins, so one address's rule cannot shift the sequence
        # that the other addresses see.
        draw = rng.random()
        lo, hi = self.latency_ms
        delay = (rng.uniform(lo, hi) if hi > lo else lo) / 1000.0
        elapsed = (time.monotonic() if now is None else now) - self.started_at
        for outage in self.outages:
            if outage.start <= elapsed < outage.end:
                return self._fault(str(outage.status), "outage", delay)
        if self.address_rules:
            if "dead" in address:
                return Fault("status", 410, reason="gone", delay=delay)
            if "invalid" in address:
                return Fault("status", 400, reason="invalid", delay=delay)
            if "slow" in address:
                return Fault("timeout", 0, reason="slow", delay=delay, hang=self.timeout_s)
            if "flaky" in address:
                if address in self._flaky_seen:
                    return Fault("ok", delay=delay)
                self._flaky_seen.add(address)
                return self._fault("503", "flaky", delay)
        for bound, kind in self._cumulative:
            if draw < bound:
                return self._fault(kind, "rate", delay)
        return Fault("ok", delay=delay)

    def _fault(self, kind: str, reason: str, delay: float) -> Fault:
        if kind == "timeout":
            return Fault("timeout", 0, reason=reason, delay=delay, hang=self.timeout_s)
        if kind == "reset":
            return Fault("reset", 0, reason=reason, delay=delay)
        if kind == "html":
            return Fault("status", 502, reason="html", delay=delay)
        if kind == "invalid":
            return Fault("status", 400, reason="invalid", delay=delay)
        status = int(kind)
        retry_after = self.retry_after if status in (429, 503) else None
        return Fault("status", status, retry_after, "gone" if status == 410 else reason, delay)


def read_profile_file(path: str | Path) -> dict[str, Any]:
    """Parse a ``.json`` or ``.toml`` file into a dict, choosing by the file suffix."""
    path = Path(path)
    if path.suffix == ".toml":
        with path.open("rb") as fh:
            return tomllib.load(fh)
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a profile must be a JSON object")
        return data
    raise ValueError(f"{path}: profile files must end in .json or .toml")
