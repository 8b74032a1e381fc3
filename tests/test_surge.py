"""Surge workers: a cold process lingers after answering and serves the next caller of its
home that finds the pool busy (``probe.pool.cold``). Each test names the failure it guards."""
from __future__ import annotations

import threading

from support import fresh, live_workers, run_threads, still_running, wait_until


def overlapping(emulator, token: str, count: int, call) -> list:
    """``count`` calls of ``call`` whose provider requests are all in flight at once: the
    emulator holds requests with ``token`` until it has seen ``count`` of them. (A slow
    provider only makes overlap likely: a loaded machine can start the second call after
    the first has finished, and then no caller ever needs a cold process.)"""
    gate = emulator.hold(token)
    before = emulator.count(token=token)
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(call())) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        assert emulator.wait_for(before + count, token=token, timeout=10)
    finally:
        gate.set()
        for thread in threads:
            thread.join()
    return results


def test_cold_worker_is_reused_by_the_next_caller_of_its_home(emulator, make_service, make_home):
    """Without lingering every overflow caller forked (and tore down) a process of its own."""
    token = fresh("sk-surge")
    home = make_home("surge", deepseek=token)
    service = make_service(pool_size=1, claim_wait_s=0, max_cold_spawns=2, coalesce=False, cold_linger_s=30)
    service.fetch("deepseek", home=home, refresh=True)          # the pool's slot is running
    first = overlapping(emulator, token, 2, lambda: service.fetch("deepseek", home=home, refresh=True))
    cold = [s for s in first if s.probe.path == "cold"]
    assert len(cold) == 1, [s.probe.path for s in first]
    assert wait_until(lambda: service.stats()["cold_parked"] == 1)
    again = overlapping(emulator, token, 2, lambda: service.fetch("deepseek", home=home, refresh=True))
    paths = sorted(s.probe.path for s in again)
    assert paths == ["warm", "warm"], paths
    assert cold[0].probe.worker_pid in {s.probe.worker_pid for s in again}
    assert service.stats()["spawns"] == 2


def test_a_burst_never_exceeds_pool_plus_cold_bound(make_service, make_home):
    home = make_home("surge-bound", deepseek="sk-surge-bound-slow100-")
    service = make_service(pool_size=2, claim_wait_s=0, max_cold_spawns=3, coalesce=False, cold_linger_s=30)
    peak = [0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], len(live_workers()))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(4):
            results = run_threads(10, lambda: service.fetch("deepseek", home=home, refresh=True, timeout=5))
            assert all(r.error is None or r.error.code == "saturated" for r in results)
    finally:
        stop.set()
        watcher.join()
    assert peak[0] <= 2 + 3, peak[0]
    assert service.stats()["spawns"] <= 5 + 1   # +1: a worker may be replaced, never a fork per caller


