"""One test per concurrency bug class of the developers' guide; each name says which.

The check-then-act handoff test lives in test_pool.py
(test_concurrent_claims_never_share_a_worker); closing processes under a pool's lock in
test_pool.py (test_stale_processes_are_closed_outside_the_pool_lock). The registry-wide
version of the latter is here.
"""
from __future__ import annotations

import asyncio
import json
import threading

import pytest

import probe
from probe import ProbeConfig, ProbeService
from probe.pool.registry import PoolRegistry
from probe.pool.worker import Worker
from support import run_threads, wait_until

#: every test here runs once per way a worker starts (fork from the template, exec)
pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("spawn_method")]


@pytest.fixture
def service(emulator):
    emulator.clear()   # request counts start at zero for each spawn method's run
    with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls())) as service:
        yield service


def pids(service: ProbeService, home) -> set[int]:
    state = service.stats()["homes"].get(str(home.resolve()))
    return {w["pid"] for w in state["workers"]} if state else set()


def test_lazy_init_never_publishes_a_half_built_default_service(monkeypatch):
    """Many threads race to the first ``probe.stats()``; exactly one service is built and
    nobody sees it before its constructor finished."""
    monkeypatch.setattr(probe, "_default_service", None)
    built: list[ProbeService] = []
    release = threading.Event()

    class SlowToBuild(ProbeService):
        def __init__(self, config):
            release.wait(10)  # hold the constructor open while the other threads arrive
            super().__init__(config)
            self.finished = True
            built.append(self)

    monkeypatch.setattr(probe, "ProbeService", SlowToBuild)
    seen: list[ProbeService] = []
    threads = [threading.Thread(target=lambda: seen.append(probe._service())) for _ in range(8)]
    for t in threads:
        t.start()
    release.set()
    for t in threads:
        t.join()
    try:
        assert len(built) == 1
        assert all(s is built[0] and s.finished for s in seen) and len(seen) == 8
    finally:
        built[0].close()


def test_lazy_init_never_publishes_a_half_built_pool(tmp_path):
    """A pool is put in the registry only once every slot exists: a second thread asking
    for the same home meanwhile waits and then gets the whole pool."""
    from probe.pool.pool import RecycleLimits
    from probe.pool.spawner import Spawner

    in_constructor = threading.Event()
    release = threading.Event()
    made = []

    def env_for(home):
        in_constructor.set()
        release.wait(10)
        return {}

    spawner = Spawner()
    registry = PoolRegistry(pool_size=3, max_total_workers=8, limits=RecycleLimits(300, 100, 500),
                            prewarm=False, spawner=spawner, env_for=env_for,
                            on_retire=lambda w, r: None, on_spawn=lambda w: None)
    first = threading.Thread(target=lambda: made.append(registry.pool(tmp_path)))
    first.start()
    assert in_constructor.wait(10)
    second = threading.Thread(target=lambda: made.append(registry.pool(tmp_path)))
    second.start()
    second.join(0.2)
    assert second.is_alive() and made == [], "a pool was visible before it was built"
    release.set()
    first.join()
    second.join()
    assert made[0] is made[1] and len(made[0].workers()) == 3
    registry.close()
    spawner.close()


def test_unconditional_reconfigure_does_not_tear_down_live_workers(service, make_home, emulator):
    home = make_home("reconf", deepseek="sk-reconf-slow300-")
    service.fetch("deepseek", home=home)
    before = pids(service, home)
    in_flight = []
    thread = threading.Thread(target=lambda: in_flight.append(service.fetch("deepseek", home=home, refresh=True)))
    thread.start()
    service.configure(ProbeConfig(provider_urls=emulator.provider_urls()))   # equal values
    thread.join()
    assert in_flight[0].available and in_flight[0].probe.path == "warm"
    assert pids(service, home) == before
    assert service.stats()["kills"] == 0


def test_changed_config_touches_only_what_depends_on_it(service, make_home, emulator):
    home = make_home("reconf2", deepseek="sk-reconf2")
    service.fetch("deepseek", home=home)
    before = pids(service, home)
    service.configure(service.config.replace(cache_ttl_s=5, pool_size=3))
    assert pids(service, home) == before
    assert service.stats()["homes"][str(home.resolve())]["slots"] == 3
    service.configure(service.config.replace(provider_urls={**emulator.provider_urls(), "deepseek": emulator.base_url + "/"}))
    assert pids(service, home) == set(), "a base-URL change restarts the workers that used the old one"


