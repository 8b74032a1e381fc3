#!/usr/bin/env python3
"""Background-refresh benchmark (issue #12, SPEC §13): is the refresher's load spread?

    python scripts/bench_refresh.py [--homes 100] [--interval 60] [--seconds 120] [--output BENCHMARKS.md]

100 configured homes x 4 providers, refreshed every 60 s by ``probe.monitor.refresher`` through a
default ``ProbeService``, against the built-in emulator (in this process: its request log
is the measurement). Counts provider requests per wall-clock second over the run and
reports the busiest second against the mean -- the target is no second above 3x the mean.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchlib import REPORT, measured_on, settled_home, write_section
from probe import ProbeConfig, ProbeService
from probe.tools.emulator import Emulator
from probe.monitor.readings import Reader
from probe.monitor.refresher import Refresher


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=int, default=100)
    parser.add_argument("--interval", type=float, default=60.0)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--output", default=REPORT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Emulator() as emulator:
        root = Path(tmp)
        homes = {f"h{i}": settled_home(root, f"h{i}", anthropic=f"sk-ant-oat01-rb-{i}", codex=f"rb-codex-{i}",
                                       openrouter=f"sk-or-v1-rb-{i}", deepseek=f"sk-rb-{i}")
                 for i in range(args.homes)}
        with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls())) as service:
            refresher = Refresher(Reader(service, homes), args.interval)
            emulator.clear()
            start = time.monotonic()   # the emulator stamps requests on this clock
            with refresher:
                time.sleep(args.seconds)
            end = time.monotonic()
            requests = [r for r in emulator.requests() if start <= r.at < end]
            runs = refresher.runs
    per_second = Counter(int(r.at - start) for r in requests)
    seconds = int(math.floor(end - start))
    counts = [per_second.get(s, 0) for s in range(seconds)]
    mean = statistics.mean(counts)
    peak = max(counts)
    result = {"homes": args.homes, "providers": 4, "interval_s": args.interval, "seconds": seconds,
              "probes": runs, "provider_requests": len(requests), "mean_per_s": round(mean, 2),
              "max_per_s": peak, "max_over_mean": round(peak / mean, 2) if mean else None,
              "p99_per_s": sorted(counts)[min(len(counts) - 1, int(0.99 * (len(counts) - 1)))],
              "zero_seconds": counts.count(0)}
    print(json.dumps(result, indent=2))
    md = ["## Background refresh (`scripts/bench_refresh.py`)", "",
          f"Measured {measured_on()}, one run of "
          f"`python scripts/bench_refresh.py --homes {args.homes} --interval {args.interval:g} --seconds {args.seconds:g}`.",
          "", "| measurement | result |", "| --- | --- |",
          f"| {args.homes} homes x 4 providers, refresh every {args.interval:g} s, {seconds} s | "
          f"{runs} probes, {len(requests)} provider requests (OpenRouter makes 2 per probe) |",
          f"| provider requests per second: mean / busiest second / p99 | {mean:.2f} / {peak} / {result['p99_per_s']} "
          f"(busiest = {result['max_over_mean']}x the mean; target ≤ 3x) |",
          f"| seconds without a request | {result['zero_seconds']} of {seconds} |",
          "", "```json", json.dumps(result, indent=2), "```"]
    write_section(args.output, "bench_refresh", "\n".join(md))
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
