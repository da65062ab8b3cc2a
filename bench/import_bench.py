"""``python -m bench.import_bench --rows 100000``: how fast a contact CSV imports.

Generates a CSV of N rows (external id, email, phone, timezone, locale, two attributes and
one consent column) with a few broken rows sprinkled in (a bad email, a phone without a
country code, a latin-1 byte, a wrong field count, a duplicate external id), imports it into
a fresh database with :class:`~pushguard.audience.importer.ContactImport`, checks that the
counts add up, and records rows/s and peak memory in ``bench/results/import.json`` (one
entry per database and size; earlier entries are kept). ``--reimport`` imports the same file
a second time (every row an update).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "import.json"
PG_URL = os.environ.get("PUSHGUARD_TEST_PG", "postgresql://127.0.0.1:5432/test")
HEADER = ("external_id,email,phone,timezone,locale,attr.plan,attr.city,"
          "consent.newsletter.email\n")
ZONES = ("Europe/Paris", "America/New_York", "Asia/Tokyo", "")
#: every BROKEN_EVERY rows, one broken row of each kind in turn
BROKEN_EVERY = 10_000


def generate(path: Path, rows: int) -> dict[str, int]:
    """Write the CSV; returns how many rows of each broken kind it holds."""
    broken = {"bad_email": 0, "no_country_code": 0, "latin1_byte": 0, "field_count": 0,
              "duplicate": 0}
    kinds = list(broken)
    with path.open("wb") as f:
        f.write(HEADER.encode())
        for i in range(rows):
            phone = f"+1415{(2000000 + i) % 10000000:07d}"
            line = (f"u{i},user{i}@example.com,{phone},{ZONES[i % 4]},en-US,"
                    f"{'gold' if i % 3 else 'free'},Paris,{'granted' if i % 2 else ''}\n")
            data = line.encode()
            if i % BROKEN_EVERY == BROKEN_EVERY - 1:
                kind = kinds[(i // BROKEN_EVERY) % len(kinds)]
                broken[kind] += 1
                if kind == "bad_email":
                    data = data.replace(b"@example.com", b"@@example.com")
                elif kind == "no_country_code":
                    data = data.replace(phone.encode(), b"4155550100")
                elif kind == "latin1_byte":
                    data = data.replace(b"Paris", b"Par\xeds")
                elif kind == "field_count":
                    data = data.replace(b",en-US", b"")
                else:
                    data = data.replace(f"u{i},".encode(), f"u{i - 1},".encode(), 1)
            f.write(data)
    return broken


def run(rows: int, db: str, reimport: bool, keep: Path | None) -> dict[str, Any]:
    from pushguard.audience.importer import ContactImport, ImportOptions
    from pushguard.audience.models import TopicIn
    from pushguard.audience.service import Audience
    from pushguard.ssrf import OutboundGuard
    from pushguard.store.sql import SQLStore

    work = Path(tempfile.mkdtemp(prefix="pushguard-import-bench-", dir=keep))
    csv_path = work / f"contacts-{rows}.csv"
    t = time.perf_counter()
    broken = generate(csv_path, rows)
    gen_s = time.perf_counter() - t
    csv_mb = round(csv_path.stat().st_size / 1e6, 1)
    pg = None
    if db == "sqlite":
        url = f"sqlite:///{work}/bench.db"
    else:
        from bench.dbs import PostgresDB

        pg = PostgresDB(PG_URL)
        url = pg.url
    store = SQLStore(url)
    store.migrate()
    audience = Audience(store, OutboundGuard.from_env(""))
    audience.put_topic(TopicIn(name="newsletter", kind="marketing"))
    importer = ContactImport(audience, ImportOptions(actor="bench"))
    runs = []
    try:
        for label in ("import", "reimport")[: 2 if reimport else 1]:
            rss0 = _rss_mb()
            t = time.perf_counter()
            with csv_path.open("rb") as f:
                s = importer.run(f, csv_path.name)
            secs = time.perf_counter() - t
            assert s.rows == s.created + s.updated + s.rejected, s
            runs.append({
                "run": label, "seconds": round(secs, 2), "rows_per_s": round(rows / secs),
                "rows": s.rows, "created": s.created, "updated": s.updated,
                "rejected": s.rejected, "duplicates": s.duplicates,
                "consent_recorded": s.consent_recorded, "errors": s.error_count,
                "peak_rss_mb": _rss_mb(), "rss_before_mb": rss0,
            })
            print(f"{label}: {rows} rows in {secs:.1f} s = {rows / secs:,.0f} rows/s; "
                  f"{s.created} created, {s.updated} updated, {s.rejected} rejected; "
                  f"peak RSS {_rss_mb():.0f} MB", flush=True)
        size = _db_size(work) if db == "sqlite" else None
    finally:
        store.close()
        if pg is not None:
            pg.close()
        if keep is None:
            for p in sorted(work.glob("*"), reverse=True):
                p.unlink()
            work.rmdir()
    return {"db": db, "rows": rows, "csv_mb": csv_mb, "generate_s": round(gen_s, 1),
            "broken": broken, "db_mb": size, "runs": runs}


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _db_size(work: Path) -> float:
    return round(sum(p.stat().st_size for p in work.glob("bench.db*")) / 1e6, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--reimport", action="store_true", help="import the file a second time")
    ap.add_argument("--keep", type=Path, help="keep the CSV and database under this folder")
    args = ap.parse_args()
    result = run(args.rows, args.db, args.reimport, args.keep)
    result["machine"] = {"cores": os.cpu_count(), "python": platform.python_version(),
                         "sqlite": sqlite3.sqlite_version, "platform": platform.platform()}
    result["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    all_results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    all_results[f"{args.db}-{args.rows}"] = result
    RESULTS.write_text(json.dumps(all_results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
