"""``/metrics`` in the Prometheus text format, through prometheus_client.

Counters and pool gauges are read from ``service.stats()`` at scrape time by a custom
collector (the service stays the one owner of those numbers); only the request latency
histogram is observed here. Each app has its own registry, so two apps in one process
(tests, an embedding host) never collide.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from probe.service import ProbeService

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20)


class _ServiceCollector(Collector):
    def __init__(self, service: ProbeService, homes: dict[str, Path]) -> None:
        self._service = service
        self._ids = {str(path.resolve()): home_id for home_id, path in homes.items()}

    def collect(self) -> Iterator:
        stats = self._service.stats()
        fetches = CounterMetricFamily("quota_probe_fetches", "Fetches answered, by probe path.", labels=["path"])
        for path, count in stats["fetches"].items():
            fetches.add_metric([path], count)
        errors = CounterMetricFamily("quota_probe_errors", "Snapshots carrying an error, by code.", labels=["code"])
        for code, count in stats["errors"].items():
            errors.add_metric([code], count)
        events = CounterMetricFamily("quota_probe_worker_events", "Worker spawns, kills and recycles.", labels=["event"])
        for event in ("spawns", "kills", "recycles"):
            events.add_metric([event], stats[event])
        alive = GaugeMetricFamily("quota_probe_workers_alive", "Running pool workers per home.", labels=["home"])
        busy = GaugeMetricFamily("quota_probe_workers_busy", "Busy pool workers per home.", labels=["home"])
        for home, state in stats["homes"].items():
            label = self._ids.get(home, "other")
            alive.add_metric([label], state["alive"])
            busy.add_metric([label], state["busy"])
        cold = GaugeMetricFamily("quota_probe_cold_running", "One-shot probes running now.")
        cold.add_metric([], stats["cold_running"])
        yield from (fetches, errors, events, alive, busy, cold)


class Metrics:
    def __init__(self, service: ProbeService, homes: dict[str, Path]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_ServiceCollector(service, homes))
        self._latency = Histogram("quota_probe_fetch_seconds", "Time to answer one fetch.",
                                  buckets=LATENCY_BUCKETS_S, registry=self.registry)

    def observe(self, seconds: float) -> None:
        self._latency.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
