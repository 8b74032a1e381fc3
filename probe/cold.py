"""The bounded cold fallback: a one-shot process when no warm slot is free.

Bounded by a semaphore so that a burst of 500 callers can never fork 500 processes:
callers past ``max_cold_spawns`` wait for a permit within their own deadline, then get
``saturated``.
"""
from __future__ import annotations

import threading
import time


class ColdLimiter:
    def __init__(self, max_concurrent: int) -> None:
        self.max_concurrent = max_concurrent
        self._permits = threading.BoundedSemaphore(max_concurrent) if max_concurrent > 0 else None

    def acquire(self, deadline: float) -> bool:
        if self._permits is None:
            return False
        return self._permits.acquire(timeout=max(0.0, deadline - time.monotonic()))

    def release(self) -> None:
        assert self._permits is not None
        self._permits.release()
