"""Prometheus metrics, in a registry owned by the app (no global default registry), so tests
and several apps in one process never share counters."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from pushguard.store.base import Store


class _QueueCollector(Collector):
    """Queue depth and age read from the database at scrape time, so every process agrees."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        stats = self.store.stats()
        depth = GaugeMetricFamily(
            "pushguard_queue_depth", "Messages waiting or in flight, by state", labels=["state"]
        )
        for state in ("queued", "retry_scheduled", "deferred", "sending"):
            depth.add_metric([state], stats.by_state.get(state, 0))
        yield depth
        yield GaugeMetricFamily(
            "pushguard_queue_oldest_due_seconds",
            "Age of the most overdue message that is ready to send",
            value=stats.oldest_due_age,
        )
        yield GaugeMetricFamily(
            "pushguard_suppressions", "Addresses on suppression lists", value=stats.suppressions
        )


class _AlertsCollector(Collector):
    """Open alerts and incidents read from the database at scrape time (any process may have
    raised them)."""

    def __init__(self, counts: Callable[[], tuple[dict[tuple[str, str], int], int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        alerts, incidents = self.counts()
        open_alerts = GaugeMetricFamily("pushguard_alerts_open", "Open alerts",
                                        labels=["rule", "severity"])
        for (rule, severity), n in sorted(alerts.items()):
            open_alerts.add_metric([rule, severity], n)
        yield open_alerts
        yield GaugeMetricFamily("pushguard_incidents_open", "Open incidents", value=incidents)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.accepted = Counter(
            "pushguard_messages_accepted", "Messages accepted at intake", ["channel"], registry=r
        )
        self.rejected = Counter(
            "pushguard_messages_rejected", "Messages refused at intake", ["reason"], registry=r
        )
        self.delivered = Counter(
            "pushguard_messages_delivered", "Messages delivered", ["channel", "provider"],
            registry=r,
        )
        self.failures = Counter(
            "pushguard_attempt_failures", "Failed attempts by cause",
            ["channel", "provider", "cause"], registry=r,
        )
        self.finished = Counter(
            "pushguard_messages_finished", "Messages reaching a terminal state",
            ["channel", "state", "cause"], registry=r,
        )
        self.retries = Counter(
            "pushguard_retries_scheduled", "Retries scheduled", ["channel", "cause"], registry=r
        )
        self.failovers = Counter(
            "pushguard_failovers", "Attempts moved to another provider", ["channel", "src"],
            registry=r,
        )
        self.fallbacks = Counter(
            "pushguard_fallbacks", "Fallback legs started, by channel pair", ["src", "dst"],
            registry=r,
        )
        self.leases_reclaimed = Counter(
            "pushguard_leases_reclaimed", "Messages re-queued because their worker died",
            registry=r,
        )
        self.latency = Histogram(
            "pushguard_provider_latency_seconds", "Provider call latency", ["provider"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.breaker = Gauge(
            "pushguard_circuit_open", "1 when a provider's circuit is open or half-open",
            ["key"], registry=r,
        )

    def watch_alerts(
        self, counts: Callable[[], tuple[dict[tuple[str, str], int], int]]
    ) -> None:
        """Export open alerts by rule and severity, and open incidents (once per registry)."""
        if not getattr(self, "_alerts_watched", False):
            self.registry.register(_AlertsCollector(counts))
            self._alerts_watched = True

    def watch_queue(self, store: Store) -> None:
        self.registry.register(_QueueCollector(store))

    def render(self) -> bytes:
        return generate_latest(self.registry)
