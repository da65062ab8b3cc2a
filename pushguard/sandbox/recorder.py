"""What the sandbox providers saw: one :class:`Record` per request, plus counters."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

#: Bodies at most this big are kept decoded on the record; bigger ones only by size.
MAX_KEPT_BODY = 8 * 1024

#: Request headers worth keeping; everything else is noise for the tests and the demo.
KEPT_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature", "apns-id")


@dataclass(frozen=True, slots=True)
class Record:
    """One request as a fake provider saw it."""

    service: str
    address: str
    outcome: str
    size: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    #: service-specific extras, e.g. SMTP's sender, recipients and subject
    meta: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the JSONL line format)."""
        return {
            "service": self.service,
            "address": self.address,
            "outcome": self.outcome,
            "size": self.size,
            "headers": self.headers,
            "body": self.body,
            "meta": self.meta,
            "at": self.at,
        }


def pick_headers(headers: Any) -> dict[str, str]:
    """Keep the few headers a record carries; a credential only shows up as ``"present"``."""
    kept = {name: headers[name] for name in KEPT_HEADERS if name in headers}
    if "authorization" in headers:
        kept["authorization"] = "present"
    return kept


def decode_body(raw: bytes) -> Any:
    """The JSON body if it is small and valid, otherwise ``None``."""
    if not raw or len(raw) > MAX_KEPT_BODY:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


class Recorder:
    """Keeps records per service, counts outcomes, and optionally appends JSONL.

    Safe to read from another thread while the sandbox's loop writes (tests poll it from the
    main thread while a :class:`~pushguard.sandbox.server.SandboxThread` serves). The JSONL file
    is flushed on every record so that another process can follow it even if this one dies.
    ``max_records`` bounds memory per service for long benchmarks; counters stay exact.
    """

    def __init__(self, path: str | Path | None = None, *, max_records: int | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._max = max_records
        self._lock = threading.Lock()
        self._records: dict[str, deque[Record]] = defaultdict(self._new_deque)
        self._outcomes: dict[str, Counter[str]] = defaultdict(Counter)
        self._ids: dict[str, Counter[str]] = defaultdict(Counter)
        self._ok_ids: dict[str, Counter[str]] = defaultdict(Counter)
        self._file: IO[str] | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")

    def _new_deque(self) -> deque[Record]:
        return deque(maxlen=self._max)

    def add(self, record: Record) -> Record:
        """Store a record (and append it to the JSONL file, if any)."""
        line = json.dumps(record.to_dict(), default=str) if self._file is not None else None
        with self._lock:
            self._records[record.service].append(record)
            self._outcomes[record.service][record.outcome] += 1
            msg_id = record.headers.get("webhook-id")
            if msg_id is not None:
                self._ids[record.service][msg_id] += 1
                if record.outcome.startswith("2"):
                    self._ok_ids[record.service][msg_id] += 1
            if self._file is not None and line is not None:
                self._file.write(line + "\n")
                self._file.flush()
        return record

    def record(self, service: str, address: str, outcome: str, **fields: Any) -> Record:
        """Shorthand for ``add(Record(service, address, outcome, **fields))``."""
        return self.add(Record(service, address, outcome, **fields))

    def records(self, service: str | None = None, limit: int | None = None) -> list[Record]:
        """Records in arrival order, for one service or all; ``limit`` keeps the newest."""
        with self._lock:
            if service is not None:
                found = list(self._records.get(service, ()))
            else:
                found = sorted((r for rs in self._records.values() for r in rs), key=_at)
        return found[-limit:] if limit else found

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per service: total, counts per outcome, and for signed webhooks id statistics.

        ``duplicates`` counts every request beyond the first for a webhook-id (retries
        included); ``delivered_duplicates`` only counts repeated 2xx answers, i.e. messages
        the receiver accepted more than once.
        """
        with self._lock:
            out: dict[str, dict[str, Any]] = {}
            for service, outcomes in self._outcomes.items():
                entry: dict[str, Any] = {
                    "total": sum(outcomes.values()),
                    "outcomes": dict(outcomes),
                }
                ids = self._ids.get(service)
                if ids:
                    ok = self._ok_ids.get(service, Counter())
                    entry["distinct_ids"] = len(ids)
                    entry["duplicates"] = sum(ids.values()) - len(ids)
                    entry["delivered_ids"] = len(ok)
                    entry["delivered_duplicates"] = sum(ok.values()) - len(ok)
                out[service] = entry
            return out

    def clear(self) -> None:
        """Forget records and counters (the JSONL file is append-only and is kept)."""
        with self._lock:
            self._records.clear()
            self._outcomes.clear()
            self._ids.clear()
            self._ok_ids.clear()

    def close(self) -> None:
        """Close the JSONL file."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _at(record: Record) -> float:
    return record.at
