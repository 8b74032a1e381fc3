#!/usr/bin/env python3
"""hermes-webui route benchmark (issue #28): what ``GET /api/provider/quota`` costs next to
``GET /api/quota?home=ID&provider=P`` for the same reading, one run.

    python scripts/bench_webui.py [--requests 400] [--output BENCHMARKS.md]

A real ``probe serve`` (one home holding an Anthropic OAuth token and an OpenRouter key,
no history, no background refresher) in a process of its own, the emulator in another; the
client here, on one kept-alive connection. After a warm-up (the worker started, both
answers cached), the two routes are asked **interleaved** -- A B, then B A, so neither
always goes first -- for each provider, twice:

* **cached**: a plain read, answered from the service's cache (what a panel's poll costs);
* **refresh**: ``refresh=1``, a real probe through the warm worker and the emulator.

The target is a warm ``/api/provider/quota`` at most 1.2x a warm ``/api/quota`` (medians).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import REPORT, emulator_process_env, settled_home, write_section  # noqa: E402

TARGET = 1.2
PROVIDERS = ("anthropic", "openrouter")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(client, n: int) -> dict[str, dict[str, dict[str, float]]]:
    """{mode: {provider: {"quota_ms", "webui_ms", "ratio"}}} (medians over n each)."""
    figures: dict[str, dict[str, dict[str, float]]] = {}
    for mode, extra in (("cached", {}), ("refresh", {"refresh": "1"})):
        figures[mode] = {}
        for provider in PROVIDERS:
            routes = {"quota": ("/api/quota", {"home": "main", "provider": provider, **extra}),
                      "webui": ("/api/provider/quota", {"home": "main", "provider": provider, **extra})}
            times: dict[str, list[float]] = {"quota": [], "webui": []}
            for i in range(n):
                order = ("quota", "webui") if i % 2 == 0 else ("webui", "quota")
                for name in order:
                    path, params = routes[name]
                    start = time.perf_counter()
                    response = client.get(path, params=params)
                    times[name].append((time.perf_counter() - start) * 1000)
                    if response.status_code != 200:
                        raise SystemExit(f"{path} answered {response.status_code}")
            quota_ms, webui_ms = statistics.median(times["quota"]), statistics.median(times["webui"])
            figures[mode][provider] = {"quota_ms": quota_ms, "webui_ms": webui_ms, "ratio": webui_ms / quota_ms}
    return figures


def run(n: int) -> dict:
    import httpx

    with emulator_process_env() as (_, env), tempfile.TemporaryDirectory() as tmp:
        home = settled_home(Path(tmp), "main", anthropic="sk-ant-oat01-bench-webui", openrouter="sk-or-v1-bench-webui")
        (home / "config.yaml").write_text("model:\n  provider: anthropic\n")
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "probe.cli", "serve", "--port", str(port), "--home", f"main={home}",
             "--no-history", "--refresh-s", "0", "--cache-ttl-s", "3600"],
            env={**os.environ, **env, "PROBE_TOKEN": "bench-webui-token"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        if client.get("/healthz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise SystemExit("probe serve did not start")
                    time.sleep(0.1)
                for provider in PROVIDERS:   # the first reading (a cold start may time out on a loaded machine)
                    while not (first := client.get("/api/quota", params={"home": "main", "provider": provider,
                                                                         "refresh": "1"}).json())["available"]:
                        if time.monotonic() > deadline + 120:
                            raise SystemExit(f"no {provider} reading: {first['error']}")
                for _ in range(50):    # warm-up: the worker, the cache, both routes' code
                    for provider in PROVIDERS:
                        assert client.get("/api/quota", params={"home": "main", "provider": provider}).json()["available"]
                        assert client.get("/api/provider/quota", params={"provider": provider}).json()["ok"]
                figures = measure(client, n)
        finally:
            server.terminate()
            server.wait(20)
    return {"requests": n, "figures": figures, "load": os.getloadavg()[0]}


def render(result: dict) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["## hermes-webui route (`scripts/bench_webui.py`)", "",
             f"Measured {now} on {platform.machine()}, {platform.system()} {platform.release()}, Python "
             f"{platform.python_version()} ({os.cpu_count()} cores, load {result['load']:.1f}), one run of "
             f"`python scripts/bench_webui.py --requests {result['requests']}`: a real `probe serve`, the emulator in "
             "its own process, the two routes asked interleaved for the same reading; medians.", "",
             "| reading | provider | `/api/quota` | `/api/provider/quota` | ratio (target <= 1.2x) |",
             "| --- | --- | --- | --- | --- |"]
    for mode, by_provider in result["figures"].items():
        for provider, f in by_provider.items():
            lines.append(f"| {mode} | {provider} | {f['quota_ms']:.2f} ms | {f['webui_ms']:.2f} ms | "
                         f"{f['ratio']:.2f}x |")
    lines += ["", "<details><summary>Raw figures</summary>", "", "```json", json.dumps(result, indent=2), "```", "",
              "</details>"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--output", default=REPORT)
    args = parser.parse_args()
    result = run(args.requests)
    text = render(result)
    print(text)
    write_section(args.output, "bench_webui", text)


if __name__ == "__main__":
    main()
