#!/usr/bin/env python3
"""Side-by-side benchmark: one run, one emulator, one workload at a time, every strategy.

    python scripts/bench.py [--quick] [--output BENCHMARKS.md] [--chart bench.png]

Strategies:
  direct  the adapter code called in this process with one keep-alive httpx client (the
          physical limit: no process boundary at all)
  warm    quota-probe with its defaults
  nowait  quota-probe with claim_wait_s=0 (the design we started from)
  single  pool_size=1, claim_wait_s=0 (its predecessor)
  cold    a one-shot process per probe (pool_size=0)
  ppe     concurrent.futures.ProcessPoolExecutor(max_workers=N) per home, its initializer
          setting the home, calling the same adapter code

Workloads: sequential (1 caller); 8 callers on one home (N=2, 50 ms provider latency);
8 callers over 4 homes; 50 identical pollers with the cache on (provider requests per TTL).
The emulator runs in a process of its own, like a remote provider.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from benchlib import REPORT, emulator_process, run_callers, settled_home, write_section
from probe.tools.stress import percentile
from probe import ProbeConfig, ProbeService
from probe.tools.emulator import provider_urls_for

PROVIDER = "deepseek"
STRATEGIES = ("direct", "warm", "nowait", "single", "cold", "ppe")

# -- ppe: the same adapter code in a ProcessPoolExecutor per home ------------------------
_ppe_http = None


def _ppe_init(home: str, base_url: str) -> None:
    os.environ["HERMES_HOME"] = home
    os.environ["PROBE_DEEPSEEK_BASE_URL"] = base_url


def _ppe_probe(timeout_s: float) -> dict:
    global _ppe_http
    from workers.credentials import load_home
    from workers.http import ProviderHttp
    from workers.providers import run_probe

    if _ppe_http is None:
        _ppe_http = ProviderHttp()
    return run_probe(PROVIDER, load_home(Path(os.environ["HERMES_HOME"])), _ppe_http, timeout_s)


class Strategy:
    """fetch(home_index) -> error code or None, for one strategy over a fixed set of homes."""

    def __init__(self, name: str, homes: list[Path], base_url: str, pool_size: int) -> None:
        self.name, self.homes = name, homes
        self.service: ProbeService | None = None
        self.pools: list[ProcessPoolExecutor] = []
        urls = provider_urls_for(base_url)
        if name == "direct":
            from workers.credentials import load_home
            from workers.http import ProviderHttp
            from workers.providers import run_probe

            os.environ["PROBE_DEEPSEEK_BASE_URL"] = urls[PROVIDER]
            lock, made = threading.Lock(), []
            clients = threading.local()

            def direct(index: int) -> str | None:
                # one client per calling thread: the most favourable in-process setup
                if not hasattr(clients, "http"):
                    clients.http = ProviderHttp()
                    with lock:
                        made.append(clients.http)
                snap = run_probe(PROVIDER, load_home(homes[index]), clients.http, 10)
                return snap["error"]["code"] if snap["error"] else None

            self._fetch = direct
            self._closers = [lambda: [http.close() for http in made]]
        elif name == "ppe":
            self.pools = [ProcessPoolExecutor(max_workers=pool_size, initializer=_ppe_init,
                                              initargs=(str(home), urls[PROVIDER])) for home in homes]

            def ppe(index: int) -> str | None:
                snap = self.pools[index].submit(_ppe_probe, 10).result()
                return snap["error"]["code"] if snap["error"] else None

            self._fetch = ppe
            self._closers = [lambda: [p.shutdown() for p in self.pools]]
        else:
            overrides = {"warm": {"pool_size": pool_size}, "nowait": {"pool_size": pool_size, "claim_wait_s": 0},
                         "single": {"pool_size": 1, "claim_wait_s": 0}, "cold": {"pool_size": 0}}[name]
            self.service = ProbeService(ProbeConfig(provider_urls=urls, coalesce=False, **overrides))

            def service_fetch(index: int) -> str | None:
                snap = self.service.fetch(PROVIDER, home=homes[index], refresh=True)
                return snap.error.code if snap.error else None

            self._fetch = service_fetch
            self._closers = [self.service.close]

    def fetch(self, index: int) -> str | None:
        return self._fetch(index)

    def close(self) -> None:
        for close in self._closers:
            close()


def run_load(strategy: Strategy, callers: int, per_caller: int, pick: Callable[[int, int], int]) -> dict:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()

    def caller(number: int) -> None:
        nonlocal errors
        for i in range(per_caller):
            start = time.perf_counter()
            code = strategy.fetch(pick(number, i))
            elapsed = (time.perf_counter() - start) * 1000
            with lock:
                latencies.append(elapsed)
                errors += code is not None

    wall = run_callers(callers, caller)
    return {"p50": statistics.median(latencies), "p99": percentile(latencies, 99),
            "rps": len(latencies) / wall, "errors": errors, "n": len(latencies)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default=REPORT)
    parser.add_argument("--chart", default="bench.png")
    args = parser.parse_args()
    scale = 1 if args.quick else 4
    results: dict[str, dict[str, dict]] = {}
    with emulator_process() as base_url, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fast = [settled_home(root, f"fast{i}", deepseek=f"sk-bench-fast-{i}") for i in range(4)]
        slow = [settled_home(root, "slow", deepseek="sk-bench-slow-slow50-")]
        workloads = {
            "sequential": (fast[:1], 1, 50 * scale, lambda n, i: 0),
            "8 callers, 1 home, N=2, 50 ms": (slow, 8, 5 * scale, lambda n, i: 0),
            "8 callers, 4 homes": (fast, 8, 20 * scale, lambda n, i: (n + i) % 4),
        }
        for workload, (homes, callers, per_caller, pick) in workloads.items():
            results[workload] = {}
            for name in STRATEGIES:
                if name == "cold" and workload != "8 callers, 1 home, N=2, 50 ms":
                    per = max(2, per_caller // 10)
                else:
                    per = per_caller
                strategy = Strategy(name, homes, base_url, pool_size=2)
                try:
                    run_load(strategy, callers, 2, pick)              # warm-up: start processes, connections
                    results[workload][name] = run_load(strategy, callers, per, pick)
                finally:
                    strategy.close()
                r = results[workload][name]
                print(f"{workload:32s} {name:7s} p50 {r['p50']:8.2f} ms  p99 {r['p99']:8.2f} ms  "
                      f"{r['rps']:8.1f} req/s  errors {r['errors']}", flush=True)
        polled_home = settled_home(root, "polled", deepseek="sk-bench-polled")
        pollers = identical_pollers_with_count(base_url, polled_home, 50, 5 * scale)
        results["50 identical pollers, cache on"] = {"warm": pollers}
        print(f"50 identical pollers: {pollers['provider_requests']} provider request(s), "
              f"p50 {pollers['p50']:.2f} ms, p99 {pollers['p99']:.2f} ms", flush=True)

    write_report(results, args)
    return 0


def identical_pollers_with_count(base_url: str, home: Path, pollers: int, rounds: int) -> dict:
    """Count provider requests as the service's own stats see them: every fetch that was not
    answered from the cache or by joining another caller's probe reached the provider."""
    with ProbeService(ProbeConfig(provider_urls=provider_urls_for(base_url))) as service:
        strategy = Strategy.__new__(Strategy)
        strategy._fetch = lambda index: (lambda s: s.error.code if s.error else None)(service.fetch(PROVIDER, home=home))
        result = run_load(strategy, pollers, rounds, lambda n, i: 0)
        fetches = service.stats()["fetches"]
        result["provider_requests"] = sum(v for k, v in fetches.items() if k not in ("cache", "coalesced"))
        result["paths"] = fetches
    return result


