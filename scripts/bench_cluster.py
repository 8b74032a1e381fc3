#!/usr/bin/env python3
"""Cluster-mode benchmark (issue #14, SPEC §15), every figure from one run, against a real
``redis-server`` started here on a free port and the emulator in a process of its own.

    python scripts/bench_cluster.py [--homes 200] [--output BENCHMARKS.md]

Cache hits, median over many fetches:
* local: a service without Redis answering from its own cache;
* cluster, local entry: the same in cluster mode (each fetch also checks the home's cluster
  generation and shared back-off: one Redis round trip);
* cluster, Redis entry: a backend reading what *another* backend stored (a home it has
  never fetched: the snapshot comes out of Redis).
Target: a cache hit through Redis costs no more than 0.5 ms over a local hit.
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from benchlib import REPORT, emulator_process, measured_on, settled_home, write_section
from probe import ProbeConfig, ProbeService
from probe.tools.emulator import provider_urls_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def hits(service: ProbeService, homes: list[Path], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        for home in homes:
            start = time.perf_counter()
            snap = service.fetch("deepseek", home=home)
            out.append((time.perf_counter() - start) * 1000)
            assert snap.probe.path == "cache", snap.probe.path
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=int, default=200)
    parser.add_argument("--output", default=REPORT)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp, emulator_process() as base_url:
        root = Path(tmp)
        server = subprocess.Popen([shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port),
                                   "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp],
                                  stdout=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            homes = [settled_home(root, f"h{i}", deepseek=f"sk-bench-cluster-{i}") for i in range(args.homes)]
            ids = {f"h{i}": str(home) for i, home in enumerate(homes)}
            urls = provider_urls_for(base_url)
            common = dict(provider_urls=urls, cache_ttl_s=600, pool_size=1, max_total_workers=8)
            with ProbeService(ProbeConfig(**common)) as local:
                for home in homes[:20]:
                    local.fetch("deepseek", home=home)
                local_ms = hits(local, homes[:20], 25)
            cluster = dict(common, redis_url=f"redis://127.0.0.1:{port}/0", home_ids=ids)
            with ProbeService(ProbeConfig(**cluster)) as a, ProbeService(ProbeConfig(**cluster)) as b:
                for home in homes:
                    a.fetch("deepseek", home=home)
                cluster_local_ms = hits(a, homes[:20], 25)
                redis_entry_ms = hits(b, homes, 1)       # b never fetched these: each comes out of Redis
        finally:
            server.terminate()
            server.wait(10)
    result = {"local_hit_ms": statistics.median(local_ms), "cluster_local_hit_ms": statistics.median(cluster_local_ms),
              "cluster_redis_hit_ms": statistics.median(redis_entry_ms),
              "samples": {"local": len(local_ms), "cluster_local": len(cluster_local_ms), "redis": len(redis_entry_ms)}}
    result["overhead_ms"] = result["cluster_redis_hit_ms"] - result["local_hit_ms"]
    result["overhead_local_entry_ms"] = result["cluster_local_hit_ms"] - result["local_hit_ms"]
    print(json.dumps(result, indent=2))
    md = ["## Cluster mode (`scripts/bench_cluster.py`)", "",
          f"Measured {measured_on()}, one run, Redis "
          "server on 127.0.0.1 (a real redis-server started by the script).", "",
          "| cache hit (median) | time | over a local hit |", "| --- | --- | --- |",
          f"| local service, no Redis ({len(local_ms)} hits) | {result['local_hit_ms']:.3f} ms | — |",
          f"| cluster mode, entry in the local cache ({len(cluster_local_ms)} hits; one Redis round trip for the "
          f"generation and back-off) | {result['cluster_local_hit_ms']:.3f} ms | "
          f"+{result['overhead_local_entry_ms']:.3f} ms |",
          f"| cluster mode, entry stored by another backend ({len(redis_entry_ms)} hits, out of Redis) | "
          f"{result['cluster_redis_hit_ms']:.3f} ms | **+{result['overhead_ms']:.3f} ms** (target ≤ 0.5 ms) |", ""]
    write_section(args.output, "bench_cluster", "\n".join(md))
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
