"""Background refresh (SPEC §13): every configured (home id, provider) re-read about every
``interval_s``, so the panel, ``/metrics`` and history have fresh data with no client
polling at all.

How it spreads the load: the first pass is spread evenly over one interval (entry *i* of
*n* is due at ``(i + ½) / n`` intervals, in a shuffled order so one home's providers are
not probed back to back), and each next run is due one interval after the previous *due
time* times a random factor in [0.9, 1.1] -- so readings neither bunch up at start-up nor
drift into step with each other later. At most ``concurrency`` (4) probes run at once; an
entry whose time came while all runners were busy waits its turn (late, never doubled).

Every read goes through :class:`probe.monitor.readings.Reader`, that is through the same
``ProbeService`` as everything else: ``refresh=True`` (a refresh never answers itself from
the cache), but coalescing, the rate-limit back-off (a provider in back-off is answered
from its back-off, without a request, until it ends) and the rotation rules all apply. A
provider whose last answer was ``no_credentials`` is read with ``refresh=False``: the
cached definitive answer stands until the home's credential files change (which rotates
the home and drops it), so a home without that provider costs no process per interval.

Stopping: :meth:`stop` only signals; a probe in flight finishes (or ends when the service
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
from collections.abc import Iterable

from probe.monitor.readings import Reader
from workers.providers import provider_names

log = logging.getLogger("quota_probe.refresher")

#: at most this many refresh probes at once
DEFAULT_CONCURRENCY = 4
#: each interval is stretched or shrunk by up to this share
JITTER = 0.10


class Refresher:
    def __init__(self, reader: Reader, interval_s: float, *, concurrency: int = DEFAULT_CONCURRENCY,
                 providers: Iterable[str] | None = None, seed: int | None = None) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.reader = reader
        self.interval_s = interval_s
        self._concurrency = concurrency
        self._rng = random.Random(seed)
        names = provider_names() if providers is None else tuple(providers)
        entries = [(home_id, provider) for home_id in reader.homes for provider in names]
        self._rng.shuffle(entries)
        self._entries = entries
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, str, str]] = []
        self._order = itertools.count()
        self._no_credentials: set[tuple[str, str]] = set()
        self._stopped = False
        self._threads: list[threading.Thread] = []
        #: probes run so far (for tests and the benchmark)
        self.runs = 0

    def start(self) -> None:
        start = time.monotonic()
        count = len(self._entries)
        with self._cond:
            for index, (home_id, provider) in enumerate(self._entries):
                due = start + (index + 0.5) / count * self.interval_s
                heapq.heappush(self._due, (due, next(self._order), home_id, provider))
        self._threads = [threading.Thread(target=self._run, name=f"probe-refresher-{i}", daemon=True)
                         for i in range(min(self._concurrency, max(1, count)))]
        for thread in self._threads:
            thread.start()

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

    def _take(self) -> tuple[float, str, str] | None:
        """The next entry once it is due; None when stopped."""
        with self._cond:
            while not self._stopped:
                if self._due:
                    wait_s = self._due[0][0] - time.monotonic()
                    if wait_s <= 0:
                        due, _, home_id, provider = heapq.heappop(self._due)
                        return due, home_id, provider
                else:
                    wait_s = None
                self._cond.wait(wait_s)
            return None

    def _run(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            due, home_id, provider = taken
            key = (home_id, provider)
            try:
                snap = self.reader.fetch(home_id, provider, refresh=key not in self._no_credentials)
            except RuntimeError:   # the service closed under us: we are being stopped
                return
            except Exception:  # noqa: BLE001 -- one bad entry must not stop the refresher
                log.exception("refreshing %s/%s failed", home_id, provider)
                snap = None
            with self._cond:
                self.runs += 1
                if snap is not None and snap.error is not None and snap.error.code == "no_credentials":
                    self._no_credentials.add(key)
                else:
                    self._no_credentials.discard(key)
                period = self.interval_s * self._rng.uniform(1 - JITTER, 1 + JITTER)
                heapq.heappush(self._due, (max(due + period, time.monotonic()), next(self._order), home_id, provider))
                self._cond.notify()
