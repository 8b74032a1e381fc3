"""Races and interruptions of a home-wide read (issue 26 #1, #2): an interrupted read leaves
no in-flight entry behind, and a read holding a worker never waits for the home-list lock
that :meth:`ProbeService.home_providers` holds while it waits for a worker."""
from __future__ import annotations

import signal
import threading

import filelock
import pytest

from probe.shared.disk import DiskCache
from support import wait_until

pytestmark = pytest.mark.timeout(60)


class Interrupted(Exception):
    """What a signal handler of the embedding program raises (a KeyboardInterrupt, a
    watchdog's timeout) -- in the middle of a home read."""


def test_an_interrupted_home_read_leaks_no_in_flight_entry_for_a_part_waiting_for_another_process(
        make_service, make_home, emulator, tmp_path):
    """deepseek's shared probe lock is another process's, so the read leaves it for after
    the batch (``waits_for_lock``); openrouter's batch request is held at the provider when
    the read is interrupted. Before the fix the deepseek entry stayed in the in-flight
    table and every later fetch of it joined it and waited its whole deadline."""
    waiting, held = "sk-ds-leak-waiting", "sk-or-v1-leak-held"
    home = make_home("leak", deepseek=waiting, openrouter=held)
    cache_dir = tmp_path / "cache"
    service = make_service(pool_size=1, cache_dir=str(cache_dir))
    lock_path = DiskCache(cache_dir)._home_dir(str(home.resolve())) / "deepseek.lock"
    lock_path.parent.mkdir(parents=True)
    other_process = filelock.FileLock(str(lock_path), thread_local=False)
    other_process.acquire()
    gate = emulator.hold(held)
    main = threading.get_ident()

    def interrupt() -> None:
        assert emulator.wait_for(token=held)
        signal.pthread_kill(main, signal.SIGUSR1)

    def raise_interrupted(signum, frame):
        raise Interrupted

    previous = signal.signal(signal.SIGUSR1, raise_interrupted)
    interrupter = threading.Thread(target=interrupt)
    interrupter.start()
    try:
        with pytest.raises(Interrupted):
            service.fetch_home(home=home, timeout=20)
    finally:
        interrupter.join()
        signal.signal(signal.SIGUSR1, previous)
        gate.set()
        other_process.release()
    snap = service.fetch("deepseek", home=home, timeout=3)
    assert snap.error is None and snap.available, snap.error
    assert snap.probe.path != "coalesced"
    assert emulator.count(token=waiting) == 1
    assert service.fetch("openrouter", home=home, timeout=3).available


def claims_waiting(service, home) -> int:
    """Callers queued for a slot of the home's pool (only to order the threads below)."""
    return len(service._registry.pool(home.resolve())._waiters)


def test_a_home_read_holding_a_worker_never_waits_for_the_list_lock_a_waiting_lister_holds(
        make_service, make_home, emulator):
    """The lock-order inversion, scripted: the home's one slot is busy; a home read (A)
    queues for it first, then ``home_providers`` (B) takes the home-list lock and queues
    behind A. The slot comes free and goes to A, in order. Before the fix A then waited
    for B's lock while B waited for A's worker: both ran to their deadline (B: timeout /
    saturated, A: timeout). Now A asks for the list on the worker it holds."""
    held = "sk-or-v1-order-held"
    home = make_home("order", deepseek="sk-ds-order", openrouter=held)
    service = make_service(pool_size=1, max_cold_spawns=1, claim_wait_s=30)
    assert service.fetch("deepseek", home=home).available            # the one slot, warm
    gate = emulator.hold(held)
    results: dict[str, object] = {}

    def run(name, call):
        try:
            results[name] = call()
        except Exception as exc:   # noqa: BLE001 -- the failure is the test's answer
            results[name] = exc

    busy = threading.Thread(target=run, args=("busy", lambda: service.fetch("openrouter", home=home, timeout=20)))
    busy.start()
    assert emulator.wait_for(token=held)
    reader = threading.Thread(target=run, args=("read", lambda: service.fetch_home(home=home, timeout=5)))
    reader.start()
    assert wait_until(lambda: claims_waiting(service, home) == 1)
    lister = threading.Thread(target=run, args=("list", lambda: service.home_providers(home, timeout=5)))
    lister.start()
    assert wait_until(lambda: claims_waiting(service, home) == 2)
    gate.set()
    for thread in (busy, reader, lister):
        thread.join()
    assert results["busy"].available
    read = results["read"]
    assert not isinstance(read, Exception) and [(s.provider, s.error) for s in read] == [
        ("openrouter", None), ("deepseek", None)], read
    listed = results["list"]
    assert not isinstance(listed, Exception) and listed.names == ("openrouter", "deepseek"), listed
