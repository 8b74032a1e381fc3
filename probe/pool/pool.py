"""The per-home pool: ``size`` slots of warm workers, handed out with their lock held.

One condition variable guards a pool's slot list, and every acquire or release of a slot
worker's lock happens under it. That is the whole concurrency story of this module:

* claim = pick a free worker and ``lock.acquire(blocking=False)`` it while holding the
  condition, so choosing and taking are one step (no check-then-act window);
* release = unlock and ``notify_all`` under the condition: waiters, served in arrival order,
  wake for *any* slot (not one they polled);
* under the condition, ``worker.lock.locked()`` therefore means "busy" without races, which
  is what lets cleanup promise it never touches a busy worker;
* processes are terminated only after the condition is released (closing a worker can take
  a second; no other caller of this home should wait for that).
"""
from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from probe.pool.worker import Worker


@dataclass(frozen=True)
class RecycleLimits:
    idle_s: float
    max_requests: int
    max_rss_mb: float


def stale_reason(worker: Worker, limits: RecycleLimits, now: float, *, check_rss: bool = False) -> str | None:
    """Why an idle worker should go, or None. Never-started workers are never stale: an
    empty slot is cheap, and evicting it would only churn Worker objects. RSS costs a
    psutil call, so only the periodic reaper asks for it (``check_rss``)."""
    if worker.closed:
        return "closed"
    if not worker.started:
        return None
    if worker.exited():
        return "exited"
    if worker.has_unsolicited_output():
        return "unsolicited_output"
    if worker.requests_served >= limits.max_requests:
        return "recycle"
    if now - worker.idle_since >= limits.idle_s:
        return "idle"
    if check_rss:
        rss_mb = worker.rss_mb()
        if rss_mb is not None and rss_mb > limits.max_rss_mb:
            return "recycle"
    return None


def close_workers(workers: Iterable[Worker]) -> None:
    """Close several workers quickly: EOF to all first, so they exit in parallel, then reap."""
    workers = list(workers)
    for worker in workers:
        worker.closed = True
        if worker.proc is not None and worker.proc.stdin and not worker.proc.stdin.closed:
            try:
                worker.proc.stdin.close()
            except OSError:
                pass
    for worker in workers:
        worker.close()


