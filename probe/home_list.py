"""A home's provider list (SPEC §17), as the parent knows it: asked of one of the home's
workers (``{"op": "providers"}``, ``workers.listing``) and kept with the home's credential
fingerprint, so it is asked again only when the home's ``.env`` or ``auth.json`` changed.

Names and hashes only ever cross the pipe -- the worker decides from the files, the parent
never reads them. What the reply may hold is checked here: a list of valid provider names,
the ``pool_only`` and ``undeclared`` subsets of it, and ``digests`` (provider name -> sha256
hex or null, ``probe.digests``), nothing else; anything else is a confused worker
(``bad_response``), never a list a caller sees.

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

A file that cannot be read hides no provider (SPEC §2), yet must not conjure up cards the
home never had. The worker lists every provider with a place in the unreadable file (it
cannot tell which of them the file held) and names them ``unreadable``; the parent keeps,
per home, the last list read with every file readable and narrows such a list to the
providers that list had -- plus, when the pool-only ids could not be read at all
(``pool_only_unreadable``), the pool-only ids it had. Only names are remembered, and
only for the service's lifetime: a service started while a file is unreadable lists what
the worker lists (every provider with a place in the file; no pool-only ids).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
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
    #: listed only because a file holding one of their places could not be read
    unreadable: frozenset[str] = frozenset()
    #: ``auth.json``'s ``credential_pool`` could not be read: the pool-only ids are unknown
    pool_only_unreadable: bool = False
    #: each provider's credential digest (``workers.digest``; None: unknown); a provider
    #: absent here has no credential in the home
    digests: Mapping[str, str | None] = field(default_factory=dict, compare=False)

    def left_out(self, snap: Snapshot) -> bool:
        """Whether a home read leaves this answer out (SPEC §16): a plugin that declares no
        ``CREDENTIALS`` and answered ``no_credentials``."""
        return snap.provider in self.undeclared and snap.error is not None and snap.error.code == "no_credentials"

    def without(self, names: frozenset[str]) -> "HomeProviders":
        return replace(self, names=tuple(n for n in self.names if n not in names),
                       pool_only=self.pool_only - names, undeclared=self.undeclared - names,
                       unreadable=self.unreadable - names)

    @property
    def readable(self) -> bool:
        return not self.unreadable and not self.pool_only_unreadable

    def as_before(self, last: "HomeProviders") -> "HomeProviders":
        """This list (read while a file was unreadable) narrowed to what ``last`` (read
        with every file readable) had: an ``unreadable`` name stays only if ``last`` listed
        it, and ``last``'s pool-only ids come back (after the rest, by name: SPEC §17's
        order) when the pool-only ids could not be read."""
        names = [name for name in self.names if name not in self.unreadable or name in last.names]
        back = sorted(last.pool_only - set(names)) if self.pool_only_unreadable else []
        return replace(self, names=(*names, *back), pool_only=self.pool_only | frozenset(back),
                       unreadable=(self.unreadable & frozenset(names)) | frozenset(back))


def parse_listing(reply: dict[str, Any]) -> HomeProviders:
    """The ``providers`` reply of a worker; WorkerProtocolError for any other shape."""
    names, pool_only, undeclared = reply.get("providers"), reply.get("pool_only"), reply.get("undeclared", [])
    unreadable, pool_unknown = reply.get("unreadable", []), reply.get("pool_only_unreadable", False)
    if not all(isinstance(part, list) for part in (names, pool_only, undeclared, unreadable)) \
            or len(names) > MAX_LISTED or not isinstance(pool_unknown, bool):
        raise WorkerProtocolError("The worker sent a malformed provider list.")
    if not all(isinstance(name, str) for name in (*names, *pool_only, *undeclared, *unreadable)):   # before any set()
        raise WorkerProtocolError("The worker sent a malformed provider list.")
    if not all(NAME_PATTERN.fullmatch(name) for name in names) \
            or len(set(names)) != len(names) or not set(pool_only) | set(undeclared) | set(unreadable) <= set(names):
        raise WorkerProtocolError("The worker sent a malformed provider list.")
    digests = reply.get("digests")
    if digests is None:   # a worker that sends none knows nothing: every listed one unknown
        digests = dict.fromkeys(names)
    if not isinstance(digests, dict) or len(digests) > MAX_LISTED \
            or not all(NAME_PATTERN.fullmatch(name) and (value is None or _is_digest(value))
                       for name, value in digests.items()):
        raise WorkerProtocolError("The worker sent malformed credential digests.")
    return HomeProviders(tuple(names), frozenset(pool_only), frozenset(undeclared), unreadable=frozenset(unreadable),
                         pool_only_unreadable=pool_unknown, digests=digests)


def _is_digest(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


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
        #: per home, the last list read with every file readable (its names are what counts;
        #: kept across ``forget``, which a rotation calls: see the module docstring)
        self._last_readable: dict[str, HomeProviders] = {}

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
        name = str(home)
        listing = replace(listing, fingerprint=fingerprint)
        with self._lock:
            if listing.readable:
                self._last_readable[name] = listing
            elif name in self._last_readable:
                listing = listing.as_before(self._last_readable[name])
            self._entries[name] = _Entry(fingerprint, listing, stat_is_settled(fingerprint, now_ns))
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
