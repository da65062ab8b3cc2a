"""``python -m bench.campaign_bench --contacts 1000000``: a million-recipient campaign.

Fills a fresh database with N contacts (an email address each; 90 % granted consent to the
topic, 5 % pending confirmation, 5 % none; 1 % of the addresses suppressed; a tenth of the
contacts without the ``first_name`` attribute the template reads), a template whose links
point at a local HTTP server, and a campaign to everyone with an email address. Then it
measures, in this process:

- the segment's live count;
- the pre-flight (gate, addresses, variables; links checked once per URL): as it runs by
  default (a random sample of 100,000 recipients, scaled up, for an audience this large), and
  exact (every recipient, on one process per core);
- the snapshot of the recipients when sending starts;
- the fan-out rate: recipients rendered, validated and committed as messages per second, over
  the first ``--fanout`` recipients (all of them with ``--fanout 0``).

Results go to ``bench/results/campaign.json`` (one entry per database and size).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.dbs import PostgresDB, SQLiteDB, postgres_unreachable

RESULTS = Path(__file__).parent / "results" / "campaign.json"
PG_URL = os.environ.get("PUSHGUARD_TEST_PG", "postgresql://127.0.0.1:5432/test")
PAGE = 20_000


def _link_server() -> tuple[str, Any]:
    from aiohttp import web

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="<html>ok</html>", content_type="text/html")

    async def start() -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", ok)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["port"] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    ready.wait(10)
    return f"http://127.0.0.1:{box['port']}", loop


def fill(app: Any, n: int) -> None:
    """Contacts, addresses, consent and suppressions straight into the tables, in pages."""
    from sqlalchemy import insert

    from pushguard.audience.models import TopicIn
    from pushguard.models import new_id
    from pushguard.store.schema import consent, contact_addresses, contacts, suppressions

    app.audience.put_topic(TopicIn(name="news", kind="marketing", description="news",
                                   double_opt_in=True))
    now = time.time()
    zones = ("Europe/Paris", "America/New_York", "Asia/Tokyo", None)
    for start in range(0, n, PAGE):
        cs, adds, cons, sups = [], [], [], []
        for i in range(start, min(n, start + PAGE)):
            cid = new_id("ct")
            attrs = {"plan": "gold" if i % 3 else "free"}
            if i % 10:
                attrs["first_name"] = f"N{i}"
            cs.append({"id": cid, "external_id": f"u{i}", "attributes": json.dumps(attrs),
                       "timezone": zones[i % 4], "locale": "en", "quiet_hours": None,
                       "created_at": now, "updated_at": now})
            addr = f"user{i}@example.com"
            adds.append({"id": new_id("ad"), "contact_id": cid, "channel": "email",
                         "address": addr, "platform": None, "environment": None,
                         "verified": True, "last_seen": now, "status": "active",
                         "status_reason": None, "status_evidence": None, "created_at": now,
                         "updated_at": now})
            if i % 20 < 18:
                status = "granted"
            elif i % 20 == 18:
                status = "pending"
            else:
                status = None
            if status:
                cons.append({"contact_id": cid, "topic": "news", "channel": "email",
                             "status": status, "source": "form", "at": now, "ledger_id": i})
            if i % 100 == 7:
                sups.append({"channel": "email", "address": addr, "reason": "hard_bounce",
                             "source": "bench", "created_at": now})
        with app.store._write() as conn:
            conn.execute(insert(contacts), cs)
            conn.execute(insert(contact_addresses), adds)
            if cons:
                conn.execute(insert(consent), cons)
            if sups:
                conn.execute(insert(suppressions), sups)


def run(n: int, db: Any, fanout_n: int, work: Path) -> dict[str, Any]:
    from pushguard.app import App
    from pushguard.campaigns import fanout
    from pushguard.campaigns.models import CampaignIn
    from pushguard.campaigns.preflight import Preflight
    from pushguard.settings import Settings
    from pushguard.templates.models import TemplateIn

    base, loop = _link_server()
    cfg = work / "pushguard.toml"
    cfg.write_text('[channels.email]\nproviders = ["mail"]\n[providers.mail]\ntype = "smtp"\n'
                   'host = "127.0.0.1"\nport = 9\nsecurity = "none"\n'
                   'from = "Shop <news@shop.example>"\ncost = 0.0004\n')
    settings = Settings(database_url=db.url, config=str(cfg), outbound_allow="127.0.0.1",
                        public_url="https://news.example", secret_key="bench-link-key")
    app = App.from_settings(settings)
    app.store.migrate()
    out: dict[str, Any] = {"contacts": n}
    t = time.perf_counter()
    fill(app, n)
    if db.kind == "postgresql":  # as autovacuum would after a bulk load: plans need stats
        with app.store._write() as conn:
            conn.exec_driver_sql("ANALYZE")
    out["fill_seconds"] = round(time.perf_counter() - t, 1)
    app.templates.create(TemplateIn(
        name="newsletter", channel="email", topic="news",
        content={"subject": "Hello {{ contact.attributes.first_name }}",
                 "html": f'<p>Hi {{{{ contact.attributes.first_name }}}}</p><a href="{base}/'
                         f'sale">Sale</a><img src="{base}/banner.png"><a href="'
                         '{{ unsubscribe_url }}">Unsubscribe</a>',
                 "text": "Hi {{ contact.attributes.first_name }}"}), actor="bench")
    c = app.campaigns.create(CampaignIn.model_validate({
        "name": "million", "topic": "news", "min_predicted_rate": 0.5,
        "channels": [{"channel": "email", "template": "newsletter"}],
        "filter": {"address": {"channel": "email"}}}), actor="bench")
    t = time.perf_counter()
    out["segment_count"] = app.campaigns.segments.count({"address": {"channel": "email"}})
    out["count_seconds"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    report = Preflight(app.campaigns).run(c["id"])
    out["preflight_seconds"] = round(time.perf_counter() - t, 1)
    out["preflight_sample"] = report["sample"]
    out["predicted_delivery_rate"] = report["predicted"]["delivery_rate"]
    out["findings"] = {f["code"]: f["count"] for f in report["findings"]}
    t = time.perf_counter()
    exact = Preflight(app.campaigns).run(c["id"], exact=True)
    out["preflight_exact_seconds"] = round(time.perf_counter() - t, 1)
    out["preflight_exact_recipients_per_second"] = round(n / out["preflight_exact_seconds"])
    out["exact_predicted_delivery_rate"] = exact["predicted"]["delivery_rate"]
    out["exact_findings"] = {f["code"]: f["count"] for f in exact["findings"]}
    app.campaigns.start(c["id"], actor="bench", override="benchmark")
    row = app.campaigns.find(c["id"])
    t = time.perf_counter()
    out["recipients"] = fanout.snapshot(app.campaigns, row)
    out["snapshot_seconds"] = round(time.perf_counter() - t, 1)
    todo = fanout_n or n
    t = time.perf_counter()
    done = fanout.fan_out(app.campaigns, c["id"], budget=todo)
    out["fanout_seconds"] = round(time.perf_counter() - t, 1)
    out["fanned_out"] = done
    out["fanout_per_second"] = round(done / out["fanout_seconds"])
    out["messages"] = db.states()
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    app.templates.close()
    app.store.close()
    loop.call_soon_threadsafe(loop.stop)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contacts", type=int, default=1_000_000)
    ap.add_argument("--fanout", type=int, default=100_000,
                    help="recipients to fan out for the rate (0: all)")
    ap.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    args = ap.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    entries = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    for kind in kinds:
        if kind == "postgresql" and (why := postgres_unreachable(PG_URL)):
            print(f"skipping PostgreSQL: {why}")
            continue
        db: Any = SQLiteDB() if kind == "sqlite" else PostgresDB(PG_URL)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                got = run(args.contacts, db, args.fanout, Path(tmp))
        finally:
            db.close()
        got.update(db=kind, at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   python=platform.python_version(), cpus=os.cpu_count())
        print(json.dumps(got, indent=2))
        entries = [e for e in entries if (e.get("db"), e.get("contacts")) != (kind,
                                                                              args.contacts)]
        entries.append(got)
        RESULTS.write_text(json.dumps(entries, indent=2) + "\n")


if __name__ == "__main__":
    main()
