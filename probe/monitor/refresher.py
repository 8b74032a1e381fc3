"""Background refresh (SPEC §13, §17): every configured home re-read about every
``interval_s``, so the panel, ``/metrics`` and history have fresh data with no client
polling at all.

A home is the unit: each run is one home read (``Reader.fetch_home``, that is
``ProbeService.fetch_home``): the providers the home has a credential for, read by one
worker in one request -- one process start at most per home per interval. A provider the
home has no credential for is never asked for (no fetch, no stats entry); the home's list
comes from its files and is read again when they change, so a credential added later is
picked up on the home's next run.

How it spreads the load: the first pass is spread evenly over one interval (home *i* of
*n* is due at ``(i + ½) / n`` intervals, in a shuffled order), and each next run is due one
interval after the previous *due time* times a random factor in [0.9, 1.1] -- so readings
neither bunch up at start-up nor drift into step with each other later. At most
``concurrency`` (4) homes are read at once; a home whose time came while all runners were
busy waits its turn (late, never doubled).

Every read goes through :class:`probe.monitor.readings.Reader`, that is through the same
``ProbeService`` as everything else: ``refresh=True`` (a refresh never answers itself from
the cache), but coalescing, the rate-limit back-off (a provider in back-off is answered
from its back-off, without a request, until it ends) and the rotation rules all apply.

A failing read -- any exception, RuntimeErrors such as RecursionError or "can't start new
thread" included -- is logged and the home keeps its place in the schedule: only
:meth:`stop` or the service closing ends a runner thread.

Stopping: :meth:`stop` only signals; a read in flight finishes (or ends when the service
closes, which kills its worker); :meth:`join` then waits for every runner thread. ``probe
serve`` calls stop, closes the service, then joins -- a SIGTERM never waits for a hung
provider, and no thread outlives the server.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time

from probe.monitor.readings import Reader

log = logging.getLogger("quota_probe.refresher")

#: at most this many homes read at once
DEFAULT_CONCURRENCY = 4
#: each interval is stretched or shrunk by up to this share
JITTER = 0.10


class Refresher:
    def __init__(self, reader: Reader, interval_s: float, *, concurrency: int = DEFAULT_CONCURRENCY,
                 seed: int | None = None) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.reader = reader
        self.interval_s = interval_s
        self._concurrency = concurrency
        self._rng = random.Random(seed)
        homes = list(reader.homes)
        self._rng.shuffle(homes)
        self._homes = homes
        #: the homes in the schedule (a home the reader stopped serving leaves it when it
        #: comes due; :meth:`sync` adds the reader's new ones)
        self._scheduled = set(homes)
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, str]] = []
        self._order = itertools.count()
        self._stopped = False
        self._threads: list[threading.Thread] = []
        #: home reads run so far (for tests and the benchmark)
        self.runs = 0

    def start(self) -> None:
        start = time.monotonic()
        count = len(self._homes)
        with self._cond:
            for index, home_id in enumerate(self._homes):
                due = start + (index + 0.5) / count * self.interval_s
                heapq.heappush(self._due, (due, next(self._order), home_id))
        self._add_runners(count)

    def _add_runners(self, homes: int) -> None:
        """Runner threads up to one per home, at most ``concurrency``."""
        while len(self._threads) < min(self._concurrency, max(1, homes)):
            thread = threading.Thread(target=self._run, name=f"probe-refresher-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def sync(self) -> None:
        """Schedule the homes the reader serves now and the schedule lacks (profiles found
        since, homes a reload added), their first reads spread over one interval; a home no
        longer served drops out when it comes due. Nothing already scheduled moves."""
        now = time.monotonic()
        with self._cond:
            if self._stopped:
                return
            new = [home_id for home_id in self.reader.homes if home_id not in self._scheduled]
            self._rng.shuffle(new)
            for index, home_id in enumerate(new):
                heapq.heappush(self._due, (now + (index + 0.5) / len(new) * self.interval_s, next(self._order), home_id))
                self._scheduled.add(home_id)
            count = len(self._scheduled)
            self._cond.notify_all()
        if self._threads:
            self._add_runners(count)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def join(self, timeout_s: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout_s)

    def __enter__(self) -> "Refresher":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.join()

    def _take(self) -> tuple[float, str] | None:
        """The next home once it is due; None when stopped."""
        with self._cond:
            while not self._stopped:
                if self._due:
                    wait_s = self._due[0][0] - time.monotonic()
                    if wait_s <= 0:
                        due, _, home_id = heapq.heappop(self._due)
                        return due, home_id
                else:
                    wait_s = None
                self._cond.wait(wait_s)
            return None

    def _ending(self) -> bool:
        """Only this ends a runner: :meth:`stop`, or the service closing under it (a read
        then raises RuntimeError) -- never the type of an exception a read raised."""
        with self._cond:
            if self._stopped:
                return True
        return self.reader.service.closed

    def _run(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            due, home_id = taken
            if home_id not in self.reader.homes:     # a profile removed, a reload dropped it
                with self._cond:
                    self._scheduled.discard(home_id)
                continue
            try:
                self.reader.fetch_home(home_id, refresh=True)
            except Exception:  # noqa: BLE001 -- one bad home must not stop the refresher
                if self._ending():
                    return
                # RecursionError, "can't start new thread" (RuntimeErrors both) or a bug: the
                # home keeps its place in the schedule and is read again at its next turn
                log.exception("refreshing home %s failed", home_id)
            with self._cond:
                self.runs += 1
                period = self.interval_s * self._rng.uniform(1 - JITTER, 1 + JITTER)
                heapq.heappush(self._due, (max(due + period, time.monotonic()), next(self._order), home_id))
                self._cond.notify()
