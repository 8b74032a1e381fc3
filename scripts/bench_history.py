#!/usr/bin/env python3
"""History benchmark (issue #13, SPEC §14), every figure from one run.

    python scripts/bench_history.py [--quick] [--output BENCHMARKS.md]

1. What history costs a fetch: the same warm Anthropic fetch through the backend's reader
   with history on and off, interleaved (on, off, on, ...) so drift cancels; medians.
2. A full retention's worth of points: 35 days of 5-minute points for 100 homes x 4
   providers x 2 windows (~8 million rows) written straight into a history file with the
   real schema; its size, and how fast ``/api/history``'s 7-day query answers for one home
   and provider (both its windows).
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import REPORT, emulator_process, measured_on, settled_home, write_section
from probe import ProbeConfig, ProbeService
from probe.tools.emulator import provider_urls_for
from probe.monitor.history import History, migrate, query_file
from probe.monitor.readings import Reader

PROVIDERS = ("anthropic", "openai-codex", "openrouter", "deepseek")


def fetch_cost(root: Path, n: int) -> dict:
    with emulator_process() as base_url:
        home = settled_home(root, "bench-history", anthropic="sk-ant-oat01-bench-history")
        store = History(root / "fetch.sqlite3")
        assert store.start()
        with ProbeService(ProbeConfig(provider_urls=provider_urls_for(base_url))) as service:
            plain = Reader(service, {"a": home})
            recorded = Reader(service, {"a": home}, history=store)
            for reader in (plain, recorded):
                for _ in range(20):
                    reader.fetch("a", "anthropic", refresh=True)
            on, off = [], []
            for i in range(2 * n):
                reader, into = (recorded, on) if i % 2 == 0 else (plain, off)
                start = time.perf_counter()
                snap = reader.fetch("a", "anthropic", refresh=True)
                into.append((time.perf_counter() - start) * 1000)
                assert snap.error is None and snap.probe.path == "warm"
        store.close()
    return {"on_ms": statistics.median(on), "off_ms": statistics.median(off),
            "ratio": statistics.median(on) / statistics.median(off), "n": n}


def full_retention(root: Path, homes: int, days: int) -> dict:
    path = root / "retention.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    migrate(conn)
    now = int(time.time())
    step = 300
    times = list(range(now - days * 86400, now, step))
    started = time.perf_counter()
    conn.execute("BEGIN")
    series_ids = []
    for h in range(homes):
        conn.execute("INSERT INTO homes (home_id, path) VALUES (?, ?)", (f"h{h}", f"/srv/h{h}"))
        home = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        for provider in PROVIDERS:
            for label in ("Current session", "Current week"):
                conn.execute("INSERT INTO series (home, provider, kind, label) VALUES (?, ?, 'window', ?)",
                             (home, provider, label))
                series_ids.append(conn.execute("SELECT last_insert_rowid()").fetchone()[0])
    conn.execute("COMMIT")
    rows = 0
    for series in series_ids:
        conn.execute("BEGIN")
        # a 5-hour window: each point names its instance by the instance's reset (schema 2)
        conn.executemany("INSERT INTO points (series, t, value, reset_at, instance) VALUES (?, ?, ?, ?, ?)",
                         ((series, t, (t // step) % 100 + 0.5, t - t % 18000 + 18000, t - t % 18000 + 18000)
                          for t in times))
        conn.execute("COMMIT")
        rows += len(times)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    write_s = time.perf_counter() - started
    size_mb = path.stat().st_size / 1048576
    timings = []
    for i in range(30):
        start = time.perf_counter()
        body = query_file(path, PROVIDERS[i % 4], now - 7 * 86400, home_id=f"h{(i * 37) % homes}")
        timings.append((time.perf_counter() - start) * 1000)
        assert len(body["series"]) == 2 and len(body["series"][0]["points"]) >= 7 * 288 - 1
    return {"rows": rows, "series": len(series_ids), "write_s": write_s, "size_mb": size_mb,
            "query_ms_median": statistics.median(timings), "query_ms_max": max(timings),
            "points_per_query": 2 * len(body["series"][0]["points"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 homes, fewer fetches (a smoke run)")
    parser.add_argument("--output", default=REPORT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cost = fetch_cost(root, 50 if args.quick else 300)
        retention = full_retention(root, 10 if args.quick else 100, 35)
    print(json.dumps({"fetch": cost, "retention": retention}, indent=2))
    command = "python scripts/bench_history.py" + (" --quick" if args.quick else "")
    md = ["## History (`scripts/bench_history.py`)", "",
          f"Measured {measured_on()}, one run of `{command}`.", "",
          "| measurement | result |", "| --- | --- |",
          f"| warm Anthropic fetch through the backend's reader, history on / off (median of {cost['n']} each, "
          f"interleaved) | {cost['on_ms']:.3f} / {cost['off_ms']:.3f} ms = **{cost['ratio']:.3f}x** (target ≤ 1.05x) |",
          f"| 35 days of 5-minute points, {retention['series']} series ({retention['rows']:,} points) | file "
          f"**{retention['size_mb']:.0f} MB** (target < 1 GB), written in {retention['write_s']:.0f} s |",
          f"| 7-day `/api/history` query for one home and provider ({retention['points_per_query']:,} points, "
          f"2 windows) | median **{retention['query_ms_median']:.1f} ms**, max {retention['query_ms_max']:.1f} ms "
          f"over 30 queries (target < 50 ms) |", ""]
    write_section(args.output, "bench_history", "\n".join(md))
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
