"""All homes' pools together: the registry, the global worker budget and the reaper.

Lock order, to rule out deadlocks: ``_budget_lock`` may be held while taking a pool's
condition; no code holds a pool's condition while taking a registry lock. No registry
lock is ever held while a process is being closed.

**The budget looks only at pools that may hold a process.** With 1,000 homes and
``max_total_workers=64`` nearly every slot start first counts the running workers and
then looks for the least recently used idle one. Asking every pool (a condition each)
cost ~2 ms of CPU per start, more than the parent's whole share of the fork floor. So
the registry keeps ``_active``: every pool a slot worker was started in, dropped again by
a count that finds it empty. A pool can only gain a running worker through
:meth:`PoolRegistry.start`, which puts it (back) in ``_active`` under the budget lock once
its worker started; until then that start is counted as pending. So every pool with a
running worker is in ``_active`` whenever the budget lock is free, and a count over
``_active`` is the count over all pools.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from probe.pool.pool import HomePool, RecycleLimits, close_workers
from probe.pool.spawner import Spawner, SpawnerClosed
from probe.pool.worker import Worker, WorkerFailed

log = logging.getLogger("probe.pool")

#: the reaper wakes at most this often, however long idle_s is
REAP_INTERVAL_MAX_S = 5.0


class PoolRegistry:
    def __init__(self, *, pool_size: int, max_total_workers: int, limits: RecycleLimits, prewarm: bool,
                 spawner: Spawner, env_for: Callable[[Path], dict[str, str]],
                 on_retire: Callable[[Worker, str], None], on_spawn: Callable[[Worker], None]) -> None:
        self._pool_size = pool_size
        self._max_total = max_total_workers
        self._limits = limits
        self._prewarm = prewarm
        self._spawner = spawner
        self._env_for = env_for
        self._on_retire = on_retire
        self._on_spawn = on_spawn
        self._pools: dict[Path, HomePool] = {}
        self._pools_lock = threading.Lock()
        self._budget_lock = threading.Lock()
        self._pending_starts = 0
        #: pools that may hold a started worker (a superset); under ``_budget_lock``
        self._active: dict[HomePool, None] = {}
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    # -- pools ---------------------------------------------------------------------------
    def pool(self, home: Path) -> HomePool:
        """The home's pool, created on first use. A pool is fully built before it is
        published in the dict, so a concurrent reader sees either no pool or a whole one."""
        pool = self._pools.get(home)
        if pool is not None:
            return pool
        with self._pools_lock:
            pool = self._pools.get(home)
            if pool is None:
                env = self._env_for(home)
                pool = HomePool(home, self._pool_size, lambda: Worker(home, env, self._spawner),
                                self._limits, lambda worker, reason: self._retired(home, worker, reason))
                self._pools[home] = pool
                self._ensure_reaper()
        if self._prewarm:
            self.prewarm(pool)
        return pool

    def _retired(self, home: Path, worker: Worker, reason: str) -> None:
        """A pool dropped a worker (its slot already holds a fresh one). Called under that
        pool's lock, so this only counts and queues. With prewarm, a worker replaced because
        it broke, was rotated or wore out is restarted on the spawner thread right away; one
        that went for being idle or for the global budget is not (restarting it would undo
        the very point of closing it)."""
        self._on_retire(worker, reason)
        pool = self._pools.get(home)
        if self._prewarm and pool is not None and reason not in ("idle", "evicted"):
            self.prewarm(pool)

    def pools(self) -> dict[Path, HomePool]:
        with self._pools_lock:
            return dict(self._pools)

    def remove(self, home: Path) -> None:
        """Forget a home the backend stopped serving: its pool leaves the registry (a
        backend whose profiles come and go would otherwise keep one empty pool per profile
        ever served) and its idle workers close, outside every lock. A busy worker is
        flagged and retires when its caller releases it; a caller that still holds the old
        pool finds it closed and goes cold. The pool stays in the budget's ``_active``
        until a count finds it empty (it may still hold a busy worker)."""
        with self._pools_lock:
            pool = self._pools.pop(home, None)
        if pool is not None:
            close_workers(pool.close())

    # -- the global budget ---------------------------------------------------------------
    def start(self, worker: Worker, deadline: float | None = None) -> bool:
        """Start a claimed, never-started worker unless that would exceed
        ``max_total_workers``; to stay under it, close the least recently used idle worker
        of any home first. False when every running worker is busy (caller goes cold).
        ``deadline``: the caller's (``Worker.start``)."""
        victim = None
        with self._budget_lock:
            running, idle = self._census_locked()
            if running + self._pending_starts >= self._max_total:
                victim = self._detach_least_recently_used(idle)
                if victim is None:
                    return False
            self._pending_starts += 1
        try:
            if victim is not None:
                victim.close()  # before ours starts: the process count never exceeds the cap
            worker.start(deadline)
            self._on_spawn(worker)
            return True
        finally:
            with self._budget_lock:
                self._pending_starts -= 1
                pool = self._pools.get(worker.home)
                if worker.started and pool is not None:
                    self._active[pool] = None

    def _census_locked(self) -> tuple[int, list[tuple[HomePool, Worker]]]:
        """Started, not closed slot workers over every pool (see the module docstring) and
        the idle ones among them with their pools, forgetting the pools that have none.
        Under ``_budget_lock``."""
        running = 0
        idle: list[tuple[HomePool, Worker]] = []
        for pool in list(self._active):
            count, free = pool.census()
            if count:
                running += count
                idle += [(pool, w) for w in free]
            else:
                del self._active[pool]
        return running, idle

    def _detach_least_recently_used(self, idle: list[tuple[HomePool, Worker]]) -> Worker | None:
        for pool, worker in sorted(idle, key=lambda c: c[1].idle_since):
            if pool.detach_idle(worker):
                return worker
        return None

    def prewarm(self, pool: HomePool) -> None:
        """Start the pool's empty slots on the spawner thread, so the next caller finds a
        running process instead of paying for one."""
        def warm() -> None:
            slots = pool.unstarted_slots()
            try:
                for worker in slots:
                    if not self.start(worker):
                        break
            except WorkerFailed:
                pass
            finally:
                pool.release_many(slots)
        try:
            self._spawner.submit(warm)
        except SpawnerClosed:
            pass

    # -- housekeeping --------------------------------------------------------------------
    def _ensure_reaper(self) -> None:
        if self._reaper is None and not self._stop.is_set():
            self._reaper = threading.Thread(target=self._reap_loop, name="probe-reaper", daemon=True)
            self._reaper.start()

    def _reap_loop(self) -> None:
        """Until the registry closes -- and only then: a pass that raised (a bug, "can't
        start new thread") is logged, and the next pass runs as usual; a dead reaper would
        leave idle and oversized workers running until some claim happened by."""
        while not self._stop.wait(self.reap_interval_s()):
            for pool in self.pools().values():
                try:
                    pool.reap()
                except Exception:  # noqa: BLE001 -- see the docstring
                    log.exception("cleaning up the pool of a home failed; trying again at the next pass")

    def reap_interval_s(self) -> float:
        return min(REAP_INTERVAL_MAX_S, max(0.05, self._limits.idle_s / 2))

    def flush(self, home: Path | None) -> None:
        """Close one home's workers (all homes when None): idle ones now, outside every
        lock; busy ones are flagged and retire when their caller releases them."""
        targets = self.pools().values() if home is None else [p for h, p in self.pools().items() if h == home]
        idle = [w for pool in targets for w in pool.flag_all_closed()]
        close_workers(idle)

    def reconfigure(self, *, pool_size: int, max_total_workers: int, limits: RecycleLimits, prewarm: bool,
                    env_for: Callable[[Path], dict[str, str]] | None) -> list[Worker]:
        """Apply changed settings, touching only what depends on them: a new ``env_for``
        (base URLs changed) flushes every pool; a size change resizes; limits apply at the
        next cleanup. Returns the idle workers this retired, for the caller to close once
        it holds no lock of its own (``close_workers``)."""
        self._max_total = max_total_workers
        self._prewarm = prewarm
        self._limits = limits
        self._pool_size = pool_size
        to_close: list[Worker] = []
        if env_for is not None:
            with self._pools_lock:
                self._env_for = env_for
                old_pools, self._pools = self._pools, {}
            for pool in old_pools.values():
                to_close += pool.close()
        else:
            for pool in self.pools().values():
                to_close += pool.resize(pool_size, limits)
        return to_close

    def close(self) -> None:
        self._stop.set()
        with self._pools_lock:
            pools, self._pools = self._pools, {}
        close_workers(w for pool in pools.values() for w in pool.close())
        if self._reaper is not None and self._reaper is not threading.current_thread():
            self._reaper.join()

    def state(self) -> dict[str, dict]:
        """Every pool's view, read as one snapshot: under the budget lock no worker is
        detached as a budget victim mid-read, so a victim read in one pool and its successor
        read later in another are never both counted (that would show one worker more than
        the budget allows at a moment that never existed). RSS is read after the lock."""
        with self._budget_lock:
            pools = self.pools()
            rows = {home: pool.rows() for home, pool in pools.items()}
        return {str(home): pools[home].state(rows[home]) for home in pools}