class HomePool:
    def __init__(self, home: Path, size: int, new_worker: Callable[[], Worker], limits: RecycleLimits,
                 on_retire: Callable[[Worker, str], None] = lambda worker, reason: None) -> None:
        self.home = home
        self._new_worker = new_worker
        self._limits = limits
        self._on_retire = on_retire
        self._cond = threading.Condition()
        self._slots: list[Worker] = [new_worker() for _ in range(size)]
        #: claimers in arrival order; only the first may take a worker
        self._waiters: collections.deque[object] = collections.deque()
        self._closed = False

    # -- claiming ------------------------------------------------------------------------
    def claim(self, wait_s: float) -> Worker | None:
        """A worker whose ``lock`` the caller now holds, or None when every slot stayed busy
        for ``wait_s``. The caller must hand it back with :meth:`release` in a ``finally``.

        Waiters are served first come, first served: a caller that arrives while others
        wait queues behind them instead of barging in on the next release. Without that,
        under load a waiter could lose every race until its ``claim_wait_s`` ran out and
        be pushed onto the (slow) cold path while newcomers were served warm.
        """
        give_up = time.monotonic() + wait_s
        retired: list[Worker] = []
        ticket = object()
        try:
            with self._cond:
                self._waiters.append(ticket)
                try:
                    while not self._closed:
                        retired += self._evict_stale_locked()
                        if self._waiters[0] is ticket:
                            worker = self._take_free_locked()
                            if worker is not None:
                                return worker
                        remaining_s = give_up - time.monotonic()
                        if remaining_s <= 0:
                            return None
                        self._cond.wait(remaining_s)
                    return None
                finally:
                    self._waiters.remove(ticket)
                    if self._waiters:
                        self._cond.notify_all()  # the next in line may be able to go now
        finally:
            close_workers(retired)

    def _take_free_locked(self) -> Worker | None:
        # Prefer a running process (most recently used first: its connections are warm and
        # the others may age out) over a slot that would have to start one.
        running = sorted((w for w in self._slots if w.started), key=lambda w: -w.idle_since)
        for worker in running + [w for w in self._slots if not w.started]:
            if worker.lock.acquire(blocking=False):
                return worker
        return None

    def release(self, worker: Worker) -> None:
        """Give a claimed worker back; a closed, exited or worn-out one is retired and its
        slot refilled (replenish), then its process is closed outside the pool lock."""
        now = time.monotonic()
        worker.idle_since = now
        reason = None
        with self._cond:
            in_slots = worker in self._slots
            reason = stale_reason(worker, self._limits, now) if in_slots else "closed"
            if reason is not None and in_slots:
                self._slots[self._slots.index(worker)] = self._new_worker()
            worker.lock.release()
            self._cond.notify_all()  # only the head of the queue can take it; wake it wherever it is
        if reason is not None:
            self._retire([(worker, reason)])

    # -- housekeeping --------------------------------------------------------------------
    def _evict_stale_locked(self, *, check_rss: bool = False) -> list[Worker]:
        """Swap every idle stale worker for a fresh, never-started one; return the old ones
        for the caller to close once the lock is released. Busy workers are not touched."""
        now = time.monotonic()
        evicted = []
        for index, worker in enumerate(self._slots):
            if worker.lock.locked():
                continue
            reason = stale_reason(worker, self._limits, now, check_rss=check_rss)
            if reason is not None:
                self._slots[index] = self._new_worker()
                worker.closed = True
                evicted.append((worker, reason))
        if evicted:
            self._cond.notify_all()
        for worker, reason in evicted:
            self._on_retire(worker, reason)
        return [worker for worker, _ in evicted]

    def reap(self) -> None:
        """Periodic cleanup, so idle workers go even when no fetch arrives."""
        with self._cond:
            retired = self._evict_stale_locked(check_rss=True)
        close_workers(retired)

    def detach_idle(self, worker: Worker) -> bool:
        """Take ``worker`` out of its slot if it is still there and idle (global budget
        eviction). On True the caller owns it (lock held) and must close it."""
        with self._cond:
            if worker not in self._slots or not worker.lock.acquire(blocking=False):
                return False
            self._slots[self._slots.index(worker)] = self._new_worker()
            worker.closed = True
            self._cond.notify_all()
        self._on_retire(worker, "evicted")
        return True

    def flag_all_closed(self) -> list[Worker]:
        """Credential change: idle workers are detached (returned, to be closed by the
        caller outside any lock); busy ones are flagged and retire on release."""
        with self._cond:
            for worker in self._slots:
                worker.closed = True
            return self._evict_stale_locked()

    def resize(self, size: int, limits: RecycleLimits) -> list[Worker]:
        """Apply a new size / limits; returns idle surplus workers to close (busy surplus
        workers are flagged and retire when released)."""
        with self._cond:
            self._limits = limits
            if size >= len(self._slots):
                self._slots += [self._new_worker() for _ in range(size - len(self._slots))]
                self._cond.notify_all()
                return []
            surplus = self._slots[size:]
            del self._slots[size:]
            return self._detach_locked(surplus)

    def close(self) -> list[Worker]:
        """Stop handing out workers; return the idle ones for the caller to close. Busy
        workers are flagged: their owners retire them on release."""
        with self._cond:
            self._closed = True
            workers, self._slots = self._slots, []
            self._cond.notify_all()
            return self._detach_locked(workers)

    @staticmethod
    def _detach_locked(workers: list[Worker]) -> list[Worker]:
        for worker in workers:
            worker.closed = True
        return [w for w in workers if w.started and not w.lock.locked()]

    def unstarted_slots(self) -> list[Worker]:
        """Claim (lock) every never-started slot, for a background prewarm."""
        with self._cond:
            return [w for w in self._slots if not w.started and not w.closed and w.lock.acquire(blocking=False)]

    def release_many(self, workers: Iterable[Worker]) -> None:
        for worker in workers:
            self.release(worker)

    # -- introspection -------------------------------------------------------------------
    def workers(self) -> list[Worker]:
        with self._cond:
            return list(self._slots)

    def census(self) -> tuple[int, list[Worker]]:
        """(started, not closed workers; the idle ones among them), read in one pass under
        the pool lock: what the global budget needs of each pool, for every slot start."""
        running = 0
        idle = []
        with self._cond:
            for w in self._slots:
                if w.proc is not None and not w.closed:
                    running += 1
                    if not w.lock.locked():
                        idle.append(w)
        return running, idle

    def rows(self) -> list[tuple[Worker, bool, bool]]:
        """(worker, busy, started) per slot, read under the pool lock. ``started`` is read
        here, not later: a slot that starts after this read must not be counted beside a
        budget victim that was still running at it (that would show one worker more than
        the budget ever allowed)."""
        with self._cond:
            return [(w, w.lock.locked(), w.started) for w in self._slots]

    def state(self, rows: list[tuple[Worker, bool, bool]] | None = None) -> dict:
        """The SPEC §9 per-home view of ``rows`` (default: read now); RSS is read outside
        every lock: psutil can be slow."""
        now = time.monotonic()
        rows = self.rows() if rows is None else rows
        workers = [{"pid": w.pid, "busy": busy, "requests": w.requests_served, "rss_mb": w.rss_mb(),
                    "idle_s": None if busy else round(now - w.idle_since, 3)}
                   for w, busy, started in rows if started and not w.exited()]
        return {"slots": len(rows), "alive": len(workers), "busy": sum(1 for w in workers if w["busy"]),
                "workers": workers}

    def _retire(self, retired: list[tuple[Worker, str]]) -> None:
        for worker, reason in retired:
            self._on_retire(worker, reason)
        close_workers(worker for worker, _ in retired)
