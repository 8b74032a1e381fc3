"""Cluster mode (SPEC §15) against a real redis-server: several ProbeServices (backends)
sharing one Redis -- one provider request per TTL, shared back-off, rotation broadcast,
outages, and nothing secret or path-like stored."""
from __future__ import annotations

import logging
import threading

import pytest

from probe import ProbeConfig, ProbeService
from support import RedisServer, live_workers, run_cli, run_threads, wait_until, worker_pids

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def backends(emulator, redis_server, request):
    """``backends(n, homes={"id": path}, prefix=...)`` → n services on one Redis."""
    made = []
    prefix = f"qp-test-{request.node.name[:40]}:"
    redis_server.client().flushall()

    def make(n: int, homes: dict, **overrides):
        for _ in range(n):
            config = ProbeConfig(provider_urls=emulator.provider_urls(), redis_url=redis_server.url,
                                 redis_prefix=prefix, home_ids={k: str(v) for k, v in homes.items()}, **overrides)
            made.append(ProbeService(config))
        return made[-n:]

    yield make
    for service in made:
        service.close()


def test_three_backends_make_one_provider_request_per_ttl(emulator, make_home, backends):
    token = "sk-cluster-one-slow300-"
    home = make_home("cluster-one", deepseek=token)
    services = backends(3, {"alice": home})
    barrier = threading.Barrier(30)

    def poll(i: int):
        barrier.wait()
        return services[i % 3].fetch("deepseek", home=home)

    threads, results = [], []
    for i in range(30):
        thread = threading.Thread(target=lambda i=i: results.append(poll(i)))
        threads.append(thread)
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.error is None and r.available for r in results), [r.error for r in results]
    assert emulator.count(token=token) == 1
    assert {r.home for r in results} == {str(home.resolve())}


def test_same_id_on_two_paths_is_one_account(emulator, make_home, backends):
    """Two hosts, two directories holding the same credential under one id."""
    token = "sk-cluster-two-paths"
    here, there = make_home("cluster-here", deepseek=token), make_home("cluster-there", deepseek=token)
    a, = backends(1, {"alice": here})
    b, = backends(1, {"alice": there})
    first = a.fetch("deepseek", home=here)
    second = b.fetch("deepseek", home=there)
    assert first.error is None and second.probe.path == "cache"
    assert second.home == str(there.resolve()) and second.details == first.details
    assert emulator.count(token=token) == 1


def test_a_429_on_one_backend_stops_every_backend(emulator, make_home, backends):
    token = "sk-or-v1-cluster-429"
    emulator.script(token, {"error": "slow down"}, status=429, headers={"Retry-After": "30"})
    home = make_home("cluster-429", openrouter=token)
    a, b, c = backends(3, {"alice": home})
    assert a.fetch("openrouter", home=home).error.code == "rate_limited"
    for service in (b, c, a):
        snap = service.fetch("openrouter", home=home, refresh=True)
        assert snap.error is not None and snap.error.code == "rate_limited"
    assert emulator.count(token=token, path="/api/v1/credits") == 1


def test_a_429_of_one_pooled_account_holds_off_no_backend_from_the_others(emulator, make_home, backends):
    """Accounts (SPEC §18) in cluster mode: one numbered key's 429 is that account's; the
    other backends still ask the provider for the account that answers."""
    limited, good = "sk-or-v1-cluster-acct-429", "sk-or-v1-cluster-acct-ok"
    emulator.script(limited, {"error": "slow down"}, status=429, headers={"Retry-After": "30"})
    home = make_home("cluster-acct-429")
    (home / ".env").write_text(f"OPENROUTER_API_KEY={limited}\nOPENROUTER_API_KEY_2={good}\n")
    a, b = backends(2, {"alice": home})
    first = a.fetch("openrouter", home=home)
    assert first.available and [x.status for x in first.accounts] == ["unavailable", "available"]
    second = b.fetch("openrouter", home=home, refresh=True)
    assert second.available and second.error is None
    assert emulator.count(token=good, path="/api/v1/credits") == 2


