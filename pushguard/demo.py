"""``pushguard demo``: the whole story on the embedded default, in about half a minute.

Local sandbox providers play webhook receivers and two SMS gateways; the primary gateway has an
outage window, receivers answer with 5xx, timeouts, resets and 429 + Retry-After, and some
endpoints are dead. A few thousand messages go through the real intake, the durable SQLite queue
and the real worker; the summary shows what was delivered first time, after retries, through the
backup gateway, and what failed with which cause and what to do about it.

One message in ten is a newsletter to one of the readers (about two and a half each). The
pre-send gate lets through only readers who consented. It stops those who never did or have
not confirmed yet, those who unsubscribe while their message waits in the queue, and sends
beyond the daily cap. Each stopped message is recorded with the rule that stopped it.

Last, the next newsletter is drafted as a campaign, and its pre-flight check says, before
anything is sent, how many readers would get it and why the others would not.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pushguard import logs
from pushguard.app import App
from pushguard.audience.models import TopicIn
from pushguard.audience.service import ConsentRecord, NormalContact
from pushguard.campaigns.models import CampaignIn
from pushguard.campaigns.preflight import Preflight
from pushguard.config import BreakerConfig, Config, ProviderConfig, RetryConfig
from pushguard.explain import as_text, explain
from pushguard.intake import MessageIn
from pushguard.report import summarize
from pushguard.sandbox import SandboxThread
from pushguard.settings import Settings
from pushguard.store.sql import SQLStore
from pushguard.templates.models import TemplateIn

WEBHOOK_FAULTS = {
    "seed": 11,
    "latency_ms": [5, 20],
    "rates": {"500": 0.03, "503": 0.02, "429": 0.03, "timeout": 0.01, "reset": 0.01},
    "retry_after": 1,
    "timeout_s": 3,
}
GATEWAY_A_FAULTS = {
    "seed": 12,
    "rates": {"500": 0.03, "invalid": 0.01},
    "outages": [{"start": 1.0, "end": 4.0, "status": 503}],
    "latency_ms": [5, 20],
}
GATEWAY_B_FAULTS = {"seed": 13, "latency_ms": [5, 15]}


def demo_config(primary: str, backup: str) -> Config:
    return Config(
        channels={"webhook": ("webhook",), "sms": ("gateway-a", "gateway-b")},
        providers={
            "webhook": ProviderConfig("webhook", "webhook", {}, timeout=1.0, concurrency=200),
            # Paced like real SMS gateways, which also keeps the outage in the middle of the
            # run however fast this machine is.
            "gateway-a": ProviderConfig(
                "gateway-a", "http", {"url": f"{primary}/sms/gateway-a/send"}, timeout=1.0,
                rate=250,
            ),
            "gateway-b": ProviderConfig(
                "gateway-b", "http", {"url": f"{backup}/sms/gateway-b/send"}, timeout=1.0,
                rate=250,
            ),
        },
        retry=RetryConfig(base=0.25, cap=2.0, retry_after_cap=3.0),
        breaker=BreakerConfig(consecutive=5, open_seconds=1.0, max_open_seconds=3.0),
        source="<demo>",
    )


def readers(n: int) -> int:
    """About 2.5 newsletters per reader, whatever the run's size; the cap is 2 a day."""
    return max(10, n // 25)


#: reader k's consent to the newsletter: most granted, some never asked, some not confirmed,
#: and some who unsubscribe while their newsletter waits in the queue.
def reader_consent(k: int) -> str:
    return ("never" if k % 10 == 3 else "pending" if k % 10 == 6
            else "unsubscribes" if k % 10 == 9 else "granted")


def messages(primary: str, n: int, rng: random.Random) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i in range(n):
        if i % 10 == 4:
            # newsletters: about three per reader, and the cap is two a day
            out.append({
                "channel": "webhook", "contact": f"reader-{i // 10 % readers(n)}",
                "content": {"type": "newsletter", "issue": 42}, "topic": "news",
                "priority": "bulk",
            })
        elif i % 2 == 0:
            r = rng.random()
            name = f"customer-{i % 40}"
            if r < 0.02:
                name = f"dead-endpoint-{i % 7}"  # answers 410 Gone
            elif r < 0.03:
                name = f"flaky-{i}"  # 503 once, then fine
            out.append({
                "channel": "webhook", "to": f"{primary}/hooks/{name}",
                "content": {"type": "order.shipped", "order": i},
                "topic": "orders", "priority": "high" if i % 10 == 0 else "normal",
            })
        else:
            out.append({
                "channel": "sms", "to": f"+1415555{i % 10000:04d}",
                "content": {"text": f"Your code is {rng.randint(100000, 999999)}"},
                "topic": "otp", "priority": "high",
            })
    return out


def run(n: int = 3000, workdir: str = ".demo", console: Console | None = None) -> int:
    console = console or Console()
    logs.configure("ERROR")
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    for leftover in work.glob("demo.db*"):  # only what an earlier demo wrote
        leftover.unlink()
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    db_url = f"sqlite:///{work / 'demo.db'}"

    console.rule("[bold]pushguard demo")
    console.print("Starting local sandbox providers on 127.0.0.1 ...")
    primary = SandboxThread(profiles={"webhook": WEBHOOK_FAULTS, "sms": GATEWAY_A_FAULTS},
                            webhook_secret=secret, max_records=1000).start()
    backup = SandboxThread(profiles={"sms": GATEWAY_B_FAULTS}, max_records=1000).start()
    try:
        console.print(f"  webhook receivers  {primary.http_url}/hooks/*   5xx, timeouts, resets, "
                      "429 + Retry-After, dead endpoints (410)")
        console.print(f"  SMS gateway A      {primary.http_url}/sms/gateway-a   primary: "
                      "outage from 1 s to 4 s into delivery, 3 % errors, 250 msg/s")
        console.print(f"  SMS gateway B      {backup.http_url}/sms/gateway-b   healthy backup")
        settings = Settings(database_url=db_url, webhook_secret=secret,
                            outbound_allow="127.0.0.1", worker_concurrency=60, worker_batch=60,
                            poll_interval=0.05, lease_seconds=30)
        store = SQLStore(db_url)
        store.migrate()
        app = App(settings=settings, store=store, config=demo_config(primary.http_url,
                                                                     backup.http_url))
        _audience(app, primary.http_url, n)
        started = time.time()
        ids = _enqueue(app, messages(primary.http_url, n, random.Random(5)))
        console.print(f"Accepted {len(ids)} messages into the durable queue "
                      f"({db_url}) in {time.time() - started:.1f} s.")
        _unsubscribe_some(app, n)
        # The outage clock starts with delivery, so the outage lands in the middle of it.
        primary.set_profile(GATEWAY_A_FAULTS, "sms")
        asyncio.run(_deliver(app, len(ids), console))
        _report(app, console, started, db_url)
        _next_campaign(app, console, db_url)
        app.templates.close()
        store.close()
    finally:
        primary.stop()
        backup.stop()
    return 0


def _audience(app: App, primary: str, n: int) -> None:
    """Topics, and readers with their consent, as an app would have recorded them."""
    for name, what in (("orders", "order updates"), ("otp", "sign-in codes")):
        app.audience.put_topic(TopicIn(name=name, kind="transactional", description=what),
                               actor="demo")
    app.audience.put_topic(TopicIn(name="news", kind="marketing", description="newsletter",
                                   cap="2/1d"), actor="demo")
    people = [NormalContact(f"reader-{k}", None, "UTC", None, None, [{
        "channel": "webhook", "address": f"{primary}/hooks/reader-{k}", "platform": None,
        "environment": None, "verified": True, "last_seen": None}]) for k in range(readers(n))]
    ids = {r.external_id: r.id for r in app.audience.upsert(people, actor="demo")}
    now = time.time()
    app.audience.record_consent([
        ConsentRecord(ids[f"reader-{k}"], "news", "webhook",
                      "pending" if reader_consent(k) == "pending" else "granted",
                      "form", now - 86400, ip="203.0.113.7", proof=f"signup form {k}",
                      actor="demo")
        for k in range(readers(n)) if reader_consent(k) != "never"])


def _unsubscribe_some(app: App, n: int) -> None:
    """Some readers click "unsubscribe" while their newsletter waits in the queue."""
    now = time.time()
    app.audience.record_consent([
        ConsentRecord(app.audience.resolve(f"reader-{k}"), "news", "webhook", "withdrawn",
                      "unsubscribe", now, actor="demo")
        for k in range(readers(n)) if reader_consent(k) == "unsubscribes"])


def _enqueue(app: App, raw: list[dict[str, object]]) -> list[str]:
    ids: list[str] = []
    for i in range(0, len(raw), 500):
        batch = [app.intake.prepare(MessageIn.model_validate(m)) for m in raw[i : i + 500]]
        ids += [r.id for r in app.intake.submit(batch, scope="demo")]  # type: ignore[union-attr]
    return ids


async def _deliver(app: App, total: int, console: Console) -> None:
    providers = app.build_providers()
    for p in providers.values():
        await p.start()
    worker = app.build_worker(providers)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    columns = (TextColumn("[bold]delivering"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
    deadline = time.monotonic() + 120
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("send", total=total, detail="")
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            stats = await asyncio.to_thread(app.store.stats)
            active = sum(stats.by_state.values())
            retrying = stats.by_state.get("retry_scheduled", 0)
            progress.update(bar, completed=total - active,
                            detail=f"in flight {stats.by_state.get('sending', 0):>4}  "
                                   f"waiting to retry {retrying:>4}")
            if active == 0:
                break
    stop.set()
    await task
    for p in providers.values():
        await p.close()


def _report(app: App, console: Console, since: float, db_url: str) -> None:
    primaries = {ch: names[0] for ch, names in app.config.channels.items()}
    s = summarize(app.store.outcomes(since=since - 1), primaries)
    for listed in app.store.list_messages(state="suppressed", cause="NO_CONSENT", limit=500):
        view = app.store.get(listed.id)
        if view and view.history and view.history[0].dst == "queued":  # stopped at send time
            s.examples["withdrawn_while_queued"] = view.id
            break
    table = Table(title=f"What happened to {s.total} messages", show_lines=False)
    table.add_column("outcome")
    table.add_column("messages", justify="right")
    table.add_column("share", justify="right")
    for label, count in s.rows():
        table.add_row(label, str(count), f"{100 * count / max(1, s.total):.1f} %")
    console.print(table)
    if s.failed:
        causes = Table(title="Not delivered, by cause", show_lines=True)
        causes.add_column("state")
        causes.add_column("cause")
        causes.add_column("messages", justify="right")
        causes.add_column("what to do", max_width=70)
        for state, cause, count, fix in s.causes():
            causes.add_row(state, cause, str(count), fix)
        console.print(causes)
    via = ", ".join(f"{name}: {n}" for name, n in s.by_provider.most_common())
    console.print(f"Delivered through: {via}")
    for key in ("failed_over", "UNREGISTERED_TOKEN", "withdrawn_while_queued"):
        mid = s.examples.get(key)
        view = app.store.get(mid) if mid else None
        if view is not None:
            console.rule(f"pushguard why {mid}")
            console.print(as_text(explain(view)), markup=False, highlight=False)
    console.rule()
    console.print("Ask about any message yourself:")
    console.print(f"  PUSHGUARD_DATABASE_URL={db_url} .venv/bin/pushguard why <id>", markup=False)
    console.print(f"  PUSHGUARD_DATABASE_URL={db_url} .venv/bin/pushguard messages --state failed",
                  markup=False)


def _next_campaign(app: App, console: Console, db_url: str) -> None:
    """Before the next newsletter goes out as a campaign, the pre-flight says who would not
    get it and why (the same readers, and what just happened to them)."""
    app.templates.create(TemplateIn(
        name="newsletter-43", channel="webhook", topic="news",
        content={"json": {"type": "newsletter", "issue": "43",
                          "reader": "{{ contact.external_id }}"}}), actor="demo")
    c = app.campaigns.create(CampaignIn.model_validate({
        "name": "newsletter-43", "topic": "news",
        "channels": [{"channel": "webhook", "template": "newsletter-43"}]}), actor="demo")
    report = Preflight(app.campaigns).run(c["id"], links=False)
    p = report["predicted"]
    console.rule("pushguard campaign preflight newsletter-43")
    console.print(f"The next newsletter, to {report['recipients']} readers: predicted delivery "
                  f"rate {p['delivery_rate']:.0%} ({p['delivered']} would receive it, "
                  f"{p['not_sent']} would not). Nothing has been sent.")
    table = Table(show_lines=True)
    table.add_column("severity")
    table.add_column("readers", justify="right")
    table.add_column("finding")
    table.add_column("what to do", max_width=60)
    for f in report["findings"]:
        table.add_row(f["severity"], str(f["count"]), f"{f['code']}: {f['problem']}", f["fix"])
    console.print(table)
    console.print(f"  PUSHGUARD_DATABASE_URL={db_url} .venv/bin/pushguard campaign preflight "
                  "newsletter-43", markup=False)
