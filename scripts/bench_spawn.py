#!/usr/bin/env python3
"""Spawn benchmark (issue #11, SPEC §12): workers forked from the template vs exec-started,
every figure measured in one run against the built-in emulator.

    python scripts/bench_spawn.py [--quick] [--scale-seconds 180] [--output BENCHMARKS.md]

Rows: warm / slot_start / cold latency over plain HTTP and over HTTPS (the emulator behind
TLS with a throw-away CA); CPU per fetch (service: parent + template + workers, emulator
excluded) with 8 vs 200 homes round-robin; worker USS; pool contention with the old and the
new defaults; and, with ``--scale-seconds``, ``probe stress`` with 1,000 homes polled every
45 s. Ratios compare figures of this one run only, so the machine's speed cancels out.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

from benchlib import REPORT, emulator_process_env, measured_on, run_callers, settled_home, write_section
from probe import ProbeConfig, ProbeService
from probe.tools.emulator import provider_urls_for
from probe.status import is_worker_process
from probe.tools.stress import percentile, service_cpu_s


@contextlib.contextmanager
def spawn_method(method: str):
    """``PROBE_SPAWN`` is read when a service is created."""
    old = os.environ.get("PROBE_SPAWN")
    os.environ["PROBE_SPAWN"] = method
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PROBE_SPAWN", None)
        else:
            os.environ["PROBE_SPAWN"] = old


def timed_fetches(service: ProbeService, homes: list[Path], n: int, expect: str) -> list[float]:
    """``n`` sequential fetches round-robin over ``homes`` (refresh: no cache), each of
    which must take path ``expect``; latencies in ms."""
    out = []
    for i in range(n):
        start = time.perf_counter()
        snap = service.fetch("deepseek", home=homes[i % len(homes)], refresh=True)
        out.append((time.perf_counter() - start) * 1000)
        assert snap.error is None, snap.error
        assert snap.probe.path == expect, (snap.probe.path, expect)
    return out


def latency_rows(urls: dict[str, str], root: Path, method: str, n: int) -> dict[str, float]:
    """Median warm, slot_start and cold latency for one spawn method."""
    warm_homes = [settled_home(root, f"warm-{method}-{i}", deepseek=f"sk-warm-{method}-{i}") for i in range(4)]
    slot_homes = [settled_home(root, f"slot-{method}-{i}", deepseek=f"sk-slot-{method}-{i}") for i in range(40)]
    with spawn_method(method):
        with ProbeService(ProbeConfig(provider_urls=urls, pool_size=1, max_total_workers=4)) as service:
            for home in warm_homes:
                service.fetch("deepseek", home=home, refresh=True)
            warm = timed_fetches(service, warm_homes, n * 4, "warm")
            # 40 homes through a budget of 4: every fetch starts its slot's process
            slot = timed_fetches(service, slot_homes, n, "slot_start")
            spawn_ms = service.stats()["spawn"]["median_ms"]
        with ProbeService(ProbeConfig(provider_urls=urls, pool_size=0)) as service:
            service.fetch("deepseek", home=warm_homes[0], refresh=True)
            cold = timed_fetches(service, warm_homes, n, "cold")
    return {"warm": statistics.median(warm), "slot_start": statistics.median(slot), "cold": statistics.median(cold),
            "spawn_median_ms": spawn_ms}


def cpu_per_fetch(urls: dict[str, str], root: Path, method: str, homes_n: int, fetches: int,
                  emulator_pids: set[int]) -> dict[str, float]:
    """4 callers fetching round-robin over ``homes_n`` homes (default config, cache off)."""
    homes = [settled_home(root, f"cpu-{method}-{homes_n}-{i}", deepseek=f"sk-cpu-{i}") for i in range(homes_n)]
    lock = threading.Lock()
    paths: Counter[str] = Counter()
    latencies: list[float] = []
    counter = iter(range(fetches))
    with spawn_method(method), ProbeService(ProbeConfig(provider_urls=urls, cache_ttl_s=0)) as service:
        for home in homes[:8]:
            service.fetch("deepseek", home=home)

        def caller(_: int) -> None:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                start = time.perf_counter()
                snap = service.fetch("deepseek", home=homes[i % homes_n])
                with lock:
                    latencies.append((time.perf_counter() - start) * 1000)
                    paths[snap.probe.path if snap.error is None else f"error:{snap.error.code}"] += 1

        before = service_cpu_s(emulator_pids)
        wall = run_callers(4, caller)
        cpu = service_cpu_s(emulator_pids) - before
    return {"fetches_per_s": fetches / wall, "p50_ms": statistics.median(latencies),
            "cpu_ms_per_fetch": 1000 * cpu / fetches, "paths": dict(paths)}


def worker_uss(urls: dict[str, str], root: Path, method: str) -> float:
    """Median USS of 6 warm workers (3 homes x pool 2) after 10 probes each."""
    homes = [settled_home(root, f"uss-{method}-{i}", deepseek=f"sk-uss-{i}") for i in range(3)]
    with spawn_method(method), ProbeService(ProbeConfig(provider_urls=urls, coalesce=False)) as service:
        for _ in range(10):
            run_callers(6, lambda n: service.fetch("deepseek", home=homes[n % 3], refresh=True))
        pids = [w["pid"] for state in service.stats()["homes"].values() for w in state["workers"]]
        return statistics.median(psutil.Process(pid).memory_full_info().uss / 1048576 for pid in pids)


def contention(urls: dict[str, str], root: Path, per_caller: int) -> dict[str, dict]:
    """8 callers, pool_size=2, 50 ms provider: the 0.1 defaults, no wait, the new defaults."""
    home = settled_home(root, "contention", deepseek="sk-contention-slow50-")
    out = {}
    for label, overrides in (("0.1 defaults (claim_wait_s=0.25, max_cold_spawns=4, one-shots)",
                              {"claim_wait_s": 0.25, "max_cold_spawns": 4, "cold_linger_s": 0}),
                             ("no wait (claim_wait_s=0, max_cold_spawns=4, one-shots)",
                              {"claim_wait_s": 0.0, "max_cold_spawns": 4, "cold_linger_s": 0}),
                             ("new defaults without surge workers (cold_linger_s=0)", {"cold_linger_s": 0}),
                             ("new defaults", {})):
        config = ProbeConfig(provider_urls=urls, pool_size=2, coalesce=False, **overrides)
        lock = threading.Lock()
        latencies: list[float] = []
        paths: Counter[str] = Counter()
        peak = [0]
        stop = threading.Event()
        with ProbeService(config) as service:
            run_callers(2, lambda n: service.fetch("deepseek", home=home, refresh=True))

            def watch() -> None:
                me = psutil.Process()
                while not stop.wait(0.002):
                    workers = 0
                    for child in me.children(recursive=True):
                        with contextlib.suppress(psutil.Error):   # exited ones are no longer workers
                            if child.status() != psutil.STATUS_ZOMBIE and is_worker_process(child):
                                workers += 1
                    peak[0] = max(peak[0], workers)

            def caller(_: int) -> None:
                for _ in range(per_caller):
                    start = time.perf_counter()
                    snap = service.fetch("deepseek", home=home, refresh=True)
                    with lock:
                        latencies.append((time.perf_counter() - start) * 1000)
                        paths[snap.probe.path if snap.error is None else f"error:{snap.error.code}"] += 1

            watcher = threading.Thread(target=watch)
            watcher.start()
            wall = run_callers(8, caller)
            stop.set()
            watcher.join()
        out[label] = {"p50_ms": statistics.median(latencies), "p99_ms": percentile(latencies, 99),
                      "rps": len(latencies) / wall, "paths": dict(paths), "peak_workers": peak[0],
                      "bound": config.pool_size + config.max_cold_spawns,
                      "claim_wait_s": config.claim_wait_s, "max_cold_spawns": config.max_cold_spawns}
    return out


def scale_run(seconds: float) -> dict:
    result = subprocess.run([sys.executable, "-m", "probe.cli", "stress", "--json", "--homes", "1000",
                             "--poll-interval", "45", "--duration", str(seconds), "--concurrency", "16"],
                            capture_output=True, text=True, timeout=seconds + 600)
    return json.loads(result.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    parser.add_argument("--scale-seconds", type=float, default=0.0,
                        help="also run 1,000 homes polled every 45 s for this long (0: skip)")
    parser.add_argument("--output", default=REPORT)
    args = parser.parse_args()
    n = 20 if args.quick else 100
    n_exec = 5 if args.quick else 20
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for transport in ("http", "https"):
            with emulator_process_env(tls=transport == "https") as (base_url, env):
                saved = {k: os.environ.get(k) for k in env}
                os.environ.update(env)    # SSL_CERT_FILE for https: the workers trust the CA
                try:
                    urls = provider_urls_for(base_url)
                    results[transport] = {"fork": latency_rows(urls, root, "fork", n),
                                          "exec": latency_rows(urls, root, "exec", n_exec)}
                    if transport == "http":
                        emulator_pids = {c.pid for c in psutil.Process().children()}
                        results["cpu"] = {
                            method: {homes: cpu_per_fetch(urls, root, method, homes,
                                                          (200 if args.quick else 1000) if method == "fork" or homes == 8
                                                          else (30 if args.quick else 150), emulator_pids)
                                     for homes in (8, 200)}
                            for method in ("fork", "exec")}
                        results["uss_mb"] = {method: worker_uss(urls, root, method) for method in ("fork", "exec")}
                        results["contention"] = contention(urls, root, 10 if args.quick else 50)
                finally:
                    for key, value in saved.items():
                        if value is None:
                            os.environ.pop(key, None)
                        else:
                            os.environ[key] = value
    if args.scale_seconds:
        results["scale"] = scale_run(args.scale_seconds)

    rows: list[tuple[str, str]] = []
    for transport in ("http", "https"):
        for method in ("fork", "exec"):
            r = results[transport][method]
            rows.append((f"{transport}, {method}: warm / slot_start / cold median",
                         f"{r['warm']:.2f} / {r['slot_start']:.2f} / {r['cold']:.2f} ms "
                         f"(slot_start {r['slot_start'] / r['warm']:.1f}x warm, cold {r['cold'] / r['warm']:.1f}x; "
                         f"spawn median {r['spawn_median_ms']} ms)"))
    for method in ("fork", "exec"):
        c8, c200 = results["cpu"][method][8], results["cpu"][method][200]
        rows.append((f"{method}: CPU per fetch, 8 vs 200 homes round-robin (4 callers, cache off)",
                     f"{c8['cpu_ms_per_fetch']:.2f} vs {c200['cpu_ms_per_fetch']:.2f} ms = "
                     f"{c200['cpu_ms_per_fetch'] / c8['cpu_ms_per_fetch']:.1f}x; {c8['fetches_per_s']:.0f} vs "
                     f"{c200['fetches_per_s']:.1f} fetches/s; p50 {c8['p50_ms']:.1f} vs {c200['p50_ms']:.1f} ms; "
                     f"paths {json.dumps(c200['paths'])}"))
    rows.append(("median worker USS after 10 probes, fork / exec",
                 f"{results['uss_mb']['fork']:.1f} / {results['uss_mb']['exec']:.1f} MB"))
    for label, c in results["contention"].items():
        rows.append((f"8 callers, pool_size=2, 50 ms provider, {label}",
                     f"p50 {c['p50_ms']:.1f} ms, p99 {c['p99_ms']:.1f} ms, {c['rps']:.0f} req/s, peak workers "
                     f"{c['peak_workers']} (bound {c['bound']}), paths {json.dumps(c['paths'])}"))
    if "scale" in results:
        s = results["scale"]
        rows.append((f"1,000 homes polled every 45 s for {args.scale_seconds:.0f} s (probe stress)",
                     f"service CPU {s['service_cpu']['percent_of_one_core']} % of one core, p50 "
                     f"{s['latency_ms']['p50']} ms, p99 {s['latency_ms']['p99']} ms, {s['requests']} fetches, "
                     f"{s['spawns']} worker starts, invariants {'all true' if s['ok'] else s['invariants']}"))
    width = max(len(r[0]) for r in rows)
    print("\n".join(f"{name:<{width}}  {value}" for name, value in rows))

    command = "python scripts/bench_spawn.py" + (" --quick" if args.quick else "") + \
        (f" --scale-seconds {args.scale_seconds:g}" if args.scale_seconds else "")
    md = ["## Spawning (`scripts/bench_spawn.py`)", "",
          f"Measured {measured_on()}, one run of `{command}`.", "",
          "| measurement | result |", "| --- | --- |", *[f"| {name} | {value} |" for name, value in rows], "",
          "<details><summary>Raw figures</summary>", "", "```json", json.dumps(results, indent=2, default=str), "```",
          "", "</details>"]
    write_section(args.output, "bench_spawn", "\n".join(md))
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
