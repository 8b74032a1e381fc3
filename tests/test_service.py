"""ProbeService end to end: real worker processes probing the real emulator over HTTP."""
from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import psutil
import pytest

from probe.snapshot import PATHS
from support import SNAPSHOT_KEYS, is_template, live_children, live_workers, run_threads, wait_until, worker_pids

pytestmark = pytest.mark.timeout(60)


def test_fetch_returns_spec_shape_then_stays_warm(make_service, make_home, emulator):
    home = make_home("a", anthropic="sk-ant-oat01-shape")
    service = make_service()
    first = service.fetch("anthropic", home=home)
    assert list(first.to_dict()) == SNAPSHOT_KEYS
    assert first.available and first.error is None and first.windows
    assert first.probe.path == "slot_start"
    second = service.fetch("anthropic", home=home, refresh=True)
    assert second.probe.path == "warm" and second.probe.worker_pid == first.probe.worker_pid
    third = service.fetch("anthropic", home=home)
    assert third.probe.path == "cache"
    assert emulator.count(token="sk-ant-oat01-shape") == 2


def test_home_identity_shares_one_pool(make_service, make_home, tmp_path):
    home = make_home("ident", deepseek="sk-ident")
    (tmp_path / "alias").symlink_to(home)
    service = make_service()
    first = service.fetch("deepseek", home=home)
    again = service.fetch("deepseek", home=f"{tmp_path}/alias/", refresh=True)
    assert again.probe.path == "warm" and again.probe.worker_pid == first.probe.worker_pid
    assert list(service.stats()["homes"]) == [str(home.resolve())]


def test_pool_size_zero_means_every_probe_is_cold(make_service, make_home):
    home = make_home("cold", openrouter="sk-or-cold")
    service = make_service(pool_size=0)
    paths = [service.fetch("openrouter", home=home, refresh=True).probe.path for _ in range(2)]
    assert paths == ["cold", "cold"]
    assert service.stats()["homes"] == {}


def test_missing_home_is_a_typed_error(make_service, tmp_path):
    snap = make_service().fetch("anthropic", home=tmp_path / "nope")
    assert snap.error.code == "home_not_found" and snap.home == str((tmp_path / "nope").resolve())


def test_worker_names_its_home_and_no_process_carries_parent_credentials(make_service, make_home, emulator,
                                                                         monkeypatch, spawn_method):
    """An operator can tell a worker's home from outside (SPEC §5: an exec-started worker's
    environment, a forked worker's process title), and neither a worker nor the template
    process has the parent's provider keys anywhere in its environment."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-oat01-parent-secret-value")
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-parent-secret-value")
    home_a = make_home("env-a", openrouter="sk-or-home-a")
    home_b = make_home("env-b")
    service = make_service()
    snap_a = service.fetch("openrouter", home=home_a)
    worker = psutil.Process(snap_a.probe.worker_pid)
    if spawn_method == "exec":
        assert worker.environ()["HERMES_HOME"] == str(home_a.resolve())
    else:
        assert " ".join(worker.cmdline()).rstrip() == f"quota-probe worker {home_a.resolve()}"
        assert is_template(worker.parent()) and worker.parent().ppid() == os.getpid()
    processes = live_children()
    assert (spawn_method == "fork") == any(is_template(p) for p in processes)
    for process in processes:
        raw = Path(f"/proc/{process.pid}/environ").read_bytes()
        assert b"parent-secret-value" not in raw and b"ANTHROPIC_API_KEY" not in raw, process
    snap_b = service.fetch("anthropic", home=home_b)
    assert snap_b.error.code == "no_credentials"
    snap_b = service.fetch("openrouter", home=home_b)
    assert snap_b.error.code == "no_credentials"
    tokens = {r.token for r in emulator.requests()}
    assert "sk-ant-oat01-parent-secret-value" not in tokens and "sk-or-parent-secret-value" not in tokens


def test_hung_provider_times_out_inside_the_deadline(make_service, make_home):
    home = make_home("hang", anthropic="sk-ant-oat01-hang-x")
    service = make_service()
    snap = service.fetch("anthropic", home=home, timeout=1.0)
    assert snap.error.code == "timeout"
    assert snap.probe.latency_ms < 2500  # deadline 1 s, margin for a loaded 2-core machine


def test_unresponsive_worker_is_killed_at_the_deadline_and_replaced(make_service, make_home):
    """A worker that stops answering altogether (SIGSTOP) is killed with its tree when
    the caller's deadline passes; the next fetch gets a fresh process."""
    home = make_home("stop", deepseek="sk-stop")
    service = make_service(pool_size=1)
    pid = service.fetch("deepseek", home=home).probe.worker_pid
    os.kill(pid, signal.SIGSTOP)
    snap = service.fetch("deepseek", home=home, refresh=True, timeout=0.5)
    assert snap.error.code == "timeout"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    healed = service.fetch("deepseek", home=home, refresh=True)
    assert healed.available and healed.probe.worker_pid != pid
    assert service.stats()["kills"] >= 1