def write_report(results: dict[str, dict[str, dict]], args: argparse.Namespace) -> None:
    lines = ["## Side by side (`scripts/bench.py`)", "",
             f"Measured {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} on {platform.machine()}, "
             f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
             f"{os.cpu_count()} cores; one run of `python scripts/bench.py{' --quick' if args.quick else ''}`.",
             "The emulator runs in its own process. Ratios compare figures of this run only.", ""]
    for workload, by_strategy in results.items():
        if workload.startswith("50 identical"):
            continue
        lines += [f"### {workload}", "", "| strategy | p50 ms | p99 ms | req/s | p50 / direct | p50 / warm | errors |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        direct, warm = by_strategy["direct"], by_strategy["warm"]
        for name, r in by_strategy.items():
            lines.append(f"| {name} | {r['p50']:.2f} | {r['p99']:.2f} | {r['rps']:.1f} | "
                         f"{r['p50'] / direct['p50']:.2f} | {r['p50'] / warm['p50']:.2f} | {r['errors']} |")
        lines.append("")
    pollers = results["50 identical pollers, cache on"]["warm"]
    lines += ["### 50 identical pollers, cache on (default service)", "",
              f"{pollers['n']} fetches, **{pollers['provider_requests']} provider request(s)** within one TTL; "
              f"p50 {pollers['p50']:.2f} ms, p99 {pollers['p99']:.2f} ms; paths {json.dumps(pollers['paths'])}.", ""]
    lines += [f"Chart: [{args.chart}]({args.chart}) (p50 and p99 per strategy, log scale).", "",
              "<details><summary>Raw figures</summary>", "", "```json", json.dumps(results, indent=2), "```",
              "", "</details>"]
    write_section(args.output, "bench", "\n".join(lines))
    print(f"wrote {args.output}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[bench]'): no chart")
        return
    shown = [w for w in results if not w.startswith("50 identical")]
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 4))
    for ax, workload in zip(axes, shown):
        names = list(results[workload])
        p50 = [results[workload][n]["p50"] for n in names]
        p99 = [results[workload][n]["p99"] for n in names]
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], p50, width=0.4, label="p50")
        ax.bar([x + 0.2 for x in xs], p99, width=0.4, label="p99")
        ax.set_xticks(list(xs), names, rotation=30)
        ax.set_yscale("log")
        ax.set_ylabel("ms (log)")
        ax.set_title(workload, fontsize=9)
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.chart, dpi=110)
    print(f"wrote {args.chart}")


if __name__ == "__main__":
    sys.exit(main())
