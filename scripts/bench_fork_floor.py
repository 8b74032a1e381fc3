#!/usr/bin/env python3
"""The CPU floor of one forked start on this machine (issues #11 and #21).

    python scripts/bench_fork_floor.py [--output BENCHMARKS.md] [--scale-seconds 60]
    python scripts/bench_fork_floor.py --json [--probes 1|2] [-n 200]    # one row, as JSON

A process set up like the template (``workers.template._warm_up``, collector frozen) forks
children that do only what a worker must: nothing (fork + exit), build their HTTP client,
and build it plus probe once (or twice, two providers of one home, one after the other on
one client) against the emulator. The children's CPU (from ``wait4``) plus the parent's CPU
for the forks is the least a start can cost here, before any service bookkeeping; times
the scale scenario's start rate it bounds the service CPU from below.

Issue #21's target is a ratio *within one run*: service CPU <= 1.25 x (starts x the floor
measured in the same run), since the floor itself moves with the machine's load (7.0 ms
quiet, 7.8-8.1 ms beside a running stress load here). A benchmark gets the floor with
:func:`fork_floor_ms` (``sys.path`` holding ``scripts/``, as for ``benchlib``); it is
measured in a fresh process of its own, shaped like the template -- never in the
benchmark's process, whose service, threads and heap would make every fork dearer and the
ratio flattering. ``--scale-seconds S`` does that here: the 1,000-homes poll scenario of
``probe stress`` for S seconds, then the floor, and their ratio.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import REPORT, emulator_process, measured_on, settled_home, write_section

#: the providers a floor start probes, in order (``--probes 2`` takes both); each answers
#: from the emulator with an API key from the home's ``.env``
FLOOR_PROVIDERS = ("deepseek", "openrouter")


def measure(body, n: int) -> dict:
    faults = child = 0.0
    parent_before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            try:
                body()
            finally:
                os._exit(0)
        _, _, usage = os.wait4(pid, 0)
        faults += usage.ru_minflt
        child += usage.ru_utime + usage.ru_stime
    parent_after = resource.getrusage(resource.RUSAGE_SELF)
    parent = (parent_after.ru_utime + parent_after.ru_stime) - (parent_before.ru_utime + parent_before.ru_stime)
    return {"child_ms": 1000 * child / n, "parent_ms": 1000 * parent / n, "faults": faults / n,
            "total_ms": 1000 * (child + parent) / n}


def _rows(n: int, probes: tuple[int, ...], baselines: bool = True) -> dict[str, dict]:
    """Run in a fresh process: become template-like, then measure each row (``baselines``:
    also fork + exit and fork + client + exit)."""
    from probe.env import base_url_env_name
    from probe.tools.emulator import provider_urls_for

    with tempfile.TemporaryDirectory() as tmp, emulator_process() as base_url:
        home = settled_home(Path(tmp), "floor", deepseek="sk-floor", openrouter="sk-or-floor")
        for provider, url in provider_urls_for(base_url).items():
            os.environ[base_url_env_name(provider)] = url
        from workers.loop import prepare
        from workers.template import _warm_up

        _warm_up()
        gc.disable()
        gc.freeze()

        def probe(count: int):
            def body() -> None:
                gc.enable()
                loop = prepare()
                loop.home = str(home)
                for provider in FLOOR_PROVIDERS[:count]:
                    assert loop.probe(provider, 5.0)["error"] is None
            return body

        rows = {"fork + exit": measure(lambda: None, n),
                "fork + HTTP client + exit": measure(lambda: (gc.enable(), prepare()), n)} if baselines else {}
        for count in probes:
            rows[f"fork + HTTP client + {('one probe', 'two probes')[count - 1]} + exit"] = measure(probe(count), n)
        return rows


def fork_floor_ms(probes: int = 1, n: int = 200) -> dict:
    """The floor of one start that probes ``probes`` (1 or 2) providers, measured now in a
    fresh template-like process: ``{"total_ms", "child_ms", "parent_ms", "faults", "n",
    "probes"}`` (CPU per start: the child's, the forking parent's, and their sum)."""
    if probes not in (1, 2):
        raise ValueError("probes must be 1 or 2")
    result = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--json", "--probes", str(probes),
                             "-n", str(n)], capture_output=True, text=True, check=True)
    row = list(json.loads(result.stdout).values())[-1]
    return {**{k: round(v, 3) for k, v in row.items()}, "n": n, "probes": probes}


def scale_ratio(seconds: float, n: int) -> dict:
    """The 1,000-homes poll scenario (``probe stress``, as ``bench_spawn.scale_run``) for
    ``seconds``, then the one-probe floor; service CPU over starts x floor."""
    result = subprocess.run([sys.executable, "-m", "probe.cli", "stress", "--json", "--homes", "1000",
                             "--poll-interval", "45", "--duration", str(seconds), "--concurrency", "16"],
                            capture_output=True, text=True, timeout=seconds + 600)
    report = json.loads(result.stdout)
    floor = fork_floor_ms(1, n)
    per_start = 1000 * report["service_cpu"]["seconds"] / report["spawns"]
    return {"seconds": seconds, "starts": report["spawns"], "service_cpu_s": report["service_cpu"]["seconds"],
            "percent_of_one_core": report["service_cpu"]["percent_of_one_core"],
            "service_ms_per_start": round(per_start, 2), "floor_ms": floor["total_ms"],
            "ratio": round(per_start / floor["total_ms"], 2), "ok": report["ok"],
            "p99_ms": report["latency_ms"]["p99"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=REPORT)
    parser.add_argument("-n", type=int, default=300)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON, write no report")
    parser.add_argument("--probes", type=int, choices=(1, 2), default=None,
                        help="with --json: only this probe row, no baseline rows")
    parser.add_argument("--scale-seconds", type=float, default=0.0,
                        help="also run 1,000 homes polled every 45 s for this long and report "
                             "service CPU / (starts x the floor measured right after)")
    args = parser.parse_args()
    rows = _rows(args.n, (args.probes,) if args.probes else (1, 2), baselines=not args.probes)
    if args.json:
        print(json.dumps(rows))
        return 0
    scale = scale_ratio(args.scale_seconds, args.n) if args.scale_seconds else None
    floor = rows["fork + HTTP client + one probe + exit"]["total_ms"]
    md = ["## Fork floor (`scripts/bench_fork_floor.py`)", "",
          f"Measured {measured_on()}, {args.n} forks per row.", "",
          "| child of a template-like process | CPU per start (child + parent) | page faults in the child |",
          "| --- | --- | --- |",
          *[f"| {name} | {r['total_ms']:.2f} ms ({r['child_ms']:.2f} + {r['parent_ms']:.2f}) | {r['faults']:.0f} |"
            for name, r in rows.items()], "",
          f"1,000 homes polled every 45 s with `max_total_workers=64` start ~22 workers a second, so the "
          f"floor alone is {22.2 * floor / 10:.0f} % of one core here. Most of it is the kernel's: copy-on-write "
          f"page faults and tearing down a ~30 MB address space (`perf` shows `exit_mmap`, `do_wp_page`, "
          f"`copy_page_range` on top), which no Python-side change removes; issue #11's 20 % target assumed a "
          f"~2 ms fork."]
    if scale:
        md += ["", f"`--scale-seconds {scale['seconds']:g}`: `probe stress --homes 1000 --poll-interval 45` made "
               f"{scale['starts']} starts on {scale['service_cpu_s']:.1f} s of service CPU "
               f"({scale['percent_of_one_core']} % of one core, p99 {scale['p99_ms']} ms, invariants "
               f"{'all true' if scale['ok'] else 'NOT all true'}): {scale['service_ms_per_start']} ms per start "
               f"against a floor of {scale['floor_ms']:.2f} ms measured right after = **{scale['ratio']}x** the "
               f"floor (issue #21's target: 1.25x)."]
    print("\n".join(md))
    write_section(args.output, "bench_fork_floor", "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