def test_rotation_on_one_backend_reaches_the_others(emulator, make_home, backends):
    """After invalidate() returns on backend 1, backends 2 and 3 never serve the old
    reading, and close that home's workers within 1 s; other homes keep theirs."""
    home = make_home("cluster-rot", deepseek="sk-cluster-rot")
    other = make_home("cluster-other", deepseek="sk-cluster-other")
    services = backends(3, {"alice": home, "bob": other})
    for service in services:
        assert service.fetch("deepseek", home=home, refresh=True).error is None
        assert service.fetch("deepseek", home=other, refresh=True).error is None
    before = emulator.count(token="sk-cluster-rot")
    others_pids = [worker_pids(s, other) for s in services[1:]]
    rotated_pids = [worker_pids(s, home) for s in services[1:]]
    assert all(rotated_pids) and all(others_pids)
    services[0].invalidate(home=home)
    for service in services[1:]:
        snap = service.fetch("deepseek", home=home)       # not refresh: the cache must not answer
        assert snap.probe.path != "cache" or emulator.count(token="sk-cluster-rot") > before
    assert wait_until(lambda: all(not (pids & {p.pid for p in live_workers()}) for pids in rotated_pids), 1.0)
    assert [worker_pids(s, other) for s in services[1:]] == others_pids


def test_rotation_broadcast_closes_idle_workers_within_a_second(emulator, make_home, backends):
    home = make_home("cluster-bcast", deepseek="sk-cluster-bcast")
    a, b = backends(2, {"alice": home})
    a.fetch("deepseek", home=home, refresh=True)
    b.fetch("deepseek", home=home, refresh=True)
    pids = worker_pids(b, home)
    assert pids
    a.invalidate(home=home)
    assert wait_until(lambda: not (pids & {p.pid for p in live_workers()}), 1.0)


def test_nothing_secret_or_path_like_is_stored_and_every_key_expires(emulator, make_home, backends, redis_server):
    token = "sk-cluster-secret-token"
    home = make_home("cluster-secret", deepseek=token)
    a, b = backends(2, {"alice": home})
    a.fetch("deepseek", home=home)
    a.invalidate(home=home)
    b.fetch("deepseek", home=home)
    client = redis_server.client()
    keys = list(client.scan_iter("*"))
    assert keys
    for key in keys:
        assert client.ttl(key) > 0, key
        kind = client.type(key).decode()
        dump = repr(key) + repr(client.get(key) if kind == "string" else client.zrange(key, 0, -1))
        assert token not in dump and str(home) not in dump and "/tmp" not in dump, dump[:200]
    assert a.stats()["cluster"]["connected"] and a.stats()["cluster"]["peers"] >= 2


def test_redis_outage_and_return(emulator, make_home, redis_server, tmp_path, caplog):
    """Redis SIGKILLed: backends go on alone within their deadlines with one warning;
    sharing is back within 10 s of Redis returning."""
    with RedisServer(tmp_path) as server:
        home = make_home("cluster-outage", deepseek="sk-cluster-outage")
        configs = [ProbeConfig(provider_urls=emulator.provider_urls(), redis_url=server.url,
                               home_ids={"alice": str(home)}, cache_ttl_s=60) for _ in range(2)]
        with ProbeService(configs[0]) as a, ProbeService(configs[1]) as b:
            assert a.fetch("deepseek", home=home).error is None
            server.kill()
            with caplog.at_level(logging.WARNING, logger="quota_probe.cluster"):
                results = run_threads(10, lambda: b.fetch("deepseek", home=home, refresh=True, timeout=3))
            assert all(r.error is None for r in results), [r.error for r in results]
            warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
            assert 1 <= len(warnings) <= 2     # one per backend, not one per call
            server.start()
            a.fetch("deepseek", home=home, refresh=True)
            assert wait_until(lambda: a.stats()["cluster"]["connected"] and b.stats()["cluster"]["connected"], 10)
            before = emulator.count(token="sk-cluster-outage")
            assert a.fetch("deepseek", home=home, refresh=True).error is None
            assert b.fetch("deepseek", home=home).probe.path == "cache"
            assert emulator.count(token="sk-cluster-outage") == before + 1


def test_peers_count_every_live_backend_right_after_redis_restarts(emulator, make_home, tmp_path):
    """A restarted Redis has lost every backend's heartbeat. Each backend counts itself and
    re-announces the moment it reconnects, so ``peers`` is right within 2 s of the
    reconnect -- not after the next heartbeat period (10 s)."""
    import time

    with RedisServer(tmp_path) as server:
        home = make_home("cluster-peers", deepseek="sk-cluster-peers")
        config = ProbeConfig(provider_urls=emulator.provider_urls(), redis_url=server.url,
                             home_ids={"alice": str(home)})
        with ProbeService(config) as a, ProbeService(config) as b, ProbeService(config) as c:
            backends = (a, b, c)

            def clusters() -> list[dict]:
                return [backend.stats()["cluster"] for backend in backends]

            assert wait_until(lambda: [s["peers"] for s in clusters()] == [3, 3, 3])
            server.kill()
            assert wait_until(lambda: not any(s["connected"] for s in clusters())), clusters()
            assert [s["peers"] for s in clusters()] == [1, 1, 1]    # alone, but itself
            server.start()
            assert wait_until(lambda: all(s["connected"] for s in clusters()), 10), clusters()
            reconnected = time.monotonic()
            assert wait_until(lambda: [s["peers"] for s in clusters()] == [3, 3, 3],
                              reconnected + 2 - time.monotonic()), clusters()