def test_loop_bound_resources_are_not_shared_across_event_loops(service, make_home):
    """afetch from three event loops in three threads at once."""
    home = make_home("loops", deepseek="sk-loops")

    def in_own_loop():
        async def main():
            return await asyncio.gather(*(service.afetch("deepseek", home=home, refresh=True) for _ in range(3)))
        return asyncio.run(main())

    results = [s for batch in run_threads(3, in_own_loop) for s in batch]
    assert len(results) == 9 and all(s.available for s in results)


def test_afetch_does_not_block_the_event_loop(service, make_home):
    home = make_home("nonblock", deepseek="sk-nonblock-slow500-")

    async def main():
        ticks = 0
        task = asyncio.ensure_future(service.afetch("deepseek", home=home))
        while not task.done():
            await asyncio.sleep(0.01)
            ticks += 1
        return ticks, task.result()

    ticks, snap = asyncio.run(main())
    assert snap.available and ticks >= 10, "the loop kept running while the probe was in flight"


def test_cancellation_is_not_swallowed_and_leaves_no_late_reply(service, make_home, emulator):
    """Cancelling an awaiting afetch raises CancelledError in the caller; the worker it used
    is released once its probe ends, and the next caller gets its own answer, not the
    cancelled caller's late reply."""
    slow = make_home("cancel-slow", deepseek="sk-cancel-slow400-")

    async def main():
        task = asyncio.ensure_future(service.afetch("deepseek", home=slow, refresh=True))
        while emulator.count(token="sk-cancel-slow400-") == 0:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert asyncio.run(main())
    # The same worker serves the next caller of that home with a different token.
    (slow / ".env").write_text("DEEPSEEK_API_KEY=sk-cancel-after\n")
    snap = service.fetch("deepseek", home=slow, refresh=True, timeout=10)
    assert snap.available
    assert emulator.requests()[-1].token == "sk-cancel-after"
    # the cancelled caller's probe runs to its end in its thread, then releases the worker
    assert wait_until(lambda: service.stats()["homes"][str(slow.resolve())]["busy"] == 0)


def test_closing_a_shared_worker_under_another_caller_is_deferred(service, make_home, emulator):
    """A rotation while a worker is mid-probe flags it; the caller's probe completes, then
    the worker is retired."""
    home = make_home("shared", deepseek="sk-shared-slow400-")
    service.fetch("deepseek", home=home)
    (pid,) = pids(service, home)
    result = []
    thread = threading.Thread(target=lambda: result.append(service.fetch("deepseek", home=home, refresh=True)))
    thread.start()
    assert wait_until(lambda: emulator.count(token="sk-shared-slow400-") == 2)
    service.invalidate(home=home)
    thread.join()
    assert result[0].available and result[0].probe.worker_pid == pid
    assert pid not in pids(service, home)


def test_stale_result_is_not_cached_after_a_credential_change(service, make_home, emulator):
    """A probe that started before an invalidation returns to its caller but is not
    stored: the next fetch probes again. The credential files are left alone here (the
    credential changed elsewhere, e.g. a keychain), so only the generation guard — not
    the file fingerprint in the cache key — can keep the old result out."""
    home = make_home("stale", deepseek="sk-stale-slow400-")
    result = []
    thread = threading.Thread(target=lambda: result.append(service.fetch("deepseek", home=home)))
    thread.start()
    assert wait_until(lambda: emulator.count(token="sk-stale-slow400-") == 1)
    service.invalidate(home=home)
    thread.join()
    assert result[0].available, "the caller that started before the rotation still gets its answer"
    fresh = service.fetch("deepseek", home=home)
    assert fresh.probe.path != "cache"
    assert emulator.count(token="sk-stale-slow400-") == 2


def test_stale_failure_does_not_outlive_a_credential_change(service, make_home, emulator):
    """A rate-limit back-off earned with the old credential must not block the new one."""
    home = make_home("stale-failure", deepseek="sk-stale-failure")
    emulator.script("sk-stale-failure", {"error": {}}, status=429)
    assert service.fetch("deepseek", home=home).error.code == "rate_limited"
    emulator.script("sk-stale-failure", {"is_available": True, "balance_infos": []})
    service.invalidate(home=home)
    snap = service.fetch("deepseek", home=home)
    assert snap.error is None and not snap.stale