def test_worker_crash_mid_request_is_typed_and_pool_heals(make_service, make_home, emulator):
    """The caller whose worker is SIGKILLed gets ``worker_crashed``; callers of another
    home probing at the same moment get their answers from their own, untouched worker."""
    home = make_home("crash", deepseek="sk-crash-slow3000-")
    other = make_home("crash-warm", deepseek="sk-warm-slow300-")
    service = make_service(pool_size=1)
    other_pid = service.fetch("deepseek", home=other).probe.worker_pid
    result, others = [], []
    thread = threading.Thread(target=lambda: result.append(service.fetch("deepseek", home=home)))
    thread.start()
    assert wait_until(lambda: emulator.count(token="sk-crash-slow3000-") == 1)
    neighbour = threading.Thread(target=lambda: others.extend(
        service.fetch("deepseek", home=other, refresh=True) for _ in range(3)))
    neighbour.start()
    assert emulator.wait_for(2, token="sk-warm-slow300-")   # a neighbour probe is in flight
    pid = next(iter(worker_pids(service, home)))
    os.kill(pid, signal.SIGKILL)
    thread.join(10)
    neighbour.join(30)
    assert result[0].error.code == "worker_crashed"
    assert "sk-crash" not in json.dumps(result[0].to_dict())
    assert [(s.available, s.probe.path, s.probe.worker_pid) for s in others] == [(True, "warm", other_pid)] * 3
    state = service.stats()["homes"][str(home.resolve())]
    assert state["alive"] == 0 and state["slots"] == 1


def test_identical_concurrent_fetches_share_one_probe(make_service, make_home, emulator):
    home = make_home("co", openrouter="sk-or-co-slow300-")
    service = make_service(pool_size=2)
    results = run_threads(6, lambda: service.fetch("openrouter", home=home, refresh=True))
    paths = sorted(r.probe.path for r in results)
    assert paths.count("coalesced") >= 4, paths
    assert all(r.available for r in results)
    # one probe = one /credits plus one /key request
    assert emulator.count(path="/api/v1/credits", token="sk-or-co-slow300-") == 6 - paths.count("coalesced")


def test_coalescing_can_be_switched_off(make_service, make_home, emulator):
    home = make_home("noco", deepseek="sk-noco-slow200-")
    service = make_service(pool_size=4, coalesce=False)
    results = run_threads(3, lambda: service.fetch("deepseek", home=home, refresh=True))
    assert "coalesced" not in {r.probe.path for r in results}
    assert emulator.count(token="sk-noco-slow200-") == 3


def test_cold_fallback_is_bounded(make_service, make_home):
    """A burst far larger than the pool never forks more than pool_size + max_cold_spawns
    processes; callers past the bound get ``saturated`` within their deadline."""
    home = make_home("burst", deepseek="sk-burst-slow400-")
    service = make_service(pool_size=1, claim_wait_s=0, max_cold_spawns=2, coalesce=False)
    service.fetch("deepseek", home=make_home("burst-warm", deepseek="sk-w"))
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], len(live_workers()))

    sampler = threading.Thread(target=sample)
    sampler.start()
    results = run_threads(12, lambda: service.fetch("deepseek", home=home, refresh=True, timeout=0.6))
    stop.set()
    sampler.join()
    codes = [r.error.code if r.error else "ok" for r in results]
    assert len(results) == 12
    assert peak[0] <= 2 + 1 + 1, f"peak children {peak[0]}"  # this home's slot + 2 cold + the other home's worker
    assert "saturated" in codes
    assert wait_until(lambda: service.stats()["cold_running"] == 0)   # exits are awaited in the background


