#!/usr/bin/env python3
"""Home-read benchmarks (issue #21, SPEC §17): a home read in one start, every figure of a
part measured in one run against the built-in emulator.

    python scripts/bench_home.py [--quick] [--parts cold,scale,deploy,regress] [--output BENCHMARKS.md]

Parts (each can run on its own; the section keeps the latest figures of every part, each
with the time it was measured, and the raw JSON of all):

* ``cold`` -- a cold home with four credentialed providers (Anthropic made the slowest with
  the emulator's ``-slow50-`` marker), ``GET /api/quota?home=ID`` over real HTTP against the
  app on uvicorn: process starts per read and its median latency against a single fetch of
  the slowest provider on a fresh home (and, for comparison, the four per-provider GETs a
  panel made before §17, side by side), fresh homes interleaved.
* ``scale`` -- ``probe stress`` with 1,000 homes, 2 of 4 providers each, every home read
  (``--home-reads``) every 45 s for 3 minutes; the fork floor (fork + HTTP client + N probes
  + exit, N = 1 and 2) measured in the same run, and service CPU over starts x floor.
* ``deploy`` -- the recommended deployment: 1,000 homes, the background refresher every
  300 s, the panel polling each home every 45 s answered from the readings
  (``Reader.read_home(from_readings=True)``, as the HTTP handler does); long enough for the
  first pass and one whole interval after it. CPU per window; probes of providers a home has
  no credential for, counted at the emulator and in the service's stats.
* ``regress`` -- nothing regresses: the contention row of ``bench_spawn.py``, warm fetch
  against a direct GET (``bench_pool.py``'s functions), and isolation (200 homes read
  through ``fetch_home`` while credentials rotate: each result matches its home).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchlib import (REPORT, counting_emulator_process, emulator_process_env, measured_on, settled_home,
                      write_section)
from probe import ProbeConfig, ProbeService
from probe.tools.emulator import provider_urls_for
from probe.tools.stress import (HOME_PROVIDERS, LatencyHistogram, StressOptions, _PollSchedule, _requests_by_provider,
                                home_providers, percentile, run_stress, service_cpu_split, token_for)

SECTION = "bench_home"
#: the slowest provider's added latency in the cold-home part
SLOW_MS = 50
#: ``write_home``'s keyword for each provider
WRITE_HOME_KEY = {"deepseek": "deepseek", "anthropic": "anthropic", "openai-codex": "codex", "openrouter": "openrouter"}
#: the fork floor's rows (see fork_floor_rows); the scale ratio divides by the 2-probe one
FLOOR_ONE = "fork + HTTP client + one probe + exit"
FLOOR_TWO = "fork + HTTP client + two probes + exit"


# -- helpers ------------------------------------------------------------------------------
@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """The ASGI app on a real uvicorn on 127.0.0.1 (an ephemeral port) in a thread, as
    ``probe serve`` runs it; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="bench-uvicorn")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        raise RuntimeError("uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(20)


def stress_home(root: Path, index: int, count: int, latency_ms: int = 0) -> Path:
    """Home ``index`` as ``probe stress`` shapes it (``count`` of the four built-ins,
    rotating), written long ago (``settled_home``), with stress tokens."""
    tokens = {WRITE_HOME_KEY[p]: token_for(index, 0, latency_ms, p) for p in home_providers(index, count)}
    return settled_home(root, f"home{index}", **tokens)


# -- the fork floor -----------------------------------------------------------------------
def fork_floor_rows(n: int) -> dict[str, dict]:
    """The CPU floor of one forked start that probes 1 and 2 providers
    (``bench_fork_floor.fork_floor_ms``: a fresh template-like process of its own, its own
    emulator; the 2-probe start probes DeepSeek then OpenRouter on one client -- three
    requests, where this run's pairs average 2.5, side by side). name -> {total_ms, ...}."""
    from bench_fork_floor import fork_floor_ms

    return {FLOOR_ONE: fork_floor_ms(1, n), FLOOR_TWO: fork_floor_ms(2, n)}


# -- part: a cold home over HTTP -------------------------------------------------------------
def part_cold(n: int) -> dict:
    """``n`` fresh homes per kind, interleaved: a home read (``?home=ID``), a single fetch
    of the slowest provider (``&provider=anthropic``), and the four per-provider GETs side by
    side (the panel before §17). Each home has all four credentials; each request is the
    home's first, so its worker must start."""
    from probe.server import create_app

    warmup = 3
    kinds = ("home_read", "single_slowest", "four_gets")
    with tempfile.TemporaryDirectory() as tmp, emulator_process_env() as (base_url, _):
        root = Path(tmp)
        homes = {}
        for i in range(n + warmup):
            for kind in kinds:
                name = f"{kind}-{i}"
                homes[name] = settled_home(root, name, anthropic=f"sk-ant-oat01-cold-{name}-slow{SLOW_MS}-",
                                           codex=f"cold-codex-{name}", openrouter=f"sk-or-v1-cold-{name}",
                                           deepseek=f"sk-cold-{name}")
        latencies: dict[str, list[float]] = {kind: [] for kind in kinds}
        starts: dict[str, list[int]] = {kind: [] for kind in kinds}
        paths: dict[str, Counter] = {kind: Counter() for kind in kinds}
        errors: Counter[str] = Counter()
        import httpx

        with ProbeService(ProbeConfig(provider_urls=provider_urls_for(base_url))) as service:
            app = create_app(service, homes, "bench-token", refresh_s=0)
            with serving(app) as url, httpx.Client(base_url=url, timeout=30) as client, \
                    ThreadPoolExecutor(4) as pool:
                def get(params: dict) -> list[dict]:
                    response = client.get("/api/quota", params=params)
                    response.raise_for_status()
                    body = response.json()
                    return body if isinstance(body, list) else [body]

                for i in range(n + warmup):
                    order = kinds[i % 3:] + kinds[:i % 3]
                    for kind in order:
                        home_id = f"{kind}-{i}"
                        before = service.stats()["spawns"]
                        start = time.perf_counter()
                        if kind == "home_read":
                            snaps = get({"home": home_id})
                        elif kind == "single_slowest":
                            snaps = get({"home": home_id, "provider": "anthropic"})
                        else:
                            snaps = [s for part in pool.map(lambda p: get({"home": home_id, "provider": p}),
                                                            HOME_PROVIDERS) for s in part]
                        elapsed = (time.perf_counter() - start) * 1000
                        spawned = service.stats()["spawns"] - before
                        if i < warmup:
                            continue
                        latencies[kind].append(elapsed)
                        starts[kind].append(spawned)
                        for snap in snaps:
                            paths[kind][snap["probe"]["path"]] += 1
                            if snap.get("error"):
                                errors[f"{kind}:{snap['error']['code']}"] += 1
                        expected = 1 if kind == "single_slowest" else 4
                        assert len(snaps) == expected, (kind, len(snaps))
    out = {"homes_per_kind": n, "slow_ms": SLOW_MS, "errors": dict(errors), "measured": measured_on()}
    for kind in kinds:
        out[kind] = {"median_ms": statistics.median(latencies[kind]), "p90_ms": percentile(latencies[kind], 90),
                     "starts_mean": statistics.mean(starts[kind]), "starts_max": max(starts[kind]),
                     "paths": dict(paths[kind])}
    out["home_read_over_single"] = out["home_read"]["median_ms"] / out["single_slowest"]["median_ms"]
    out["four_gets_over_single"] = out["four_gets"]["median_ms"] / out["single_slowest"]["median_ms"]
    return out


# -- part: 1,000 homes, home reads every 45 s --------------------------------------------------
def part_scale(seconds: float, homes: int, floor_n: int) -> dict:
    """The fork floor, then ``probe stress`` (a process of its own, as bench_spawn runs it),
    then the floor again: the ratio uses their mean, so a drift in the machine's speed
    during the run shows as a gap between the two."""
    floor_before = fork_floor_rows(floor_n)
    command = [sys.executable, "-m", "probe.cli", "stress", "--json", "--homes", str(homes), "--poll-interval", "45",
               "--duration", str(seconds), "--concurrency", "16", "--providers-per-home", "2", "--home-reads"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 900)
    report = json.loads(result.stdout)
    floor_after = fork_floor_rows(floor_n)
    floor = {name: {k: (floor_before[name][k] + floor_after[name][k]) / 2 for k in floor_before[name]}
             for name in floor_before}
    spawns = report["spawns"]
    cpu_s = report["service_cpu"]["seconds"]
    one, two = floor[FLOOR_ONE]["total_ms"], floor[FLOOR_TWO]["total_ms"]
    return {"measured": measured_on(), "command": " ".join(["probe", *command[3:]]), "stress": report,
            "floor_before": floor_before, "floor_after": floor_after, "floor": floor,
            "starts_per_poll": spawns / report["requests"] if report["requests"] else None,
            "floor_cpu_s_two_probes": spawns * two / 1000, "floor_cpu_s_one_probe": spawns * one / 1000,
            "cpu_over_floor_two_probes": cpu_s / (spawns * two / 1000) if spawns else None,
            "cpu_over_floor_one_probe": cpu_s / (spawns * one / 1000) if spawns else None}


# -- part: the recommended deployment ------------------------------------------------------
def part_deploy(homes_n: int, refresh_s: float, panel_s: float, intervals: float) -> dict:
    """``homes_n`` homes (2 of 4 providers each, as the scale part), a Refresher every
    ``refresh_s`` and panel polls every ``panel_s`` through ``Reader.read_home(...,
    from_readings=True)``, for ``intervals`` refresher intervals (the first is the first
    pass, spread over one interval). The emulator is a process of its own, so the CPU
    sampled at each interval's end is the service's (this process: service, refresher,
    panel callers; plus template and workers)."""
    from probe.monitor.readings import Reader
    from probe.monitor.refresher import Refresher

    latencies = LatencyHistogram()
    sources: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    with tempfile.TemporaryDirectory() as tmp, counting_emulator_process() as (base_url, emulator_counts):
        import psutil

        emulator_pid = {c.pid for c in psutil.Process().children()}
        root = Path(tmp)
        homes = {f"h{i}": stress_home(root, i, 2) for i in range(homes_n)}
        credentialed = Counter(p for i in range(homes_n) for p in home_providers(i, 2))
        with ProbeService(ProbeConfig(provider_urls=provider_urls_for(base_url))) as service:
            reader = Reader(service, homes)
            refresher = Refresher(reader, refresh_s, seed=1)
            started = time.monotonic()
            end = started + intervals * refresh_s
            schedule = _PollSchedule(homes_n, panel_s, started)
            ids = list(homes)

            def panel() -> None:
                while (due := schedule.take(stop, end)) is not None:
                    begin = time.monotonic()
                    snaps = reader.read_home(ids[due[0]], refresh=False, from_readings=True)
                    elapsed = (time.monotonic() - begin) * 1000
                    with lock:
                        latencies.add(elapsed)
                        for snap in snaps:
                            sources[snap.probe.path] += 1
                            if snap.error:
                                errors[snap.error.code] += 1

            cpu = [service_cpu_split(emulator_pid)]
            marks = [0.0]
            callers = [threading.Thread(target=panel, name=f"bench-panel-{i}") for i in range(16)]
            refresher.start()
            for thread in callers:
                thread.start()
            for k in range(1, int(intervals) + 1):
                stop.wait(max(0.0, started + k * refresh_s - time.monotonic()))
                cpu.append(service_cpu_split(emulator_pid))
                marks.append(time.monotonic() - started)
            for thread in callers:
                thread.join()
            refresher.stop()
            refresher.join()
            stats = service.stats()
            runs = refresher.runs
        counts = emulator_counts()
    windows = []
    for k in range(1, len(cpu)):
        span = marks[k] - marks[k - 1]
        own, rest = (cpu[k][0] - cpu[k - 1][0]), (cpu[k][1] - cpu[k - 1][1])
        windows.append({"from_s": round(marks[k - 1], 1), "to_s": round(marks[k], 1),
                        "cpu_s": own + rest, "parent_cpu_s": own, "workers_cpu_s": rest,
                        "percent_of_one_core": 100 * (own + rest) / span})
    total_cpu = sum(w["cpu_s"] for w in windows)
    by_provider = _requests_by_provider(counts)
    return {"measured": measured_on(), "homes": homes_n, "refresh_s": refresh_s, "panel_s": panel_s,
            "duration_s": marks[-1], "windows": windows, "percent_of_one_core": 100 * total_cpu / marks[-1],
            "refresher_runs": runs, "panel_polls": latencies.total,
            "panel_latency_ms": {"p50": latencies.percentile(50), "p99": latencies.percentile(99),
                                 "max": latencies.max_ms},
            "panel_answers_by_path": dict(sources), "panel_errors": dict(errors),
            "home_reads": stats["home_reads"], "spawns": stats["spawns"], "provider_lists": stats["provider_lists"],
            "service_fetches": stats["fetches"], "service_errors": stats["errors"],
            "no_credentials_in_stats": stats["errors"].get("no_credentials", 0),
            "emulator_requests": by_provider, "homes_with_credential": dict(credentialed),
            "probes_without_credential": by_provider.get("without_token", 0) + stats["errors"].get("no_credentials", 0)}


# -- part: nothing regresses -------------------------------------------------------------------
def part_regress(quick: bool) -> dict:
    from bench_pool import direct_get, sequential
    from bench_spawn import contention

    out: dict = {"measured": measured_on()}
    with tempfile.TemporaryDirectory() as tmp, emulator_process_env() as (base_url, _):
        root = Path(tmp)
        urls = provider_urls_for(base_url)
        rows = contention(urls, root, 10 if quick else 50)
        out["contention"] = rows["new defaults"]
        n = 100 if quick else 500
        direct = direct_get(base_url, "sk-ant-oat01-bench-direct", n)
        home = settled_home(root, "warm", anthropic="sk-ant-oat01-bench-warm")
        with ProbeService(ProbeConfig(provider_urls=urls)) as service:
            warm = sequential(service, home, "anthropic", n)
        out["warm"] = {"direct_median_ms": statistics.median(direct), "warm_median_ms": statistics.median(warm),
                       "warm_p99_ms": percentile(warm, 99),
                       "warm_over_direct": statistics.median(warm) / statistics.median(direct)}
    report = run_stress(StressOptions(homes=200, concurrency=8, requests=400 if quick else 2000,
                                      providers_per_home=2, home_reads=True, rotate_every_s=0.2, timeout_s=20))
    out["isolation"] = {k: report[k] for k in ("ok", "requests", "provider_answers", "invariants", "violations",
                                               "errors", "paths", "spawns")}
    return out


# -- the report --------------------------------------------------------------------------------
def rows_of(results: dict) -> list[tuple[str, str, str]]:
    """(measurement, result, target) per row, for the parts measured so far."""
    rows: list[tuple[str, str, str]] = []
    if "cold" in results:
        c = results["cold"]
        h, s, f = c["home_read"], c["single_slowest"], c["four_gets"]
        rows += [
            (f"cold home, 4 providers, `GET /api/quota?home=ID`: process starts per read ({c['homes_per_kind']} homes)",
             f"{h['starts_mean']:.2f} (max {h['starts_max']}); paths {json.dumps(h['paths'])}", "1 (was 4)"),
            ("... its median latency / a single fetch of the slowest provider (anthropic, "
             f"+{c['slow_ms']} ms) on a fresh home",
             f"{h['median_ms']:.1f} / {s['median_ms']:.1f} ms = {c['home_read_over_single']:.2f}x "
             f"(p90 {h['p90_ms']:.1f} / {s['p90_ms']:.1f} ms)", "<= 1.2x"),
            ("... for comparison: the four per-provider GETs side by side (the panel before §17)",
             f"{f['median_ms']:.1f} ms = {c['four_gets_over_single']:.2f}x, {f['starts_mean']:.2f} starts",
             "(was 1.23x, 4 starts)"),
        ]
    if "scale" in results:
        s = results["scale"]
        r = s["stress"]
        lat = r["latency_ms"]
        two, one = s["floor"][FLOOR_TWO]["total_ms"], s["floor"][FLOOR_ONE]["total_ms"]
        cpu = r["service_cpu"]
        rows += [
            (f"{r['options']['homes']:,} homes, 2 of 4 providers, a home read every 45 s for "
             f"{r['duration_s']:.0f} s: starts per home poll",
             f"{s['starts_per_poll']:.3f} ({r['spawns']} starts, {r['requests']} polls, {r['home_reads']} home reads)",
             "<= 1.0"),
            ("... service CPU / (starts x fork floor, 2 probes) [the ratio]",
             f"{cpu['seconds']:.1f} s / ({r['spawns']} x {two:.2f} ms = {s['floor_cpu_s_two_probes']:.1f} s) = "
             f"**{s['cpu_over_floor_two_probes']:.2f}x**; {cpu['percent_of_one_core']} % of one core "
             f"(the service process {cpu['parent_seconds']:.1f} s = {1000 * cpu['parent_seconds'] / r['spawns']:.1f} ms "
             f"a start; the template and workers {cpu['children_seconds']:.1f} s = "
             f"{1000 * cpu['children_seconds'] / r['spawns']:.1f} ms a start)", "<= 1.25x"),
            ("... the same over the 1-probe floor",
             f"{r['spawns']} x {one:.2f} ms = {s['floor_cpu_s_one_probe']:.1f} s: {s['cpu_over_floor_one_probe']:.2f}x",
             "(for reference)"),
            ("... p99 latency minus the provider latency (the emulator adds 0 ms)",
             f"p99 {lat['p99']:.1f} ms (p50 {lat['p50']:.1f}, max {lat['max']:.1f}); schedule lag p99 "
             f"{r['schedule_lag_ms']['p99']:.1f} ms", "<= 50 ms"),
            ("... invariants", "all true" if r["ok"] else json.dumps(r["invariants"]), "all true"),
        ]
        for name, row in s["floor"].items():
            rows.append((f"fork floor: {name}",
                         f"{row['total_ms']:.2f} ms ({row['child_ms']:.2f} child + {row['parent_ms']:.2f} parent), "
                         f"{row['faults']:.0f} faults; before / after the run "
                         f"{s['floor_before'][name]['total_ms']:.2f} / {s['floor_after'][name]['total_ms']:.2f} ms", ""))
    if "deploy" in results:
        d = results["deploy"]
        w = d["windows"]
        rows += [
            (f"recommended deployment: {d['homes']:,} homes, refresher every {d['refresh_s']:g} s, panel every "
             f"{d['panel_s']:g} s from readings, {d['duration_s']:.0f} s: service CPU",
             f"{d['percent_of_one_core']:.1f} % of one core over the run; "
             + "; ".join(f"{x['from_s']:.0f}-{x['to_s']:.0f} s {x['percent_of_one_core']:.1f} % "
                         f"(parent {x['parent_cpu_s']:.1f} s, workers {x['workers_cpu_s']:.1f} s)" for x in w),
             "<= 10 % of one core"),
            ("... probes of providers without a credential (emulator requests without a token + "
             "`no_credentials` in stats)",
             f"{d['probes_without_credential']} (emulator requests {json.dumps(d['emulator_requests'])} for "
             f"credentials {json.dumps(d['homes_with_credential'])}; stats errors {json.dumps(d['service_errors'])})",
             "0"),
            ("... refresher runs / home reads / starts; panel polls",
             f"{d['refresher_runs']} / {d['home_reads']} / {d['spawns']}; {d['panel_polls']} polls, p50 "
             f"{d['panel_latency_ms']['p50']:.2f} ms, p99 {d['panel_latency_ms']['p99']:.2f} ms, answers "
             f"{json.dumps(d['panel_answers_by_path'])}", ""),
        ]
    if "regress" in results:
        g = results["regress"]
        c, w, i = g["contention"], g["warm"], g["isolation"]
        rows += [
            ("contention: 8 callers, pool_size=2, 50 ms provider, new defaults (bench_spawn's row)",
             f"p50 {c['p50_ms']:.1f} ms, p99 {c['p99_ms']:.1f} ms, {c['rps']:.0f} req/s, peak workers "
             f"{c['peak_workers']} (bound {c['bound']})", "p50 <= 65 ms, p99 <= 100 ms, >= 72 req/s"),
            ("warm fetch(refresh=True) / direct GET, median",
             f"{w['warm_median_ms']:.3f} / {w['direct_median_ms']:.3f} ms = {w['warm_over_direct']:.2f}x "
             f"(p99 {w['warm_p99_ms']:.3f} ms)", "no slower than before #21"),
            ("isolation: 200 homes, 2 of 4 providers, home reads while credentials rotate every 0.2 s",
             f"{i['requests']} reads, {sum(i['provider_answers'].values())} answers, "
             + ("every result its own home's, all invariants true" if i["ok"] else json.dumps(i["invariants"])),
             "each result matches its home"),
        ]
    return rows


def notes_of(results: dict) -> list[str]:
    """What the figures mean, from the figures (a part not measured yet says nothing)."""
    notes = []
    if "scale" in results:
        s, r = results["scale"], results["scale"]["stress"]
        two = s["floor"][FLOOR_TWO]["total_ms"]
        children = 1000 * r["service_cpu"]["children_seconds"] / r["spawns"]
        parent = 1000 * r["service_cpu"]["parent_seconds"] / r["spawns"]
        notes.append(
            f"- *scale*: the ratio divides by the 2-probe floor (`bench_fork_floor.fork_floor_ms(2)`: DeepSeek then "
            f"OpenRouter on one client, three requests; this run's pairs average 2.5 requests, probed side by side), "
            f"the mean of the floor measured just before and just after the stress run. Per start, the template and "
            f"workers spent {children:.1f} ms ({children / two:.2f}x the floor on their own) and the service process "
            f"{parent:.1f} ms (the stress callers included); README's \"What a start costs beyond the fork floor\" "
            f"says where a start's CPU goes beyond the floor. The provider latency is 0 (no `--latency-ms`), so the "
            f"p99 row is the service's own. `probe stress` runs the emulator as threads of its own process and subtracts their CPU.")
    if "deploy" in results:
        d = results["deploy"]
        notes.append(
            f"- *deploy*: the first {d['refresh_s']:g} s are the refresher's first pass, during which the panel's "
            f"first poll of a home that has no reading yet reads it ({d['home_reads'] - d['refresher_runs']} home reads "
            f"beyond the refresher's {d['refresher_runs']}); the next {d['refresh_s']:g} s are the steady state. The "
            f"emulator runs in a process of its own; the service's CPU includes the 16 panel caller threads.")
    return notes


def previous_results(path: str) -> dict:
    """The raw JSON of this section as last written: a part run alone keeps the others'."""
    with contextlib.suppress(OSError, ValueError, AttributeError, IndexError):
        text = Path(path).read_text()
        section = text.split(f"<!-- {SECTION}:start -->", 1)[1].split(f"<!-- {SECTION}:end -->", 1)[0]
        return json.loads(re.search(r"```json\n(.*?)\n```", section, re.S).group(1))
    return {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and short runs (a smoke run)")
    parser.add_argument("--parts", default="cold,scale,deploy,regress")
    parser.add_argument("--output", default=REPORT)
    parser.add_argument("-n", type=int, default=200, help="forks per fork-floor row")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - {"cold", "scale", "deploy", "regress"}
    if unknown:
        parser.error(f"unknown parts: {sorted(unknown)}")
    results = previous_results(args.output)
    load = {}
    for part in parts:
        load_before = os.getloadavg()
        if part == "cold":
            results["cold"] = part_cold(8 if args.quick else 30)
        elif part == "scale":
            results["scale"] = part_scale(20 if args.quick else 180, 100 if args.quick else 1000,
                                          40 if args.quick else args.n)
        elif part == "deploy":
            results["deploy"] = (part_deploy(100, 20, 5, 2) if args.quick else part_deploy(1000, 300, 45, 2))
        else:
            results["regress"] = part_regress(args.quick)
        results[part]["quick"] = args.quick
        results[part]["load_average_before_after"] = [round(x, 2) for x in (*load_before, *os.getloadavg())]
        load[part] = results[part]["load_average_before_after"]
    rows = rows_of(results)
    width = max(len(r[0]) for r in rows)
    print("\n".join(f"{name[:width]:<{width}}  {value}  [{target}]" for name, value, target in rows))

    when = "; ".join(f"{part} {results[part]['measured']}" + (" (--quick)" if results[part].get("quick") else "")
                     + f", load {results[part]['load_average_before_after'][0]:.2f} -> "
                       f"{results[part]['load_average_before_after'][3]:.2f}"
                     for part in ("cold", "scale", "deploy", "regress") if part in results)
    md = ["## Home reads (`scripts/bench_home.py`)", "",
          f"One run per part of `python scripts/bench_home.py --parts <part>` (issue #21, SPEC §17); ratios are "
          f"within a part's run. Measured: {when} (1-minute load average before -> after; 2 cores).", "",
          "| measurement | result | target |", "| --- | --- | --- |",
          *[f"| {name} | {value} | {target} |" for name, value, target in rows], "", *notes_of(results), "",
          "<details><summary>Raw figures</summary>", "", "```json", json.dumps(results, indent=2, default=str), "```",
          "", "</details>"]
    write_section(args.output, SECTION, "\n".join(md))
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
