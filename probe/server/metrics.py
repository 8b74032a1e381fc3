"""``/metrics`` in the Prometheus text format, through prometheus_client.

Counters and pool gauges are read from ``service.stats()`` at scrape time by a custom
collector (the service stays the one owner of those numbers); only the request latency
histogram is observed here. Each app has its own registry, so two apps in one process
(tests, an embedding host) never collide.

Quota gauges (SPEC §13) come from the backend's latest readings (``probe.monitor.readings``) of
the homes' current generations: a scrape never calls a provider, and a reading from
before a credential change is not exported as the new account's. Labels name a home by
its configured id, never by path; ratios are 0–1 and instants are Unix seconds, as the
Prometheus naming conventions ask.

Per account (SPEC §18): the ``quota_probe_account_*`` families carry each account of a
provider, labelled ``account`` = the account's id (``env:OPENROUTER_API_KEY``, a pool
row's id) -- never its label, which is personal data (often an e-mail address). The
provider-level families stay as they were: for a provider with one account they are that
account's reading, for a pool the best per window (what the snapshot says), so a 0.3
dashboard reads the same series and sums over ``account`` never double count.
"""
from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from probe.pace import parse_instant
from probe.monitor.readings import Reader
from probe.service import ProbeService

#: decimals a ratio (0-1) is exported with: a percentage's 4th decimal, and no binary noise
#: (37.8 / 100 is 0.37799999999999995 as a float; a scrape shows 0.378)
RATIO_DIGITS = 6
#: decimals of a balance amount and of an instant (seconds): enough for any currency's
#: smallest unit and a millisecond, few enough to drop a float's noise
AMOUNT_DIGITS = 9
INSTANT_DIGITS = 3

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20)


class _ServiceCollector(Collector):
    def __init__(self, service: ProbeService, ids_by_path: dict[str, str]) -> None:
        self._service = service
        self._ids = ids_by_path

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
        cold = GaugeMetricFamily("quota_probe_cold_running", "Cold probes running (or exiting) now.")
        cold.add_metric([], stats["cold_running"])
        parked = GaugeMetricFamily("quota_probe_cold_parked", "Cold processes parked for reuse (surge workers).")
        parked.add_metric([], stats.get("cold_parked", 0))
        yield from (fetches, errors, events, alive, busy, cold, parked)


class _QuotaCollector(Collector):
    """The SPEC §13 quota gauges, from the latest readings."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader

    def collect(self) -> Iterator:
        snapshot_labels, window_labels = ["home", "provider"], ["home", "provider", "window"]
        used = GaugeMetricFamily("quota_probe_window_used_ratio", "Share of the window's quota used (0-1).",
                                 labels=window_labels)
        reset = GaugeMetricFamily("quota_probe_window_reset_timestamp_seconds",
                                  "When the window resets (Unix time).", labels=window_labels)
        delta = GaugeMetricFamily("quota_probe_window_pace_delta_ratio",
                                  "Used minus expected share at this point of the window (>0: deficit).",
                                  labels=window_labels)
        balance = GaugeMetricFamily("quota_probe_balance",
                                    "A balance the provider reports, in its currency label: a money code (USD, "
                                    "CNY) or a unit that is not money (points).",
                                    labels=[*snapshot_labels, "currency", "label"])
        available = GaugeMetricFamily("quota_probe_snapshot_available", "1 when the last reading is available.",
                                      labels=snapshot_labels)
        stale = GaugeMetricFamily("quota_probe_snapshot_stale", "1 when the last reading is a stale one.",
                                  labels=snapshot_labels)
        age = GaugeMetricFamily("quota_probe_snapshot_age_seconds", "Seconds since the last reading was fetched.",
                                labels=snapshot_labels)
        account_labels, account_window = [*snapshot_labels, "account"], [*snapshot_labels, "account", "window"]
        account_used = GaugeMetricFamily("quota_probe_account_window_used_ratio",
                                         "Share of one account's window quota used (0-1).", labels=account_window)
        account_reset = GaugeMetricFamily("quota_probe_account_window_reset_timestamp_seconds",
                                          "When one account's window resets (Unix time).", labels=account_window)
        account_available = GaugeMetricFamily("quota_probe_account_available",
                                              "1 when the account is available (not exhausted, dead or failing).",
                                              labels=account_labels)
        account_retry = GaugeMetricFamily("quota_probe_account_retry_after_timestamp_seconds",
                                          "When an exhausted account may be used again (Unix time).",
                                          labels=account_labels)
        account_balance = GaugeMetricFamily("quota_probe_account_balance", "A balance one account reports.",
                                            labels=[*account_labels, "currency", "label"])
        now = time.time()
        for reading in self._reader.current_readings():
            snap = reading.snapshot
            if snap.error is not None and snap.error.code == "no_credentials":
                continue   # nothing to watch: the home has no such account
            labels = [reading.home_id, snap.provider]
            available.add_metric(labels, 1.0 if snap.available else 0.0)
            stale.add_metric(labels, 1.0 if snap.stale else 0.0)
            fetched = parse_instant(snap.fetched_at)
            if fetched is not None:
                age.add_metric(labels, max(0.0, round(now - fetched.timestamp(), INSTANT_DIGITS)))
            for window in snap.windows:
                window_labels_values = [*labels, window.label]
                if window.used_percent is not None:
                    used.add_metric(window_labels_values, round(window.used_percent / 100, RATIO_DIGITS))
                resets = parse_instant(window.reset_at)
                if resets is not None:
                    reset.add_metric(window_labels_values, round(resets.timestamp(), INSTANT_DIGITS))
                if window.pace is not None:
                    delta.add_metric(window_labels_values, round(window.pace.delta_percent / 100, RATIO_DIGITS))
            for entry in snap.balances:
                balance.add_metric([*labels, entry.currency, entry.label], round(entry.amount, AMOUNT_DIGITS))
            for account in snap.accounts:
                ids = [*labels, account.id]
                account_available.add_metric(ids, 1.0 if account.available else 0.0)
                retry = parse_instant(account.retry_after)
                if retry is not None:
                    account_retry.add_metric(ids, round(retry.timestamp(), INSTANT_DIGITS))
                for window in account.windows:
                    if window.used_percent is not None:
                        account_used.add_metric([*ids, window.label], round(window.used_percent / 100, RATIO_DIGITS))
                    resets = parse_instant(window.reset_at)
                    if resets is not None:
                        account_reset.add_metric([*ids, window.label], round(resets.timestamp(), INSTANT_DIGITS))
                for entry in account.balances:
                    account_balance.add_metric([*ids, entry.currency, entry.label], round(entry.amount, AMOUNT_DIGITS))
        yield from (used, reset, delta, balance, available, stale, age, account_used, account_reset,
                    account_available, account_retry, account_balance)


class Metrics:
    def __init__(self, service: ProbeService, ids_by_path: dict[str, str], reader: Reader) -> None:
        """``ids_by_path``: resolved home path -> configured id (the labels never show a path)."""
        self.registry = CollectorRegistry()
        self.registry.register(_ServiceCollector(service, ids_by_path))
        self.registry.register(_QuotaCollector(reader))
        self._latency = Histogram("quota_probe_fetch_seconds", "Time to answer one fetch.",
                                  buckets=LATENCY_BUCKETS_S, registry=self.registry)

    def observe(self, seconds: float) -> None:
        self._latency.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
