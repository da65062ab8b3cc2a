"""OpenTelemetry traces: off, the pipeline has no tracer; on, every delivery of a message is
one span naming the message, channel, provider, state and cause (recorded by the SDK's
in-memory exporter, from a real worker over the in-package fake provider)."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from pushguard import tracing
from pushguard.exceptions import ConfigError
from pushguard.settings import Settings
from pushguard.store.sql import SQLStore
from tests.integration.test_worker import enqueue, make_app, run_until_settled


def test_traces_are_off_by_default_and_name_the_extra_when_missing() -> None:
    assert tracing.tracer_for(Settings()) is None
    try:
        import opentelemetry.exporter.otlp.proto.http  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"pushguard\[otel\]"):
            tracing.tracer_for(Settings(otel_traces=True))
    else:  # pragma: no cover - the exporter is installed: the tracer is built
        assert tracing.tracer_for(Settings(otel_traces=True)) is not None


async def test_each_delivery_is_a_span(store: SQLStore, monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "tracer_for", lambda _s: provider.get_tracer("test"))
    app = make_app(store, {"fake": {"script": {"ok": ["ok"], "bad": ["CONTENT_REJECTED"],
                                               "flaky": ["PROVIDER_OUTAGE", "ok"]}}}, ["fake"])
    ids = enqueue(store, ["ok", "bad", "flaky"])
    await run_until_settled(app, ids)
    spans = exporter.get_finished_spans()
    by_message: dict[str, list[dict[str, object]]] = {}
    for s in spans:
        assert s.name == "pushguard.deliver"
        by_message.setdefault(str(s.attributes["pushguard.message_id"]), []).append(
            {**dict(s.attributes or {}), "status": s.status.status_code})
    ok, bad, flaky = (by_message[i] for i in ids)
    assert [x["pushguard.state"] for x in ok] == ["delivered"]
    assert ok[0]["pushguard.provider"] == "fake" and ok[0]["pushguard.channel"] == "webhook"
    assert [(x["pushguard.state"], x["pushguard.cause"]) for x in bad] == \
        [("failed", "CONTENT_REJECTED")]
    assert bad[0]["status"] is StatusCode.ERROR
    assert [x["pushguard.state"] for x in flaky] == ["retry_scheduled", "delivered"]
    assert [x["pushguard.attempt"] for x in flaky] == [1, 2]
    assert flaky[0]["pushguard.cause"] == "PROVIDER_OUTAGE"
