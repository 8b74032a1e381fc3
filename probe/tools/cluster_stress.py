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

Faults (the cluster soak, issue 26), each optional:

* ``rotate_every_s`` -- a random home's files get the next generation's token and one
  random backend is told (``POST /api/rotate``); ``no_stale_after_rotation``: an answer to
  a request that began after rotation g of its home returned never carries an older one;
* ``restart_redis_every_s`` -- Redis restarts (``restart_redis``, default: every client
  connection dropped, every key gone and the server frozen for half a second -- what a
  restart without persistence does to the backends; the soak test passes a real SIGKILL
  and start);
* ``garbage_s`` -- for that long (from a third of the run) random values are written into
  random keys under the prefix (strings, wrong types, with and without expiry) and random
  messages published on its channel;

and with any of them ``no_timeout_past_first_deadline_after_a_fault`` (a ``timeout``
answer only to a request begun within one deadline of a fault), ``no_http_errors`` and
``subscriber_alive_at_end`` (after the callers stop, a rotation broadcast from outside
reaches every backend within 2 s: each one's generation of that home goes up without a
fetch).
"""
from __future__ import annotations

import contextlib
import json
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

from probe.tools.emulator import Emulator
from probe.tools.stress import DEADLINE_GRACE_S, STRESS_PROVIDER, LatencyHistogram, identify, scripted_body, token_for

#: ``probe serve``'s default cache TTL: the unit the request count is reported in
CACHE_TTL_S = 45.0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: how often the garbage writer writes (one key or one message each time)
GARBAGE_EVERY_S = 0.01
#: the end-of-run checks are no deadline measurement: a loaded machine may take its time
CHECK_TIMEOUT_S = 60.0
#: how long a rotation broadcast may take to reach every backend (SPEC §15 says 1 s)
BROADCAST_WITHIN_S = 2.0


def _write_home(emulator: Emulator, home: Path, index: int, generation: int) -> None:
    """Script the emulator for (home, generation) and put its token in the home's .env
    (atomically: a backend reads the old file or the new one)."""
    token = token_for(index, generation, 0)
    emulator.script(token, scripted_body(STRESS_PROVIDER, index, generation))
    tmp = home / ".env.tmp"
    tmp.write_text(f"DEEPSEEK_API_KEY={token}\n")
    os.replace(tmp, home / ".env")


def _simulated_restart(redis_url: str) -> Callable[[], None]:
    """What a Redis restart without persistence does to the backends: every connection
    dropped, every key gone, the server away for a moment (frozen for 0.5 s here)."""
    def restart() -> None:
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        try:
            client.flushall()
            client.client_kill_filter(_type="pubsub")
            client.client_kill_filter(_type="normal")   # skips this connection
            client.execute_command("DEBUG", "SLEEP", "0.5")
        finally:
            client.close()
    return restart


def _garbage_value(rng: random.Random) -> bytes:
    choices = [
        lambda: rng.randbytes(rng.randrange(0, 40)),
        lambda: b"[" * rng.randrange(1, 5000) + b"]" * rng.randrange(0, 5000),
        lambda: rng.choice([b"NaN", b"Infinity", b"-1", b"1e999", b"null", b"{}", b"[]", b'"x"', b"9" * 30]),
        lambda: json.dumps({rng.choice(["gen", "until", "home", "snapshot", "written_at", "from"]):
                            rng.choice([None, 1, -1, "x", [1], {"a": 1}, 1e300]) for _ in range(3)}).encode(),
        lambda: b'{"until": Infinity, "gen": 0, "message": "x"}',
        lambda: b'{"gen": 0, "written_at": 1e300, "snapshot": {"provider": "deepseek", "home": "h", '
                b'"available": true, "windows": [{"label": "w", "used_percent": NaN}]}}',
        lambda: rng.choice([b'{"home": [1]}', b'{"home": {"a": 1}}', b'{"home": "h0", "from": 5}']),
    ]
    return rng.choice(choices)()


def _write_garbage(client: "redis.Redis", rng: random.Random, prefix: str, homes: int) -> None:
    """One random write: a value into one of the prefix's keys (maybe of the wrong type,
    maybe without an expiry), or a message on its channel."""
    home = f"h{rng.randrange(homes)}"
    key = prefix + rng.choice([f"home:{home}:gen", f"home:{home}:{STRESS_PROVIDER}:snap",
                               f"home:{home}:{STRESS_PROVIDER}:backoff", f"home:{home}:{STRESS_PROVIDER}:lock",
                               "peers"])
    kind = rng.randrange(6)
    if kind == 0:
        client.publish(prefix + "rotations", _garbage_value(rng))
    elif kind == 1:
        client.delete(key)
        client.hset(key, "garbage", _garbage_value(rng))
    elif kind == 2:
        client.set(key, _garbage_value(rng), px=rng.randrange(100, 5000))
    else:
        client.set(key, _garbage_value(rng))


def run_cluster_stress(*, backends: int, redis_url: str, homes: int, concurrency: int, duration_s: float,
                       timeout_s: float = 10.0, redis_prefix: str | None = None, rotate_every_s: float = 0.0,
                       restart_redis_every_s: float = 0.0, garbage_s: float = 0.0,
                       restart_redis: Callable[[], None] | None = None, seed: int = 0) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="quota-probe-cluster-stress-"))
    prefix = redis_prefix or f"quota-probe-stress-{os.getpid()}-{int(time.time())}:"
    latencies = LatencyHistogram()
    violations: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    lock = threading.Lock()
    procs: list[subprocess.Popen] = []
    descendants: list[psutil.Process] = []
    faults: list[float] = []                 # monotonic times of restarts and garbage writes
    generation = [0] * homes
    rotated_at: list[list[tuple[float, int]]] = [[(0.0, 0)] for _ in range(homes)]
    fault_counts: Counter[str] = Counter()
    late_timeouts: list[float] = []
    http_errors: Counter[str] = Counter()
    late_at: list[float] = []                # when (s into the run) requests answered late began
    restarts_at: list[list[float]] = []      # [down, back] (s into the run) of each Redis restart
    broadcast_heard = None
    faulty = rotate_every_s > 0 or restart_redis_every_s > 0 or garbage_s > 0
    try:
        with Emulator() as emulator:
            specs = []
            for index in range(homes):
                home = root / f"home{index}"
                home.mkdir()
                _write_home(emulator, home, index, 0)
                specs += ["--home", f"h{index}={home}"]
            token = "stress-" + os.urandom(8).hex()
            env = {**os.environ, **emulator.env(), "PROBE_TOKEN": token}
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
            if faulty:   # the soak measures faults, not three cold starts at once on a loaded machine
                with httpx.Client(timeout=CHECK_TIMEOUT_S) as client:
                    for url in urls:
                        for index in range(homes):
                            client.get(f"{url}/api/quota", params={"home": f"h{index}", "provider": STRESS_PROVIDER})
            emulator.clear()
            started = time.monotonic()
            end = started + duration_s
            stop = threading.Event()

            def floor(index: int, begin: float) -> int:
                with lock:
                    return max(g for t, g in rotated_at[index] if t <= begin)

            def last_fault(begin: float) -> float | None:
                with lock:
                    before = [t for t in faults if t <= begin]
                return before[-1] if before else None

            def caller(seed_: int) -> None:
                rng = random.Random(seed_)
                with httpx.Client(timeout=timeout_s + DEADLINE_GRACE_S) as client:
                    while time.monotonic() < end:
                        index, url = rng.randrange(homes), rng.choice(urls)
                        begin = time.monotonic()
                        low = floor(index, begin)
                        try:
                            response = client.get(f"{url}/api/quota", params={"home": f"h{index}",
                                                                             "provider": STRESS_PROVIDER})
                            body = response.json()
                            if response.status_code != 200 or not isinstance(body, dict):
                                raise ValueError(f"HTTP {response.status_code}")
                        except httpx.TimeoutException:   # no answer by the deadline (+ grace)
                            with lock:
                                codes["no_answer_in_deadline"] += 1
                                violations["all_answered_in_deadline"] += 1
                                late_at.append(round(begin - started, 3))
                            continue
                        except (httpx.HTTPError, ValueError) as exc:
                            with lock:
                                codes["http_error"] += 1
                                http_errors[f"{type(exc).__name__}: {exc}"[:120]] += 1
                            continue
                        elapsed = time.monotonic() - begin
                        identity = identify(tuple(body.get("details") or ()))
                        code = (body.get("error") or {}).get("code") or "ok"
                        fault = last_fault(begin) if code == "timeout" else None
                        with lock:
                            latencies.add(elapsed * 1000)
                            codes[code] += 1
                            if elapsed > timeout_s + DEADLINE_GRACE_S:
                                violations["all_answered_in_deadline"] += 1
                                late_at.append(round(begin - started, 3))
                            if identity is not None and identity[0] != index:
                                violations["no_cross_home"] += 1
                            if identity is not None and identity[1] < low:
                                violations["no_stale_after_rotation"] += 1
                            if code == "timeout" and (fault is None or begin - fault > timeout_s):
                                violations["no_timeout_past_first_deadline_after_a_fault"] += 1
                                late_timeouts.append(round(begin - started, 3))

            def rotator() -> None:
                rng = random.Random(seed + 1)
                with httpx.Client(timeout=CHECK_TIMEOUT_S) as client:
                    while not stop.wait(rotate_every_s):
                        index = rng.randrange(homes)
                        with lock:
                            generation[index] += 1
                            new = generation[index]
                        _write_home(emulator, root / f"home{index}", index, new)
                        try:
                            client.post(f"{rng.choice(urls)}/api/rotate", json={"home": f"h{index}"},
                                        headers={"Authorization": f"Bearer {token}"}).raise_for_status()
                        except httpx.HTTPError:
                            with lock:   # not a rotation that returned: no floor for later answers
                                codes["http_error"] += 1
                                http_errors["rotate"] += 1
                            continue
                        with lock:
                            rotated_at[index].append((time.monotonic(), new))
                            fault_counts["rotations"] += 1

            def restarter() -> None:
                restart = restart_redis or _simulated_restart(redis_url)
                while not stop.wait(restart_redis_every_s):
                    with lock:
                        faults.append(time.monotonic())
                        down = round(faults[-1] - started, 3)
                    try:
                        restart()
                    except Exception:   # noqa: BLE001 -- reported, not a harness crash
                        with lock:
                            fault_counts["restart_failed"] += 1
                    with lock:
                        faults.append(time.monotonic())   # back: a deadline from here is the bound
                        fault_counts["redis_restarts"] += 1
                        restarts_at.append([down, round(faults[-1] - started, 3)])

            def garbage_writer() -> None:
                rng = random.Random(seed + 2)
                client = redis.Redis.from_url(redis_url, socket_timeout=1)
                garbage_end = started + duration_s / 3 + garbage_s
                try:
                    if stop.wait(duration_s / 3):
                        return
                    while time.monotonic() < garbage_end and not stop.wait(GARBAGE_EVERY_S):
                        with lock:
                            faults.append(time.monotonic())
                        with contextlib.suppress(redis.RedisError):
                            _write_garbage(client, rng, prefix, homes)
                            with lock:
                                fault_counts["garbage_writes"] += 1
                finally:
                    client.close()

            threads = [threading.Thread(target=caller, args=(seed * 1000 + i,)) for i in range(concurrency)]
            helpers = []
            if rotate_every_s > 0:
                helpers.append(threading.Thread(target=rotator, name="stress-rotator"))
            if restart_redis_every_s > 0:
                helpers.append(threading.Thread(target=restarter, name="stress-redis-restarter"))
            if garbage_s > 0:
                helpers.append(threading.Thread(target=garbage_writer, name="stress-garbage"))
            for thread in threads + helpers:
                thread.start()
            for thread in threads:
                thread.join()
            stop.set()
            for thread in helpers:
                thread.join()
            run_s = time.monotonic() - started
            if faulty:
                broadcast_heard = _broadcast_heard(urls, redis_url, prefix, homes)
            requests = emulator.count(path="/user/balance")
            etags_differ = 0
            with httpx.Client(timeout=CHECK_TIMEOUT_S) as client:
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
    if faulty:
        invariants.update({
            "no_stale_after_rotation": violations["no_stale_after_rotation"] == 0,
            "no_timeout_past_first_deadline_after_a_fault":
                violations["no_timeout_past_first_deadline_after_a_fault"] == 0,
            "no_http_errors": codes["http_error"] == 0,
            "subscriber_alive_at_end": bool(broadcast_heard)})
    total = sum(codes.values())
    extra = {} if not faulty else {
        "faults": dict(fault_counts), "garbage_s": garbage_s, "rotate_every_s": rotate_every_s,
        "restart_redis_every_s": restart_redis_every_s, "late_timeouts_at_s": late_timeouts[:20], "late_answers_at_s": late_at[:20],
        "redis_restarts_at_s": restarts_at,
        "http_errors": dict(http_errors.most_common(5)),
        "stale_answers": violations["no_stale_after_rotation"]}
    return {
        **extra,
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


def _broadcast_heard(urls: list[str], redis_url: str, prefix: str, homes: int) -> bool:
    """A rotation of every home announced from outside every backend (as ``probe rotate
    --redis`` does) raises each home's generation on each backend that serves it within
    BROADCAST_WITHIN_S, without a fetch: each one's subscriber is alive and hears it. (It
    also leaves every backend with nothing cached, so the ETag check that follows asks
    whether sharing works again after the faults, not whether an outage's answers aged.)"""
    from probe.shared.cluster import RedisCluster

    names = [f"h{index}" for index in range(homes)]

    def generations() -> list[dict[str, int]]:
        seen = []
        with httpx.Client(timeout=CHECK_TIMEOUT_S) as client:
            for url in urls:
                state = client.get(f"{url}/api/pool").json().get("homes", {})
                seen.append({name: state[name]["generation"] for name in names if name in state})
        return seen

    client = redis.Redis.from_url(redis_url, socket_timeout=1)
    try:   # every backend subscribed again after the last fault (a restart drops subscriptions)
        give_up = time.monotonic() + 10
        while dict(client.pubsub_numsub(prefix + "rotations")).get((prefix + "rotations").encode(), 0) < len(urls):
            if time.monotonic() > give_up:
                return False
            time.sleep(0.05)   # another process's state: nothing to wait on
    finally:
        client.close()
    before = generations()
    cluster = RedisCluster(redis_url, prefix=prefix)
    try:
        if any(cluster.rotate(name) is None for name in names):
            return False
    finally:
        cluster.close()
    give_up = time.monotonic() + BROADCAST_WITHIN_S
    while time.monotonic() < give_up:
        now = generations()
        if all(was and all(now[i].get(name, -1) > gen for name, gen in was.items()) for i, was in enumerate(before)):
            return True
        time.sleep(0.05)   # polling another process's state: nothing to wait on here
    return False
