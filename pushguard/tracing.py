"""OpenTelemetry traces, off by default: one span per delivery of a message.

``PUSHGUARD_OTEL_TRACES=1`` turns them on; the exporter follows the standard ``OTEL_*``
environment variables (``OTEL_EXPORTER_OTLP_ENDPOINT`` and friends) and needs
``pip install 'pushguard[otel]'``. Off, the pipeline does not touch OpenTelemetry at all, so
the hot path pays nothing for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pushguard.exceptions import ConfigError

if TYPE_CHECKING:
    from pushguard.settings import Settings

#: the provider set up once per process (setting it twice is refused by OpenTelemetry)
_provider: Any = None


def tracer_for(settings: Settings) -> Any:
    """The tracer the pipeline records deliveries with, or None when traces are off."""
    global _provider
    if not settings.otel_traces:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ConfigError("PUSHGUARD_OTEL_TRACES needs OpenTelemetry: pip install "
                          "'pushguard[otel]'") from exc
    if _provider is None:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise ConfigError("PUSHGUARD_OTEL_TRACES needs the OTLP exporter: pip install "
                              "'pushguard[otel]'") from exc
        _provider = TracerProvider(resource=Resource.create({"service.name": "pushguard"}))
        _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(_provider)
    return trace.get_tracer("pushguard")


def record(tracer: Any, job: Any, outcome: Any, started_ns: int) -> None:
    """One span for one delivery: the message, where it went and how it ended."""
    attempt = outcome.attempt
    failure = outcome.failure
    attributes = {
        "pushguard.message_id": job.id, "pushguard.channel": job.channel,
        "pushguard.state": outcome.state.value, "pushguard.attempt": job.attempts + 1,
    }
    if job.topic:
        attributes["pushguard.topic"] = job.topic
    if job.campaign_id:
        attributes["pushguard.campaign_id"] = job.campaign_id
    if outcome.provider:
        attributes["pushguard.provider"] = outcome.provider
    if failure is not None:
        attributes["pushguard.cause"] = failure.cause
        if failure.provider_code:
            attributes["pushguard.provider_code"] = str(failure.provider_code)
    if attempt is not None and attempt.status is not None:
        attributes["http.response.status_code"] = attempt.status
    span = tracer.start_span("pushguard.deliver", start_time=started_ns, attributes=attributes)
    if failure is not None and outcome.state.value in ("failed", "dead", "expired"):
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, failure.cause))
    span.end()
