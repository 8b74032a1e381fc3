"""The bounded cold fallback: a process of its own for a caller that found no warm slot.

**Bound.** At most ``max_concurrent`` cold processes exist at once, so a burst of 500
callers can never fork 500 processes: callers past the bound wait for a permit within their
own deadline, then get ``saturated``. A permit is held by a *process*, not a caller: it is
given back only once its process has exited. Waiting for that exit (a few ms of kernel
teardown after the reply) happens on a small thread pool of the limiter's own, off the
caller's path: the caller has its answer as soon as the reply is read.

**Surge workers (linger).** With ``linger_s > 0`` a cold process is not a one-shot: after
answering it is *parked* for up to ``linger_s``, still holding its permit, and the next
caller of the same home that finds every pool slot busy takes it instead of starting
another process. A burst on one home therefore grows that home's capacity to ``pool_size +
max_concurrent`` running processes for as long as the burst lasts, then shrinks back by
itself -- the bound is unchanged. Why: a fresh process pays its first-probe costs
(copy-on-write page faults, a TCP/TLS connection) every time, ~15 ms of CPU here against
~2 ms for a warm one; under a sustained burst those costs saturated the CPU and doubled
the latency of every caller (measured in ``scripts/bench_spawn.py``'s contention row).

Rules that keep parking safe:

* a parked worker is reused only by its own home, and only within the rotation generation
  it started in: parking checks the home's generation under the limiter lock, and
  :meth:`flush` (called by a rotation after the generation bump) closes that home's parked
  workers, so whichever of the two comes first, no pre-rotation process serves again;
* a caller that needs a permit while none is free reclaims the oldest parked worker of any
  home (closed outside the lock, its permit handed straight to the caller), so lingering
  workers never make another home wait;
* ownership moves by removal from the parked list, under the lock: two callers can never
  take the same worker (no check-then-act window).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from probe.pool.worker import Worker

log = logging.getLogger("probe.pool")


@dataclass
class _Parked:
    worker: Worker
    home: Path
    generation: int
    until: float


class ColdLimiter:
    def __init__(self, max_concurrent: int, linger_s: float = 0.0) -> None:
        self.max_concurrent = max_concurrent
        self.linger_s = linger_s if max_concurrent > 0 else 0.0
        self._cond = threading.Condition()
        self._free = max_concurrent
        self._parked: list[_Parked] = []
        self._closed = False
        self._expirer: threading.Thread | None = None
        self._retirer: ThreadPoolExecutor | None = None
        self._retirer_lock = threading.Lock()

    @property
    def lingers(self) -> bool:
        """True when cold processes stay for reuse (not started as one-shots)."""
        return self.linger_s > 0

    # -- claiming ------------------------------------------------------------------------
    def claim(self, home: Path, generation: int, deadline: float) -> tuple[bool, Worker | None]:
        """What a caller with no free pool slot gets, waiting until ``deadline`` at most:
        ``(True, worker)`` a parked surge worker of ``home`` from ``generation`` (it keeps its
        permit; now owned by the caller), ``(True, None)`` a permit for a new process,
        ``(False, None)`` nothing in time (saturated). When every permit is held and only
        other homes' workers are parked, the oldest of those is closed and its permit
        passes to this caller. A waiter re-checks all three whenever a worker is parked or
        a permit comes back."""
        if self.max_concurrent <= 0:
            return False, None
        broken: list[Worker] = []
        try:
            with self._cond:
                while not self._closed:
                    for index in range(len(self._parked) - 1, -1, -1):   # most recently parked first
                        entry = self._parked[index]
                        if entry.home == home and entry.generation == generation:
                            del self._parked[index]
                            if _healthy(entry.worker):
                                return True, entry.worker
                            broken.append(entry.worker)
                    if self._free > 0:
                        self._free -= 1
                        return True, None
                    if self._parked:
                        victim = self._parked.pop(0)
                        break
                    remaining_s = deadline - time.monotonic()
                    if remaining_s <= 0:
                        return False, None
                    self._cond.wait(remaining_s)
                else:
                    return False, None
            victim.worker.close()   # outside the lock; its permit is now ours
            return True, None
        finally:
            for worker in broken:
                self._retire_later(worker)

    def release(self) -> None:
        with self._cond:
            self._free += 1
            assert self._free <= self.max_concurrent, "a permit was released twice"
            self._cond.notify()

    def release_after(self, close: Callable[[], None]) -> None:
        """Run ``close`` (it returns once the process has exited) in the background, then
        give the permit back; where no thread can start any more, right here."""
        def retire() -> None:
            try:
                close()
            finally:
                self.release()

        with self._retirer_lock:
            if self._retirer is None:
                self._retirer = ThreadPoolExecutor(max(1, self.max_concurrent), thread_name_prefix="probe-cold-retire")
            try:
                self._retirer.submit(retire)
                return
            except RuntimeError:   # shut down (the service is closing)
                pass
        retire()

    # -- surge workers -------------------------------------------------------------------
    def park(self, worker: Worker, home: Path, generation: int, current_generation: Callable[[], int]) -> bool:
        """Keep a cold worker that just answered for reuse; False when it must go instead
        (lingering off, limiter closed, worker unhealthy, or the home rotated since the
        worker started). On False the caller still owns the worker and its permit."""
        if not self.lingers or not _healthy(worker):
            return False
        with self._cond:
            if self._closed or current_generation() != generation:
                return False
            worker.idle_since = time.monotonic()
            self._parked.append(_Parked(worker, home, generation, worker.idle_since + self.linger_s))
            self._cond.notify_all()   # a caller waiting for a permit may reclaim it
            if self._expirer is None:
                self._expirer = threading.Thread(target=self._expire_loop, name="probe-cold-linger", daemon=True)
                self._expirer.start()
        return True

    def flush(self, home: Path | None) -> None:
        """Close the parked workers of ``home`` (every home when None): a rotation."""
        with self._cond:
            gone = [p for p in self._parked if home is None or p.home == home]
            self._parked = [p for p in self._parked if not (home is None or p.home == home)]
        for entry in gone:
            entry.worker.closed = True
            self._retire_later(entry.worker)

    def counts(self) -> tuple[int, int]:
        """(cold processes probing or exiting, parked surge workers); together they hold
        every permit that is not free."""
        with self._cond:
            return self.max_concurrent - self._free - len(self._parked), len(self._parked)

    def _retire_later(self, worker: Worker) -> None:
        worker.closed = True
        self.release_after(worker.close)

    def _expire_loop(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                now = time.monotonic()
                expired = [p for p in self._parked if p.until <= now]
                if not expired:
                    self._cond.wait(min((p.until for p in self._parked), default=now + 60) - now)
                    continue
                self._parked = [p for p in self._parked if p.until > now]
            for entry in expired:   # outside the lock: nothing waits on a closing process
                try:
                    self._retire_later(entry.worker)
                except Exception:  # noqa: BLE001 -- the loop must outlive one failure, or every
                    # worker parked from now on would linger, permit held, until close
                    log.exception("retiring a surge worker failed; trying again after the linger time")
                    with self._cond:   # (closed meanwhile: the process dies with the spawner)
                        self._parked.append(_Parked(entry.worker, entry.home, entry.generation,
                                                    time.monotonic() + self.linger_s))

    def close(self) -> None:
        """Close every parked worker and wait until every process handed to
        :meth:`release_after` is gone."""
        with self._cond:
            self._closed = True
            parked, self._parked = self._parked, []
            self._cond.notify_all()
            expirer = self._expirer
        for entry in parked:
            self._retire_later(entry.worker)
        if expirer is not None and expirer is not threading.current_thread():
            expirer.join()
        with self._retirer_lock:
            retirer = self._retirer
        if retirer is not None:
            retirer.shutdown(wait=True)


def _healthy(worker: Worker) -> bool:
    return not worker.closed and worker.started and not worker.exited() and not worker.has_unsolicited_output()
