"""HomePool invariants, driven directly (SPEC §5). Most of these need no process at all:
claiming and cleanup are about locks and flags; where a running process matters, a real
worker is started."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from probe.env import child_env
from probe.pool.pool import HomePool, RecycleLimits
from probe.pool.spawner import Spawner
from probe.pool.worker import Worker
from support import wait_until

#: every test here runs once per way a worker starts (fork from the template, exec)
pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("spawn_method")]
LIMITS = RecycleLimits(idle_s=300, max_requests=1000, max_rss_mb=500)


@pytest.fixture
def spawner():
    spawner = Spawner()
    yield spawner
    spawner.close()


def make_pool(home: Path, spawner: Spawner, size: int = 2, limits: RecycleLimits = LIMITS,
              worker_class: type[Worker] = Worker) -> HomePool:
    env = child_env(home)
    return HomePool(home, size, lambda: worker_class(home, env, spawner), limits)


def test_claim_hands_out_the_worker_with_its_lock_held(tmp_path, spawner):
    pool = make_pool(tmp_path, spawner)
    worker = pool.claim(0)
    assert worker is not None and worker.lock.locked()
    assert not worker.lock.acquire(blocking=False), "the caller already owns it"
    pool.release(worker)
    assert not worker.lock.locked()


def test_concurrent_claims_never_share_a_worker(tmp_path, spawner):
    """check-then-act handoff: 16 threads hammer a 3-slot pool; a worker held by two
    callers at once would show up as an overlap in its holder count."""
    pool = make_pool(tmp_path, spawner, size=3)
    holders: dict[int, int] = {}
    overlaps = []
    counter_lock = threading.Lock()
    barrier = threading.Barrier(16)

    def hammer():
        barrier.wait()
        for _ in range(100):
            worker = pool.claim(5.0)
            if worker is None:
                continue
            try:
                with counter_lock:
                    holders[id(worker)] = holders.get(id(worker), 0) + 1
                    if holders[id(worker)] > 1:
                        overlaps.append(id(worker))
                time.sleep(0.0002)  # hold it for a moment, as a probe would (lets threads interleave)
                with counter_lock:
                    holders[id(worker)] -= 1
            finally:
                pool.release(worker)

    threads = [threading.Thread(target=hammer) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []
    assert len(pool.workers()) == 3


def test_waiter_gets_whichever_slot_frees_first(tmp_path, spawner):
    """A caller finding every slot busy waits on a condition for *any* release — here the
    second slot, not slot 0 — instead of polling one slot."""
    pool = make_pool(tmp_path, spawner, size=2)
    first, second = pool.claim(0), pool.claim(0)
    assert pool.claim(0) is None
    got: list[Worker | None] = []
    waiting = threading.Event()

    def waiter():
        waiting.set()
        got.append(pool.claim(30.0))

    thread = threading.Thread(target=waiter)
    thread.start()
    waiting.wait()
    pool.release(second)
    thread.join(10)
    assert got == [second]
    pool.release(first)
    pool.release(second)


def test_claim_gives_up_after_wait(tmp_path, spawner):
    pool = make_pool(tmp_path, spawner, size=1)
    held = pool.claim(0)
    assert pool.claim(0.05) is None
    pool.release(held)


def test_never_started_slot_is_kept_by_cleanup(tmp_path, spawner):
    pool = make_pool(tmp_path, spawner, size=2, limits=RecycleLimits(idle_s=0, max_requests=1, max_rss_mb=0))
    before = pool.workers()
    pool.reap()  # idle_s=0, max_requests=1, max_rss_mb=0 would condemn any *started* worker
    assert pool.workers() == before


def test_closed_worker_is_evicted_and_slot_replenished(tmp_path, spawner):
    pool = make_pool(tmp_path, spawner, size=2)
    victim = pool.workers()[0]
    victim.closed = True
    worker = pool.claim(0)
    assert victim not in pool.workers() and worker is not victim
    assert len(pool.workers()) == 2
    pool.release(worker)


def test_busy_worker_is_never_touched_by_cleanup(tmp_path, spawner):
    pool = make_pool(tmp_path, spawner, size=1)
    busy = pool.claim(0)
    busy.closed = True           # e.g. a rotation flagged it while in use
    pool.reap()
    assert pool.workers() == [busy], "busy workers stay until their caller releases them"
    pool.release(busy)
    assert busy not in pool.workers() and len(pool.workers()) == 1


def test_exited_idle_and_worn_out_workers_are_retired(tmp_path, spawner):
    limits = RecycleLimits(idle_s=300, max_requests=2, max_rss_mb=500)
    pool = make_pool(tmp_path, spawner, size=3, limits=limits)
    a, b, c = (pool.claim(0) for _ in range(3))
    for worker in (a, b, c):
        worker.start()
        worker.request({"op": "ping"}, time.monotonic() + 20)
    b.request({"op": "ping"}, time.monotonic() + 20)   # b reaches max_requests=2
    for worker in (a, b, c):
        pool.release(worker)
    assert b not in pool.workers() and b.exited()       # recycled on release
    a.proc.kill()
    a.proc.wait()
    c.idle_since -= 1000                                # idle past idle_s
    pool.reap()
    remaining = pool.workers()
    assert a not in remaining and c not in remaining and len(remaining) == 3
    assert c.exited()
    assert all(not w.started for w in remaining)


def test_stale_processes_are_closed_outside_the_pool_lock(tmp_path, spawner):
    """A slow close of a stale worker must not stall other callers of the same home."""
    closing = threading.Event()
    finish_close = threading.Event()

    class SlowClose(Worker):
        def close(self) -> None:
            if self.started:
                closing.set()
                finish_close.wait(20)
            super().close()

    pool = make_pool(tmp_path, spawner, size=2, worker_class=SlowClose)
    stale = pool.claim(0)
    stale.start()
    pool.release(stale)
    stale.closed = True
    cleaner = threading.Thread(target=pool.reap)
    cleaner.start()
    assert closing.wait(10)
    claimed = []
    other = threading.Thread(target=lambda: claimed.append(pool.claim(5.0)))
    other.start()
    other.join(5)
    finish_close.set()
    cleaner.join(10)
    assert claimed and claimed[0] is not None, "claim blocked behind a closing process"
    pool.release(claimed[0])


def test_waiters_are_served_in_arrival_order_and_newcomers_do_not_barge(tmp_path, spawner):
    """Under load a waiter must not lose every race to callers arriving after it (it would
    be pushed onto the cold path while newcomers are served warm)."""
    from support import wait_until

    pool = make_pool(tmp_path, spawner, size=1)
    held = pool.claim(0)
    order: list[str] = []
    got: dict[str, Worker] = {}

    def waiter(name: str) -> None:
        worker = pool.claim(30.0)
        order.append(name)
        got[name] = worker

    first = threading.Thread(target=waiter, args=("first",))
    first.start()
    assert wait_until(lambda: len(pool._waiters) == 1)
    second = threading.Thread(target=waiter, args=("second",))
    second.start()
    assert wait_until(lambda: len(pool._waiters) == 2)
    assert pool.claim(0) is None, "a newcomer must queue behind the waiters"
    pool.release(held)
    first.join(10)
    assert order == ["first"] and got["first"] is held
    pool.release(got["first"])
    second.join(10)
    assert order == ["first", "second"]
    pool.release(got["second"])


def test_the_reaper_thread_ends_for_good_on_one_failed_cleanup(make_service, make_home, monkeypatch, caplog):
    """Second look at issue #26 item 6 (a thread loop ending on an exception): one cleanup
    pass that raised (here "can't start new thread") ended the reaper thread, and idle
    workers were never retired again -- only a later claim could. The pass is logged and the
    next one retires the idle worker."""
    import psutil

    original = HomePool.reap
    calls = []

    def failing_once(self):
        calls.append(self)
        if len(calls) == 1:
            raise RuntimeError("can't start new thread")
        return original(self)

    monkeypatch.setattr(HomePool, "reap", failing_once)
    home = make_home("reaper-fault", deepseek="sk-reaper-fault")
    service = make_service(pool_size=1, idle_s=0.2)
    pid = service.fetch("deepseek", home=home).probe.worker_pid

    def gone() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    assert wait_until(gone, 15), f"the idle worker was never retired (cleanup passes: {len(calls)})"
    assert len(calls) >= 2
