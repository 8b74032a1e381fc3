"""Identical concurrent fetches share one probe.

"Identical" means same home, provider *and* rotation generation: a caller that arrives after
an invalidation never joins a probe started before it. (A provider's credential change is
such a rotation -- ``probe.digests`` -- so the generation covers the credentials too.)
"""
from __future__ import annotations

import threading
from collections.abc import Hashable

from probe.snapshot import Snapshot


class Call:
    def __init__(self) -> None:
        self._done = threading.Event()
        self.result: Snapshot | None = None

    def wait(self, timeout_s: float) -> Snapshot | None:
        """The leader's snapshot, or None if it did not finish in time or failed to produce one."""
        self._done.wait(max(0.0, timeout_s))
        return self.result

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def finish(self, result: Snapshot | None) -> None:
        self.result = result
        self._done.set()


class InFlight:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Hashable, Call] = {}

    def join(self, key: Hashable) -> tuple[Call, bool]:
        """(call, is_leader). The leader must call :meth:`done` in a ``finally``."""
        with self._lock:
            call = self._calls.get(key)
            if call is not None:
                return call, False
            call = self._calls[key] = Call()
            return call, True

    def done(self, key: Hashable, call: Call, result: Snapshot | None) -> None:
        with self._lock:
            if self._calls.get(key) is call:
                del self._calls[key]
        call.finish(result)