def test_redis_sigkilled_under_load(emulator, make_home, tmp_path):
    """Callers polling two backends while Redis is SIGKILLed and brought back: none is
    answered after its deadline and none gets an error Redis caused."""
    import time

    with RedisServer(tmp_path) as server:
        homes = [make_home(f"cluster-load-{i}", deepseek=f"sk-cluster-load-{i}") for i in range(4)]
        config = ProbeConfig(provider_urls=emulator.provider_urls(), redis_url=server.url, cache_ttl_s=0.2,
                             home_ids={f"h{i}": str(h) for i, h in enumerate(homes)})
        stop = threading.Event()
        answers, late = [], []
        lock = threading.Lock()
        with ProbeService(config) as a, ProbeService(config) as b:
            def poll(n: int) -> None:
                service, i = (a, b)[n % 2], n
                while not stop.is_set():
                    begin = time.monotonic()
                    snap = service.fetch("deepseek", home=homes[i % 4], timeout=2.0)
                    with lock:
                        answers.append(snap)
                        if time.monotonic() - begin > 2.0 + 0.5:
                            late.append(snap)
                    i += 1

            threads = [threading.Thread(target=poll, args=(n,)) for n in range(6)]
            for thread in threads:
                thread.start()
            assert wait_until(lambda: len(answers) > 50)
            server.kill()
            count = len(answers)
            assert wait_until(lambda: len(answers) > count + 50)     # going on alone
            server.start()
            assert wait_until(lambda: a.stats()["cluster"]["connected"] and b.stats()["cluster"]["connected"], 10)
            count = len(answers)
            assert wait_until(lambda: len(answers) > count + 50)
            stop.set()
            for thread in threads:
                thread.join()
    assert not late
    assert [s.error for s in answers if s.error is not None] == []


def test_a_slow_redis_never_holds_a_caller_past_its_deadline(emulator, make_home, tmp_path):
    """Redis frozen for 3 s (``DEBUG SLEEP``): callers with a 1.5 s deadline are answered in
    time, from their own backend, because every Redis call gives up after 0.25 s."""
    import time

    from support import redis_pings

    with RedisServer(tmp_path) as server:
        home = make_home("cluster-slow", deepseek="sk-cluster-slow")
        config = ProbeConfig(provider_urls=emulator.provider_urls(), redis_url=server.url,
                             home_ids={"alice": str(home)})
        with ProbeService(config) as service:
            assert service.fetch("deepseek", home=home).error is None
            sleeper = threading.Thread(target=lambda: server.client().execute_command("DEBUG", "SLEEP", "3"))
            sleeper.start()
            probe_client = server.client(0.1)
            assert wait_until(lambda: not redis_pings(probe_client))      # the server is frozen now
            probe_client.close()
            results, spent = [], []

            def fetch() -> None:
                begin = time.monotonic()
                results.append(service.fetch("deepseek", home=home, refresh=True, timeout=1.5))
                spent.append(time.monotonic() - begin)

            run_threads(4, fetch)
            sleeper.join()
    assert all(r.error is None for r in results), [r.error for r in results]
    assert max(spent) < 1.5 + 0.5


def test_a_wrong_password_is_a_clear_error_at_start(tmp_path, emulator):
    with RedisServer(tmp_path, password="right-pass") as server:
        wrong = server.url.replace("right-pass", "wrong-pass")
        with pytest.raises(ValueError, match="Redis refused the password"):
            ProbeService(ProbeConfig(redis_url=wrong))
        with pytest.raises(ValueError, match="needs a password"):
            ProbeService(ProbeConfig(redis_url=f"redis://127.0.0.1:{server.port}/0"))
        with ProbeService(ProbeConfig(redis_url=server.url)) as ok:
            assert ok.stats()["cluster"]["connected"]


