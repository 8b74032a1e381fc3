"""Rate-limit back-off per (home, provider) (SPEC §8).

Usage endpoints rate-limit hard — Anthropic answers 429 for minutes, sometimes with
``retry-after: 0`` — so after ``rate_limited`` no new provider request is made for that
pair until the back-off expires: 30 s, doubling on each further 429, at least the
provider's Retry-After, at most 10 minutes; a success resets it. Meanwhile the service
serves the last good snapshot marked stale. The clock is injectable for tests.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

FIRST_DELAY_S = 30.0
MAX_DELAY_S = 600.0


@dataclass(frozen=True)
class Blocked:
    until: float
    message: str


def delay_s(consecutive_429: int, retry_after_s: float | None) -> float:
    """Back-off after the n-th consecutive 429 (n >= 1)."""
    exponential = FIRST_DELAY_S * 2 ** min(consecutive_429 - 1, 16)
    return min(MAX_DELAY_S, max(exponential, retry_after_s or 0.0))


class Backoff:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._state: dict[Hashable, tuple[int, float]] = {}   # key -> (consecutive 429s, until)

    def blocked(self, key: Hashable) -> Blocked | None:
        """Whether a probe for ``key`` must not reach the provider now."""
        with self._lock:
            state = self._state.get(key)
        if state is None:
            return None
        remaining_s = state[1] - self._clock()
        if remaining_s <= 0:
            return None
        return Blocked(state[1], f"The provider is rate-limiting this account; next try in {int(remaining_s) + 1} s.")

    def rate_limited(self, key: Hashable, retry_after_s: float | None) -> float:
        """Record a 429; returns the back-off delay chosen."""
        with self._lock:
            count = self._state.get(key, (0, 0.0))[0] + 1
            wait_s = delay_s(count, retry_after_s)
            self._state[key] = (count, self._clock() + wait_s)
        return wait_s

    def succeeded(self, key: Hashable) -> None:
        with self._lock:
            self._state.pop(key, None)

    def forget(self, match: Callable[[Hashable], bool]) -> None:
        """Drop the state of matching keys (credential rotation)."""
        with self._lock:
            for key in [k for k in self._state if match(k)]:
                del self._state[key]
