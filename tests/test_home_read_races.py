"""Races and interruptions of a home-wide read (issue 26 #1, #2): an interrupted read leaves
no in-flight entry behind, and a read holding a worker never waits for the home-list lock
that :meth:`ProbeService.home_providers` holds while it waits for a worker."""
from __future__ import annotations

import signal
import threading

import filelock
import pytest

from probe.shared.disk import DiskCache

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