def test_serve_processes_share_one_redis_and_rotate_from_a_machine_without_a_backend(
        emulator, make_home, redis_server, tmp_path):
    """Real ``probe serve`` processes: one provider request between three backends, the same
    body and ETag from each, ``probe rotate --redis`` reaching all of them, ``probe status
    --server`` showing the cluster, and a wrong password refused at start-up (exit 2)."""
    import os
    import subprocess
    import sys

    import httpx

    from support import free_port

    redis_server.client().flushall()
    token = "sk-cluster-serve-slow200-"
    homes = [make_home(f"cluster-serve-{i}", deepseek=token) for i in range(3)]   # three hosts' paths
    env = {**os.environ, **emulator.env(), "PROBE_TOKEN": "t" * 24}
    procs, urls = [], []
    try:
        for home in homes:
            port = free_port()
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "probe.cli", "serve", "--port", str(port), "--home", f"alice={home}",
                 "--redis", redis_server.url, "--refresh-s", "0", "--no-history"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            urls.append(f"http://127.0.0.1:{port}")
        for proc in procs:
            assert "quota-probe backend on" in proc.stdout.readline()
        answers = []
        lock = threading.Lock()

        def poll(url: str) -> None:
            response = httpx.get(f"{url}/api/quota", params={"home": "alice", "provider": "deepseek"}, timeout=30)
            with lock:
                answers.append(response)

        threads = [threading.Thread(target=poll, args=(urls[i % 3],)) for i in range(9)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert emulator.count(token=token) == 1
        assert len({r.headers["etag"] for r in answers}) == 1
        assert all(r.json()["home"] == "alice" and str(tmp_path) not in r.text for r in answers)

        rotated = run_cli("rotate", "--redis", redis_server.url, "--home", "alice")
        assert rotated.returncode == 0, rotated.stderr
        for url in urls:
            httpx.get(f"{url}/api/quota", params={"home": "alice", "provider": "deepseek"}, timeout=30)
        assert emulator.count(token=token) == 2          # re-read once after the rotation, by one backend

        status = run_cli("status", "--server", urls[0])
        assert "cluster: connected, 3 backend(s)" in status.stdout, status.stdout
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(20)
            proc.stdout.close()
            proc.stderr.close()
    with RedisServer(tmp_path, password="right") as auth:
        bad = run_cli("serve", "--port", str(free_port()), "--home", f"alice={homes[0]}", "--no-history",
                      "--redis", auth.url.replace("right", "wrong"))
        assert bad.returncode == 2 and "refused the password" in bad.stderr and "wrong" not in bad.stderr


def test_tls_and_a_password_work_through_the_url(emulator, make_home, tmp_path):
    """``rediss://:PASSWORD@host/0?ssl_ca_certs=...``: a Redis behind TLS (throw-away CA)
    that needs a password is shared like any other."""
    with RedisServer(tmp_path, password="s3cret", tls=True) as server:
        token = "sk-cluster-tls"
        home = make_home("cluster-tls", deepseek=token)
        config = ProbeConfig(provider_urls=emulator.provider_urls(), redis_url=server.url, home_ids={"alice": str(home)})
        with ProbeService(config) as a, ProbeService(config) as b:
            assert a.fetch("deepseek", home=home).error is None
            assert b.fetch("deepseek", home=home).probe.path == "cache"
            assert a.stats()["cluster"]["connected"]
        assert emulator.count(token=token) == 1


def test_stress_with_three_backends_on_one_redis(redis_server):
    import json

    result = run_cli("stress", "--backends", "3", "--redis", redis_server.url, "--homes", "4",
                     "--concurrency", "12", "--duration", "4", "--json", timeout_s=120)
    assert result.returncode == 0, result.stderr + result.stdout
    report = json.loads(result.stdout)
    assert report["ok"], report["invariants"]
    assert report["provider_requests"] == 4 and report["provider_requests_per_home_per_ttl"] == 1.0
    assert report["requests"] > 12 and report["answers"] == {"ok": report["requests"]}


def test_cluster_settings_cannot_change_under_a_running_service(emulator, make_home, backends):
    home = make_home("cluster-config", deepseek="sk-cluster-config")
    service, = backends(1, {"alice": home})
    with pytest.raises(ValueError, match="cannot change"):
        service.configure(service.config.replace(redis_prefix="other:"))
    service.configure(service.config.replace(cache_ttl_s=5))   # anything else still applies
    assert service.fetch("deepseek", home=home).error is None