def test_rotation_closes_parked_workers_and_a_busy_one_is_not_parked(emulator, make_service, make_home):
    """A stale worker acting after a credential change: a cold process busy when its home
    rotates must not be parked and serve the next caller (it started before the rotation)."""
    token = fresh("sk-surge-rot")
    home = make_home("surge-rot", deepseek=token)
    service = make_service(pool_size=1, claim_wait_s=0, max_cold_spawns=2, coalesce=False, cold_linger_s=30)
    service.fetch("deepseek", home=home, refresh=True)
    overlapping(emulator, token, 2, lambda: service.fetch("deepseek", home=home, refresh=True))
    assert wait_until(lambda: service.stats()["cold_parked"] == 1)
    parked = next(p for p in live_workers() if p.pid not in
                  {w["pid"] for w in service.stats()["homes"][str(home.resolve())]["workers"]})
    service.invalidate(home=home)
    assert service.stats()["cold_parked"] == 0
    assert not still_running([parked], 5.0)

    # now: the slot and a cold process both busy (their requests held) while the home rotates
    gate = emulator.hold(token)
    before = emulator.count(token=token)
    in_flight = []
    threads = [threading.Thread(target=lambda: in_flight.append(
        service.fetch("deepseek", home=home, refresh=True))) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        assert emulator.wait_for(before + 2, token=token, timeout=10)
        assert service.stats()["cold_running"] == 1
        service.invalidate(home=home)
    finally:
        gate.set()
        for thread in threads:
            thread.join()
    assert sorted(s.probe.path for s in in_flight) in (["cold", "warm"], ["cold", "slot_start"])
    assert service.stats()["cold_parked"] == 0
    assert wait_until(lambda: service.stats()["cold_running"] == 0)


def test_parked_worker_gives_its_permit_to_another_home(make_service, make_home):
    """Lingering must never make another home wait: with one cold permit, home B's
    overflow caller reclaims home A's parked worker at once instead of being saturated."""
    a = make_home("surge-a", deepseek="sk-surge-a-slow200-")
    b = make_home("surge-b", deepseek="sk-surge-b-slow200-")
    service = make_service(pool_size=1, claim_wait_s=0, max_cold_spawns=1, coalesce=False, cold_linger_s=60)
    service.fetch("deepseek", home=a, refresh=True)
    service.fetch("deepseek", home=b, refresh=True)
    run_threads(2, lambda: service.fetch("deepseek", home=a, refresh=True))
    assert wait_until(lambda: service.stats()["cold_parked"] == 1)
    results = run_threads(2, lambda: service.fetch("deepseek", home=b, refresh=True, timeout=1.0))
    assert all(r.error is None for r in results), [r.error for r in results]
    assert "cold" in {r.probe.path for r in results}


def test_parked_worker_goes_after_linger(make_service, make_home):
    home = make_home("surge-expire", deepseek="sk-surge-exp-slow200-")
    service = make_service(pool_size=1, claim_wait_s=0, max_cold_spawns=2, coalesce=False, cold_linger_s=0.2)
    service.fetch("deepseek", home=home, refresh=True)
    run_threads(2, lambda: service.fetch("deepseek", home=home, refresh=True))
    assert wait_until(lambda: service.stats()["cold_parked"] == 0 and service.stats()["cold_running"] == 0, 5.0)
    assert len(live_workers()) == 1   # the pool's slot only


def test_no_pool_means_true_one_shots(make_service, make_home):
    """``pool_size=0`` is the benchmarks' cold baseline: nothing lingers."""
    home = make_home("surge-none", deepseek="sk-surge-none")
    service = make_service(pool_size=0, cold_linger_s=30)
    first = service.fetch("deepseek", home=home, refresh=True)
    second = service.fetch("deepseek", home=home, refresh=True)
    assert (first.probe.path, second.probe.path) == ("cold", "cold")
    assert first.probe.worker_pid != second.probe.worker_pid
    assert service.stats()["cold_parked"] == 0


def test_the_linger_thread_ends_for_good_on_one_failed_retirement(emulator, make_service, make_home, monkeypatch):
    """Second look at issue #26 item 6 (a thread loop ending on an exception): retiring one
    expired surge worker raised out of the linger thread's loop, which ended for good --
    every worker parked afterwards lingered (and held its cold permit) until the service
    closed. The failure is logged, that worker is tried again, and all of them go."""
    from probe.pool.cold import ColdLimiter

    original = ColdLimiter._retire_later
    calls = []

    def failing_once(self, worker):
        calls.append(worker)
        if len(calls) == 1:
            raise RuntimeError("can't start new thread")
        return original(self, worker)

    monkeypatch.setattr(ColdLimiter, "_retire_later", failing_once)
    token = fresh("sk-surge-linger-fault")
    home = make_home("surge-linger-fault", deepseek=token)
    service = make_service(pool_size=1, claim_wait_s=0, max_cold_spawns=2, coalesce=False, cold_linger_s=0.2)
    overlapping(emulator, token, 3, lambda: service.fetch("deepseek", home=home, refresh=True))
    assert wait_until(lambda: service.stats()["cold_parked"] == 0 and service.stats()["cold_running"] == 0, 10.0), \
        service.stats()
    assert len(calls) >= 2
    assert len(live_workers()) == 1   # the pool's slot only