def test_unlocked_writes_do_not_race_the_stats_serializer(service, make_home):
    homes = [make_home(f"ser{i}", deepseek=f"sk-ser-{i}") for i in range(3)]
    stop = threading.Event()
    errors = []

    def serialize():
        while not stop.is_set():
            try:
                json.dumps(service.stats())
            except Exception as exc:  # noqa: BLE001 — any failure is the bug under test
                errors.append(exc)

    reader = threading.Thread(target=serialize)
    reader.start()

    def churn():
        for i in range(15):
            service.fetch("deepseek", home=homes[i % 3], refresh=True)
            if i % 5 == 0:
                service.invalidate(home=homes[i % 3])
        return True

    run_threads(4, churn)
    stop.set()
    reader.join()
    assert errors == []


def test_closing_processes_never_holds_a_global_lock(service, make_home, monkeypatch):
    """While one home's workers are being closed (slowly), other homes keep working:
    fetches, stats and a brand-new home all complete before that close is over."""
    slow_home = make_home("slowclose", deepseek="sk-slowclose")
    other = make_home("other", deepseek="sk-other")
    third = make_home("third", deepseek="sk-third")
    service.fetch("deepseek", home=slow_home)
    service.fetch("deepseek", home=other)
    closing = threading.Event()
    finish = threading.Event()
    original_close = Worker.close

    def slow_close(self):
        if self.home == slow_home.resolve() and self.started:
            closing.set()
            finish.wait(30)
        original_close(self)

    monkeypatch.setattr(Worker, "close", slow_close)
    rotation = threading.Thread(target=service.invalidate, kwargs={"home": slow_home})
    rotation.start()
    assert closing.wait(10)
    seen: dict[str, object] = {}

    def other_homes():
        seen["warm"] = service.fetch("deepseek", home=other, refresh=True, timeout=5)
        seen["stats"] = service.stats()
        seen["new"] = service.fetch("deepseek", home=third, timeout=10)

    worker_thread = threading.Thread(target=other_homes)
    worker_thread.start()
    worker_thread.join(20)
    blocked = worker_thread.is_alive()
    finish.set()
    rotation.join()
    worker_thread.join()
    assert not blocked, "other homes waited for a process being closed"
    assert seen["warm"].available and seen["warm"].probe.path == "warm"
    assert seen["new"].available and str(other.resolve()) in seen["stats"]["homes"]


def test_configure_closes_the_workers_it_retires_outside_its_lock(emulator, make_home, monkeypatch):
    """``configure`` (pool_size 2 -> 1) retires a worker whose exit is slow: while that
    close is held, another caller -- a reload's ``configure`` with the values already in
    force (a no-op), ``stats()``, a fetch answered from the cache -- must not wait behind
    it. The close used to run under ``_config_lock``, which the no-op configure takes."""
    home = make_home("cfgclose", deepseek="sk-cfgclose")
    config = ProbeConfig(provider_urls=emulator.provider_urls(), pool_size=2, prewarm=True)
    with ProbeService(config) as service:
        assert service.fetch("deepseek", home=home).available       # cached from now on
        assert wait_until(lambda: len(pids(service, home)) == 2)     # both slots started (prewarm)
        closing, finish = threading.Event(), threading.Event()
        original_close = Worker.close

        def slow_close(self):
            if self.home == home.resolve() and self.started and not finish.is_set():
                closing.set()
                finish.wait(30)
            original_close(self)

        monkeypatch.setattr(Worker, "close", slow_close)
        smaller = ProbeConfig(provider_urls=emulator.provider_urls(), pool_size=1, prewarm=True)
        reconfigure = threading.Thread(target=service.configure, args=(smaller,))
        reconfigure.start()
        try:
            assert closing.wait(10)               # the retired worker's close is under way, held
            seen: dict[str, object] = {}
            answered = threading.Event()

            def meanwhile():
                service.configure(smaller)        # the values in force: a no-op
                seen["stats"] = service.stats()
                seen["cached"] = service.fetch("deepseek", home=home)
                answered.set()

            other = threading.Thread(target=meanwhile)
            other.start()
            answered.wait(20)
            blocked = not answered.is_set()
        finally:
            finish.set()
            reconfigure.join()
        other.join()
        assert not blocked, "a configure waited for a worker retired by another configure to exit"
        assert seen["cached"].available and seen["cached"].probe.path == "cache"
        assert service.config.pool_size == 1 and len(pids(service, home)) == 1
