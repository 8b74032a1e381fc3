"""In-memory TTL cache of snapshots, keyed by (home, provider, credential digest).

The digest in the key (``probe.digests``: what identifies the provider's credentials, or
the files' stat for a home not listed yet) means an answer read with other credentials is
never found under the current ones, while Hermes' bookkeeping writes -- which change the
files' stat, not the digest -- keep every entry. Only answers worth
repeating are stored: available snapshots and definitive account states
(``no_credentials``, ``unauthorized``, ``forbidden``); transient errors never are.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from probe.snapshot import DEFINITIVE_ERRORS, Snapshot

CacheKey = tuple[str, str, object]


def cacheable(snap: Snapshot) -> bool:
    return snap.error is None or snap.error.code in DEFINITIVE_ERRORS


class SnapshotCache:
    """Entries plus each home's rotation *generation*, under one lock.

    They share the lock because the stale-result guard is a compare-and-put: a probe
    remembers the generation it started under, and its result is stored only if no
    invalidation happened since. Checking and storing in two steps would let an
    invalidation slip in between and leave a pre-rotation result in the cache.
    """

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._entries: dict[CacheKey, tuple[float, Snapshot]] = {}
        #: (home, provider) -> the one key of ``_entries`` for it: ``put`` finds the entry a
        #: credential change made unreachable in O(1) (a scan of every entry cost ~0.1 ms
        #: per put with 1,000 homes, once per probe)
        self._current: dict[tuple[str, str], CacheKey] = {}
        #: entries :meth:`expire` ended early -> the expiry they had (:meth:`revive`)
        self._held: dict[CacheKey, float] = {}
        #: per-home invalidation counts; a flush of everything bumps ``_epoch`` instead, so
        #: it also covers homes this cache has never seen (a probe in flight for one of them
        #: must not store its result either). A home's generation is the sum of the two.
        self._generations: dict[str, int] = {}
        self._epoch = 0

    def generation(self, home: Path | str) -> int:
        with self._lock:
            return self._generation_locked(str(home))

    def _generation_locked(self, home: str) -> int:
        return self._epoch + self._generations.get(home, 0)

    def get(self, key: CacheKey) -> Snapshot | None:
        """A snapshot younger than the TTL, or None."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]

    def last_good(self, key: CacheKey, generation: int) -> Snapshot | None:
        """The latest *available* snapshot for ``key``, however old, if the home was not
        rotated since ``generation``: what a settings panel should keep showing (marked
        stale) while the provider is rate-limiting or failing transiently."""
        with self._lock:
            if self._generation_locked(key[0]) != generation:
                return None
            entry = self._entries.get(key)
        if entry is None or entry[1].error is not None or not entry[1].available:
            return None
        return entry[1]

    def put(self, key: CacheKey, snap: Snapshot, generation: int) -> bool:
        """Store ``snap`` if it is worth caching and its home is still at ``generation``."""
        if not cacheable(snap):
            return False
        with self._lock:
            if self._generation_locked(key[0]) != generation:
                return False
            # Entries are kept past their TTL (for last_good), so forget the ones a
            # credential change made unreachable: same home and provider, old digest.
            old = self._current.get(key[:2])
            if old is not None and old != key:
                del self._entries[old]
            self._current[key[:2]] = key
            self._entries[key] = (time.monotonic() + self.ttl_s, snap)
            self._held.pop(key, None)
            return True

    def rekey(self, home: Path, part: object, new_part: Callable[[str], object]) -> None:
        """Move the home's entries whose key ends in ``part`` to ``(home, provider,
        new_part(provider))`` -- the same answers, known by another name
        (``probe.digests``: a home's first listing adopts what single fetches stored)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == str(home) and k[2] == part]:
                moved = (key[0], key[1], new_part(key[1]))
                self._entries[moved] = self._entries.pop(key)
                self._current[key[:2]] = moved
                if key in self._held:
                    self._held[moved] = self._held.pop(key)

    def expire(self, home: Path, providers: Iterable[str]) -> None:
        """End the freshness of ``home``'s entries for ``providers`` now, keeping them for
        :meth:`last_good`: a provider whose credential a now-unreadable file holds (the
        worker's ``unreadable``) must be seen at the next read -- the last good reading,
        stale, with ``credentials_unreadable`` (SPEC §2) -- not hidden by a fresh-looking
        cache entry until the TTL runs out. Nothing rotates: no generation bump."""
        names = set(providers)
        if not names:   # the usual list read: no scan of every home's entries under the lock
            return
        with self._lock:
            for key in [k for k in self._entries if k[0] == str(home) and k[1] in names]:
                expires, snap = self._entries[key]
                self._held.setdefault(key, expires)
                self._entries[key] = (0.0, snap)

    def revive(self, home: Path, providers: Iterable[str]) -> None:
        """Give ``home``'s entries for ``providers`` that :meth:`expire` ended back the
        expiry they had: the file is readable again with the same credentials (\"the same
        file back is no change\"), so what was cached before it broke still answers."""
        names = set(providers)
        with self._lock:
            if not self._held:   # nothing was expired: nothing to give back
                return
            for key in [k for k in self._held if k[0] == str(home) and k[1] in names]:
                expires = self._held.pop(key)
                if key in self._entries:
                    self._entries[key] = (expires, self._entries[key][1])

    def invalidate(self, home: Path | None = None, provider: str | None = None) -> None:
        """Bump the home's generation (every home's when None) and forget its entries for
        ``provider`` (all providers when None)."""
        with self._lock:
            if home is None:
                self._epoch += 1
            else:
                self._generations[str(home)] = self._generations.get(str(home), 0) + 1
            for key in [k for k in self._entries
                        if (home is None or k[0] == str(home)) and (provider is None or k[1] == provider)]:
                del self._entries[key]
                del self._current[key[:2]]
                self._held.pop(key, None)
