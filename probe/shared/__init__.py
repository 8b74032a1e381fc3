"""Snapshot sharing between backends: one interface, two implementations side by side.

* :class:`probe.shared.disk.DiskCache` -- several processes on one host (SPEC §7): JSON
  files under a file lock, one per (home path, provider), holding the credential digest
  (``probe.digests``) they were read with.
* ``probe.shared.redis`` (cluster mode, SPEC §15) -- several hosts sharing one Redis.

``probe/service.py`` talks to whichever is configured through :class:`SharedCache` only,
handing it the :class:`Fetch` it is serving; each implementation picks the key it needs
from it (the disk cache: path + digest; Redis: the home's cluster id + generation).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from probe.snapshot import Snapshot


@dataclass(frozen=True)
class Fetch:
    """One fetch in progress: what every step of the service's fetch path needs."""
    provider: str
    home: Path
    #: (home path, provider, credential digest): the local cache key (``probe.digests``:
    #: the digest's place holds ``("stat", fingerprint)`` for a home not listed yet)
    key: tuple
    #: the home's rotation generation when the fetch began
    generation: int
    #: ``time.monotonic()`` values
    started: float
    deadline: float
    refresh: bool
    #: accounts the worker is told to skip (their per-account back-off, SPEC §18)
    skip: tuple[str, ...] = ()
    #: cluster mode: the home's cluster generation when the fetch began (None: Redis could
    #: not say). What the fetch shares is stamped with it, never with a later one, so a
    #: probe that began before a rotation is never stored as a post-rotation answer.
    shared_generation: int | None = None
    #: the home's files' stat when the fetch began (``probe.homes.credential_fingerprint``)
    fingerprint: tuple = ()


class SharedCache(Protocol):
    def read(self, fetch: Fetch, *, written_after: float | None = None) -> Snapshot | None:
        """A fresh shared snapshot for this fetch, or None. ``written_after`` (wall clock)
        also demands that it was stored after that moment."""

    def write(self, fetch: Fetch, snap: Snapshot, ttl_s: float) -> None:
        ...

    def probe_lock(self, fetch: Fetch, timeout_s: float) -> contextlib.AbstractContextManager[bool]:
        """Hold the (home, provider) probe lock across backends; yields False when it could
        not be had in time."""

    def drop(self, home: str | None, provider: str | None) -> None:
        """Forget one home's (every home's when None) snapshots for one provider (all)."""
