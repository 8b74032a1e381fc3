"""A home's provider list (SPEC §17), as the parent knows it: asked of one of the home's
workers (``{"op": "providers"}``, ``workers.listing``) and kept with the home's credential
fingerprint, so it is asked again only when the home's ``.env`` or ``auth.json`` changed.

Names only ever cross the pipe -- the worker decides from the files, the parent never
reads them. What the reply may hold is checked here: a list of valid provider names, the
``pool_only`` and ``undeclared`` subsets of it, nothing else; anything else is a confused
worker (``bad_response``), never a list a caller sees.

Why the racy rule: equal stat data proves equal content only once the files are older
than their timestamp tick (``workers.credentials.stat_is_settled``, the rule the worker's
own credential cache follows). A list read sooner than that after a change is used for
that call but asked again next time, so a rewrite within one tick cannot leave a provider
missing from a home until its next change.

Concurrent callers of one home whose list is not known queue on a per-home lock: the
first asks, the rest find its (settled) answer instead of asking again. Lock order: that
lock is taken *before* a worker is claimed (``home_providers``), never while one is held --
a caller that already holds a worker of the home (a home read) asks on it and ``put``s the
answer instead of waiting for the lock, or the two would wait for each other (issue 26 #2).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from probe.snapshot import Snapshot
from probe.pool.worker import WorkerProtocolError
from workers.credentials import stat_is_settled
from workers.plugins import NAME_PATTERN

#: the worker lists the registered providers plus at most 64 pool-only ids
MAX_LISTED = 1024


class HomeListFailed(Exception):
    """The home's list could not be had; ``snapshot`` is the one answer a home-wide read
    gives then (SPEC §17): ``"provider": null`` with ``home_not_found`` -- or, when the
    worker asked could not answer, that failure's code (``timeout``, ``worker_crashed``,
    ``saturated``, ``bad_response``)."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__(snapshot.error.message if snapshot.error else "no provider list")
        self.snapshot = snapshot


@dataclass(frozen=True)
class HomeProviders:
    """Which providers a home has a credential for, in SPEC §17's order."""

    names: tuple[str, ...]
    #: ids with no adapter, read from ``auth.json``'s ``credential_pool`` records
    pool_only: frozenset[str] = frozenset()
    #: plugins that declare no ``CREDENTIALS``: listed until a probe answers ``no_credentials``
    undeclared: frozenset[str] = frozenset()
    #: the home's credential fingerprint this list was read for
    fingerprint: tuple = field(default=(), compare=False)

    def left_out(self, snap: Snapshot) -> bool:
        """Whether a home read leaves this answer out (SPEC §16): a plugin that declares no
        ``CREDENTIALS`` and answered ``no_credentials``."""
        return snap.provider in self.undeclared and snap.error is not None and snap.error.code == "no_credentials"

    def without(self, names: frozenset[str]) -> "HomeProviders":
        return replace(self, names=tuple(n for n in self.names if n not in names),
                       pool_only=self.pool_only - names, undeclared=self.undeclared - names)


def parse_listing(reply: dict[str, Any]) -> HomeProviders:
    """The ``providers`` reply of a worker; WorkerProtocolError for any other shape."""
    names, pool_only, undeclared = reply.get("providers"), reply.get("pool_only"), reply.get("undeclared", [])
    if not all(isinstance(part, list) for part in (names, pool_only, undeclared)) or len(names) > MAX_LISTED:
        raise WorkerProtocolError("The worker sent a malformed provider list.")
    if not all(isinstance(name, str) for name in (*names, *pool_only, *undeclared)):   # before any set()
        raise WorkerProtocolError("The worker sent a malformed provider list.")
    if not all(NAME_PATTERN.fullmatch(name) for name in names) \
            or len(set(names)) != len(names) or not set(pool_only) | set(undeclared) <= set(names):
        raise WorkerProtocolError("The worker sent a malformed provider list.")
    return HomeProviders(tuple(names), frozenset(pool_only), frozenset(undeclared))


@dataclass(frozen=True)
class _Entry:
    fingerprint: tuple
    listing: HomeProviders
    settled: bool


class HomeLists:
    """The cached list per home (resolved path), keyed by credential fingerprint."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._home_locks: dict[str, threading.Lock] = {}

    def get(self, home: Path, fingerprint: tuple, now_ns: int, timeout_s: float,
            ask: Callable[[], HomeProviders]) -> HomeProviders | None:
        """The home's list: the cached one while ``fingerprint`` (taken after ``now_ns``,
        wall clock) is unchanged and settled, else ``ask()``'s answer, stored. None when
        another caller's request for this home did not end within ``timeout_s``.
        Exceptions of ``ask`` propagate (nothing is stored)."""
        name = str(home)
        cached = self._fresh(name, fingerprint)
        if cached is not None:
            return cached
        with self._lock:
            home_lock = self._home_locks.setdefault(name, threading.Lock())
        if not home_lock.acquire(timeout=max(0.0, timeout_s)):
            return None
        try:
            cached = self._fresh(name, fingerprint)
            if cached is not None:
                return cached
            return self.put(home, fingerprint, now_ns, ask())
        finally:
            home_lock.release()

    def put(self, home: Path, fingerprint: tuple, now_ns: int, listing: HomeProviders) -> HomeProviders:
        """Store a list a caller asked for on its own (see :meth:`get` on the rule) and
        return it stamped with ``fingerprint``."""
        listing = replace(listing, fingerprint=fingerprint)
        with self._lock:
            self._entries[str(home)] = _Entry(fingerprint, listing, stat_is_settled(fingerprint, now_ns))
        return listing

    def fresh(self, home: Path, fingerprint: tuple) -> HomeProviders | None:
        """The cached list while it is settled and read for these very files, else None
        (no request is made: the caller asks a worker it has claimed anyway)."""
        return self._fresh(str(home), fingerprint)

    def drop(self, home: Path, listing: HomeProviders, names: frozenset[str]) -> None:
        """Leave ``names`` out of the home's list until its files change (undeclared
        plugins that answered ``no_credentials``) -- only while the stored list was read
        for the same files as ``listing``, so a list of newer files keeps them."""
        with self._lock:
            entry = self._entries.get(str(home))
            if entry is not None and entry.fingerprint == listing.fingerprint:
                self._entries[str(home)] = replace(entry, listing=entry.listing.without(names))

    def forget(self, home: Path | None) -> None:
        """Forget one home's list (every home's with None): a rotation asks again."""
        with self._lock:
            if home is None:
                self._entries.clear()
            else:
                self._entries.pop(str(home), None)

    def _fresh(self, name: str, fingerprint: tuple) -> HomeProviders | None:
        with self._lock:
            entry = self._entries.get(name)
        if entry is not None and entry.settled and entry.fingerprint == fingerprint:
            return entry.listing
        return None