def test_global_budget_closes_least_recently_used_idle_worker(make_service, make_home):
    homes = [make_home(f"budget{i}", deepseek=f"sk-budget-{i}") for i in range(3)]
    service = make_service(pool_size=1, max_total_workers=2)
    pids = [service.fetch("deepseek", home=h).probe.worker_pid for h in homes]
    stats = service.stats()
    alive = {home: state["alive"] for home, state in stats["homes"].items()}
    assert sum(alive.values()) == 2
    assert alive[str(homes[0].resolve())] == 0, "the least recently used home lost its worker"
    assert not psutil.pid_exists(pids[0]) or psutil.Process(pids[0]).status() == psutil.STATUS_ZOMBIE


def test_global_budget_counts_a_home_again_after_its_pool_emptied(make_service, make_home):
    """The budget counts only pools that may hold a worker (``PoolRegistry._active``) and
    forgets a pool a count finds empty; a home whose workers were all closed and that
    starts one again must be counted again, or a third worker would start under a cap of 2."""
    a, b, c, d = (make_home(f"budget-again-{n}", deepseek=f"sk-budget-again-{n}") for n in "abcd")
    service = make_service(pool_size=1, max_total_workers=2)

    def alive() -> dict[str, int]:
        return {home: state["alive"] for home, state in service.stats()["homes"].items() if state["alive"]}

    service.fetch("deepseek", home=a)
    service.fetch("deepseek", home=b)
    service.invalidate(home=a)                  # a's pool is empty now
    service.fetch("deepseek", home=c)           # a count finds a empty (forgotten); b + c run
    assert set(alive()) == {str(b.resolve()), str(c.resolve())}
    service.fetch("deepseek", home=a)           # evicts b (least recently used); a runs again
    assert set(alive()) == {str(a.resolve()), str(c.resolve())}
    service.fetch("deepseek", home=d)           # a must be counted: c goes, never a third worker
    assert alive() == {str(a.resolve()): 1, str(d.resolve()): 1}
    assert sum(alive().values()) == len(live_workers()) == 2


def test_idle_workers_are_reaped_without_any_fetch(make_service, make_home):
    home = make_home("idle", deepseek="sk-idle")
    service = make_service(idle_s=0.2)
    service.fetch("deepseek", home=home)
    assert wait_until(lambda: service.stats()["homes"][str(home.resolve())]["alive"] == 0)


def test_worker_recycled_after_max_requests(make_service, make_home):
    home = make_home("recycle", deepseek="sk-recycle")
    service = make_service(pool_size=1, max_requests_per_worker=2)
    pids = [service.fetch("deepseek", home=home, refresh=True).probe.worker_pid for _ in range(3)]
    assert pids[0] == pids[1] != pids[2]
    assert service.stats()["recycles"] == 1


def test_prewarm_starts_slots_in_the_background(make_service, make_home):
    home = make_home("prewarm", deepseek="sk-prewarm")
    service = make_service(pool_size=2, prewarm=True)
    service.fetch("deepseek", home=home)
    assert wait_until(lambda: service.stats()["homes"][str(home.resolve())]["alive"] == 2)
    paths = {service.fetch("deepseek", home=home, refresh=True).probe.path for _ in range(3)}
    assert paths == {"warm"}


def test_stats_shape(make_service, make_home):
    home = make_home("stats", deepseek="sk-stats")
    service = make_service()
    service.fetch("deepseek", home=home)
    stats = json.loads(json.dumps(service.stats()))
    assert set(stats["fetches"]) == set(PATHS)
    assert {"errors", "spawns", "kills", "recycles", "cold_running", "homes"} <= set(stats)
    state = stats["homes"][str(home.resolve())]
    assert set(state) == {"slots", "alive", "busy", "generation", "workers"}
    assert set(state["workers"][0]) == {"pid", "busy", "requests", "rss_mb", "idle_s"}
    assert state["workers"][0]["rss_mb"] > 1
