"""The bounded cold fallback: a one-shot process when no warm slot is free.

Bounded by a semaphore so that a burst of 500 callers can never fork 500 processes:
callers past ``max_cold_spawns`` wait for a permit within their own deadline, then get
``saturated``. A permit is given back only once its one-shot process has exited, so the
bound counts processes, not callers. Waiting for that exit (a few ms of kernel teardown
after the reply) happens on a small thread pool of the limiter's own, off the caller's path:
the caller has its answer as soon as the reply is read.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


class ColdLimiter:
    def __init__(self, max_concurrent: int) -> None:
        self.max_concurrent = max_concurrent
        self._permits = threading.BoundedSemaphore(max_concurrent) if max_concurrent > 0 else None
        self._retirer: ThreadPoolExecutor | None = None
        self._retirer_lock = threading.Lock()

    def acquire(self, deadline: float) -> bool:
        if self._permits is None:
            return False
        return self._permits.acquire(timeout=max(0.0, deadline - time.monotonic()))

    def release(self) -> None:
        assert self._permits is not None
        self._permits.release()

    def release_after(self, close: Callable[[], None]) -> None:
        """Run ``close`` (it returns once the one-shot has exited) in the background, then
        give the permit back; where no thread can start any more, right here."""
        def retire() -> None:
            try:
                close()
            finally:
                self.release()

        with self._retirer_lock:
            if self._retirer is None:
                self._retirer = ThreadPoolExecutor(self.max_concurrent, thread_name_prefix="probe-cold-retire")
            try:
                self._retirer.submit(retire)
                return
            except RuntimeError:   # shut down (the service is closing)
                pass
        retire()

    def close(self) -> None:
        """Wait until every one-shot handed to :meth:`release_after` is gone."""
        with self._retirer_lock:
            retirer = self._retirer
        if retirer is not None:
            retirer.shutdown(wait=True)
