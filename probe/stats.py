"""Service counters (SPEC §9). One lock; every write goes through it, so a reader taking a
snapshot for /api/pool never races a half-applied update."""
from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from probe.snapshot import PATHS


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fetches: Counter[str] = Counter(dict.fromkeys(PATHS, 0))
        self._errors: Counter[str] = Counter()
        self._events: Counter[str] = Counter(spawns=0, kills=0, recycles=0, provider_lists=0, home_reads=0,
                                              credential_rotations=0)

    def fetched(self, path: str, error_code: str | None) -> None:
        with self._lock:
            self._fetches[path] += 1
            if error_code:
                self._errors[error_code] += 1

    def count(self, event: str, n: int = 1) -> None:
        with self._lock:
            self._events[event] += n

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "fetches": dict(self._fetches),
                "errors": dict(self._errors),
                **dict(self._events),
            }
