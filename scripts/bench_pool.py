#!/usr/bin/env python3
"""Warm-pool benchmark: every figure measured in one run against the built-in emulator.

    python scripts/bench_pool.py [--quick] [--output BENCHMARKS.md]

Prints a table and writes BENCHMARKS.md. Ratios compare figures from this one run only,
so the machine's speed cancels out. The emulator runs in a process of its own (a real
provider is remote), reached the same way by the direct client and by the workers.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

from probe import ProbeConfig, ProbeService
from probe.tools.demo import write_home
from benchlib import REPORT, emulator_process, measured_on, run_callers, settled_home, write_section
from probe.tools.stress import percentile
from probe.tools.emulator import provider_urls_for
from probe.env import child_env
from probe.pool.spawner import Spawner
from probe.pool.worker import Worker


def direct_get(base_url: str, token: str, n: int) -> list[float]:
    """The physical limit: one in-process keep-alive client, same URL, same headers."""
    url = base_url + "/api/oauth/usage"
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json",
               "anthropic-beta": "oauth-2025-04-20", "Content-Type": "application/json"}
    out = []
    with httpx.Client() as client:
        for _ in range(20):
            client.get(url, headers=headers).json()
        for _ in range(n):
            start = time.perf_counter()
            client.get(url, headers=headers).json()
            out.append((time.perf_counter() - start) * 1000)
    return out


def pipe_round_trip_and_rss(home: Path) -> tuple[list[float], float, float, list[float]]:
    """The floor the warm path pays over a direct GET: one request/reply over the pipes
    (``ping``), plus the RSS of an idle warm worker next to a bare ``python -c 'import httpx'``,
    and how long retiring a worker takes (EOF until it is reaped)."""
    spawner = Spawner()
    worker = Worker(home, child_env(home), spawner)
    try:
        worker.start()
        for _ in range(20):
            worker.request({"op": "ping"}, time.monotonic() + 10)
        rtt = []
        for _ in range(300):
            start = time.perf_counter()
            worker.request({"op": "ping"}, time.monotonic() + 10)
            rtt.append((time.perf_counter() - start) * 1000)
        worker_rss = worker.rss_mb() or 0.0
    finally:
        worker.close()
    retire = []   # EOF -> exited and reaped, paid by whoever retires a worker
    try:
        for _ in range(10):
            worker = Worker(home, child_env(home), spawner)
            worker.start()
            worker.request({"op": "ping"}, time.monotonic() + 10)
            start = time.perf_counter()
            worker.close()
            retire.append((time.perf_counter() - start) * 1000)
    finally:
        spawner.close()
    bare = subprocess.Popen([sys.executable, "-c", "import httpx, sys; print(1, flush=True); sys.stdin.read()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        bare.stdout.readline()
        bare_rss = psutil.Process(bare.pid).memory_info().rss / 1048576
    finally:
        bare.stdin.close()
        bare.wait(10)
        bare.stdout.close()
    return rtt, worker_rss, bare_rss, retire


def sequential(service: ProbeService, home: Path, provider: str, n: int, warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        service.fetch(provider, home=home, refresh=True)
    out = []
    for _ in range(n):
        start = time.perf_counter()
        snap = service.fetch(provider, home=home, refresh=True)
        out.append((time.perf_counter() - start) * 1000)
        assert snap.error is None, snap.error
    return out


def concurrent(service: ProbeService, home: Path, provider: str, callers: int, per_caller: int) -> tuple[list[float], Counter, float]:
    """``callers`` threads, each ``per_caller`` sequential fetches; returns latencies, paths, wall s."""
    latencies: list[float] = []
    paths: Counter = Counter()
    lock = threading.Lock()

    def run(number: int) -> None:
        for _ in range(per_caller):
            start = time.perf_counter()
            snap = service.fetch(provider, home=home, refresh=True)
            elapsed = (time.perf_counter() - start) * 1000
            with lock:
                latencies.append(elapsed)
                paths[snap.probe.path if snap.error is None else f"error:{snap.error.code}"] += 1

    wall = run_callers(callers, run)
    return latencies, paths, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    parser.add_argument("--output", default=REPORT)
    args = parser.parse_args()
    n_seq = 100 if args.quick else 500
    n_cold = 5 if args.quick else 20
    per_caller = 10 if args.quick else 50

    rows: list[tuple[str, str]] = []
    with emulator_process() as base_url, tempfile.TemporaryDirectory() as tmp:
        token = "sk-ant-oat01-bench"
        home = settled_home(Path(tmp), "bench", anthropic=token)
        slow_home = settled_home(Path(tmp), "slow", anthropic="sk-ant-oat01-bench-slow50-")
        urls = provider_urls_for(base_url)

        direct = direct_get(base_url, token, n_seq)
        rtt, worker_rss, bare_rss, retire = pipe_round_trip_and_rss(home)
        with ProbeService(ProbeConfig(provider_urls=urls)) as service:
            warm = sequential(service, home, "anthropic", n_seq)
            written = time.monotonic()
            fresh_home = write_home(Path(tmp), "fresh", anthropic=token)
            fresh = sequential(service, fresh_home, "anthropic", 100)
            fresh_span_s = time.monotonic() - written
        with ProbeService(ProbeConfig(pool_size=0, provider_urls=urls)) as service:
            cold = sequential(service, home, "anthropic", n_cold, warmup=1)

        with ProbeService(ProbeConfig(pool_size=8, coalesce=False, provider_urls=urls)) as service:
            concurrent(service, home, "anthropic", 8, 2)   # warm-up: start all 8 slots
            _, paths8, _ = concurrent(service, home, "anthropic", 8, per_caller)

        contention = {}
        for label, wait in (("wait", 0.25), ("nowait", 0.0)):
            config = ProbeConfig(pool_size=2, coalesce=False, claim_wait_s=wait, provider_urls=urls)
            with ProbeService(config) as service:
                concurrent(service, slow_home, "anthropic", 2, 2)
                latencies, paths, wall = concurrent(service, slow_home, "anthropic", 8, per_caller)
            total = sum(paths.values())
            contention[label] = {
                "p50": statistics.median(latencies), "p99": percentile(latencies, 99),
                "cold_pct": 100 * paths.get("cold", 0) / total, "paths": dict(paths),
                "rps": total / wall,
            }

    med_direct, med_warm, med_cold = statistics.median(direct), statistics.median(warm), statistics.median(cold)
    results = {
        "direct_median_ms": med_direct, "warm_median_ms": med_warm, "cold_median_ms": med_cold,
        "warm_over_direct": med_warm / med_direct, "warm_fresh_credentials_median_ms": statistics.median(fresh), "cold_over_warm": med_cold / med_warm,
        "pool8_paths": dict(paths8), "contention": contention,
        "pipe_rtt_median_ms": statistics.median(rtt), "retire_median_ms": statistics.median(retire), "idle_worker_rss_mb": worker_rss,
        "bare_python_httpx_rss_mb": bare_rss,
    }
    rows = [
        ("direct in-process httpx GET, median", f"{med_direct:.3f} ms"),
        ("warm fetch(refresh=True), median", f"{med_warm:.3f} ms  (p99 {percentile(warm, 99):.3f} ms)"),
        ("warm / direct", f"{med_warm / med_direct:.2f}x  (target <= 1.5x)"),
        ("warm fetch, credentials written < 2 s ago (child re-reads them), median",
         f"{statistics.median(fresh):.3f} ms  (all within {fresh_span_s:.1f} s of the write)"),
        ("pipe round trip to a warm worker (ping), median", f"{statistics.median(rtt):.3f} ms"),
        ("retire a warm worker (EOF until reaped), median", f"{statistics.median(retire):.1f} ms  (max {max(retire):.1f} ms)"),
        ("cold one-shot, median", f"{med_cold:.1f} ms"),
        ("cold / warm", f"{med_cold / med_warm:.0f}x  (target >= 50x)"),
        ("8 callers, pool_size=8: paths", json.dumps(dict(paths8)) + "  (target: 0 cold)"),
    ]
    rows.append(("idle warm worker RSS / bare python+httpx", f"{worker_rss:.1f} MB / {bare_rss:.1f} MB "
                 f"({worker_rss / bare_rss:.2f}x)"))
    for label in ("wait", "nowait"):
        c = contention[label]
        name = "claim_wait_s=0.25" if label == "wait" else "claim_wait_s=0 (no-wait design)"
        rows.append((f"8 callers, pool_size=2, 50 ms provider, {name}",
                     f"p50 {c['p50']:.1f} ms, p99 {c['p99']:.1f} ms, cold {c['cold_pct']:.1f} %, "
                     f"{c['rps']:.0f} req/s, paths {json.dumps(c['paths'])}"))
    width = max(len(r[0]) for r in rows)
    table = "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
    print(table)

    md = [
        "## Warm pool (`scripts/bench_pool.py`)", "",
        f"Measured {measured_on()}, one run of",
        f"`python scripts/bench_pool.py{' --quick' if args.quick else ''}` against the built-in emulator.", "",
        "| measurement | result |", "| --- | --- |",
        *[f"| {name} | {value} |" for name, value in rows], "",
        "<details><summary>Raw figures</summary>", "", "```json", json.dumps(results, indent=2), "```", "",
        "</details>",
    ]
    write_section(args.output, "bench_pool", "\n".join(md))
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
