"""``probe stress --backends N --redis URL``: several real ``probe serve`` processes sharing
one Redis, with pollers spread across them over HTTP (SPEC §15).

Each backend is a ``probe serve`` process with the same ``--home ID=PATH`` list, the
``--redis`` URL, no background refresh and no history; the harness's emulator (in this
process) is every backend's provider and counts what reaches it. Callers poll random
homes on random backends (a load balancer's view) without ``refresh``, so what is measured
is what cluster mode promises: provider requests per (home, provider) per cache TTL across
all backends -- 1.0 when sharing works, N when every backend polls on its own.

Invariants: ``no_cross_home`` (a body's balance encodes its home, as in ``probe stress``),
``all_answered_in_deadline``, ``same_answer_everywhere`` (one ETag per home across backends
at the end), ``no_leaked_processes`` (every backend and its workers gone after the run).
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil

from probe.tools.emulator import Emulator
from probe.tools.stress import DEADLINE_GRACE_S, STRESS_PROVIDER, LatencyHistogram, balance_for, identify, token_for

#: ``probe serve``'s default cache TTL: the unit the request count is reported in
CACHE_TTL_S = 45.0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cluster_stress(*, backends: int, redis_url: str, homes: int, concurrency: int, duration_s: float,
                       timeout_s: float = 10.0, redis_prefix: str | None = None) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="quota-probe-cluster-stress-"))
    prefix = redis_prefix or f"quota-probe-stress-{os.getpid()}-{int(time.time())}:"
    latencies = LatencyHistogram()
    violations: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    lock = threading.Lock()
    procs: list[subprocess.Popen] = []
    descendants: list[psutil.Process] = []
    try:
        with Emulator() as emulator:
            specs = []
            for index in range(homes):
                home = root / f"home{index}"
                home.mkdir()
                token = token_for(index, 0, 0)
                emulator.script(token, {"is_available": True, "balance_infos": [{
                    "currency": "USD", "total_balance": balance_for(index, 0), "granted_balance": "0",
                    "topped_up_balance": "0"}]})
                (home / ".env").write_text(f"DEEPSEEK_API_KEY={token}\n")
                specs += ["--home", f"h{index}={home}"]
            env = {**os.environ, **emulator.env(), "PROBE_TOKEN": "stress-" + os.urandom(8).hex()}
            urls = []
            for _ in range(backends):
                port = _free_port()
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "probe.cli", "serve", "--port", str(port), *specs, "--redis", redis_url,
                     "--redis-prefix", prefix, "--refresh-s", "0", "--no-history"],
                    env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
                urls.append(f"http://127.0.0.1:{port}")
            for proc in procs:
                line = proc.stdout.readline()
                if "quota-probe backend on" not in line:
                    raise RuntimeError("a backend did not start (is the Redis URL right?)")
            emulator.clear()
            started = time.monotonic()
            end = started + duration_s

            def caller(seed: int) -> None:
                rng = random.Random(seed)
                with httpx.Client(timeout=timeout_s + DEADLINE_GRACE_S) as client:
                    while time.monotonic() < end:
                        index, url = rng.randrange(homes), rng.choice(urls)
                        begin = time.monotonic()
                        try:
                            response = client.get(f"{url}/api/quota", params={"home": f"h{index}",
                                                                             "provider": STRESS_PROVIDER})
                            body = response.json()
                        except (httpx.HTTPError, ValueError):
                            with lock:
                                codes["http_error"] += 1
                            continue
                        elapsed = time.monotonic() - begin
                        identity = identify(tuple(body.get("details") or ()))
                        with lock:
                            latencies.add(elapsed * 1000)
                            codes[(body.get("error") or {}).get("code") or "ok"] += 1
                            if elapsed > timeout_s + DEADLINE_GRACE_S:
                                violations["all_answered_in_deadline"] += 1
                            if identity is not None and identity[0] != index:
                                violations["no_cross_home"] += 1

            threads = [threading.Thread(target=caller, args=(i,)) for i in range(concurrency)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            run_s = time.monotonic() - started
            requests = emulator.count(path="/user/balance")
            etags_differ = 0
            with httpx.Client(timeout=timeout_s) as client:
                for index in range(homes):
                    tags = {client.get(f"{url}/api/quota", params={"home": f"h{index}", "provider": STRESS_PROVIDER})
                            .headers.get("etag") for url in urls}
                    etags_differ += len(tags) != 1
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    descendants += psutil.Process(proc.pid).children(recursive=True)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        shutil.rmtree(root, ignore_errors=True)
    _, alive = psutil.wait_procs(descendants, timeout=5)
    ttls = max(1, math.ceil(run_s / CACHE_TTL_S))
    invariants = {"no_cross_home": violations["no_cross_home"] == 0,
                  "all_answered_in_deadline": violations["all_answered_in_deadline"] == 0,
                  "same_answer_everywhere": etags_differ == 0,
                  "no_leaked_processes": not alive and all(p.returncode is not None for p in procs)}
    total = sum(codes.values())
    return {
        "ok": all(invariants.values()),
        "backends": backends, "homes": homes, "concurrency": concurrency,
        "requests": total, "duration_s": round(run_s, 3),
        "throughput_rps": round(total / run_s, 1) if run_s else 0.0,
        "latency_ms": {"p50": round(latencies.percentile(50), 3), "p99": round(latencies.percentile(99), 3),
                       "max": round(latencies.max_ms, 3)},
        "answers": dict(codes),
        "provider_requests": requests,
        "provider_requests_per_home_per_ttl": round(requests / (homes * ttls), 3),
        "cache_ttl_s": CACHE_TTL_S,
        "invariants": invariants,
    }
