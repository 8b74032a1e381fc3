"""Which of a home's providers a change of its files rotates (SPEC §6): each provider's
last known credential digest, per home.

The stat fingerprint (``probe.homes.credential_fingerprint``) is the cheap trigger: when it
changed, one worker of the home lists the home again and sends each provider's digest
(``workers.digest``: hashes of what identifies its credentials, never a value). Only a
provider whose digest changed is rotated. Hermes' bookkeeping writes to ``auth.json``
(``request_count``, ``last_status_at``, ``priority`` reshuffles, refreshed timestamps) change
no digest, so they rotate nothing, drop no cache entry and restart no worker.

The digest is also the third part of a snapshot's cache key (the local cache's key, and
stored with each shared disk-cache entry), so an entry is tied to the credentials it was
read with, not to a version of the files: a bookkeeping write keeps every entry reachable, a real change makes
the old entry unreachable everywhere -- in another process sharing the disk cache too,
however late that process notices.

Rules of :meth:`CredentialDigests.apply`:

* a provider that appears, disappears, or whose digest differs is *changed*;
* ``None`` (a file its places read is unreadable) is "unknown": no change, and the last
  known digest is kept -- its last good reading survives as stale, and a restored file with
  the same token is no change either. While any digest is unknown, a provider missing from
  the listing is unknown too, not removed: the unreadable file may be what hides it (a
  pool-only id lives only in ``auth.json``);
* a home never listed before has no digests to compare: this service only knew its stat
  (:meth:`seen`, from single fetches, whose cache entries are keyed by that stat). If the
  stat is still the one it saw, nothing rotates and those entries are *adopted* (re-keyed by
  the digests: they were read from these very files); if it changed, every provider rotates
  (what changed cannot be told).

The provider's back-off is not keyed by the digest (it is per (home, provider)): a rotation
forgets it, a bookkeeping write does not (nor does the first listing of a home).
"""
from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: :meth:`CredentialDigests.apply`'s answer when every provider of the home must rotate
EVERY_PROVIDER = None


@dataclass(frozen=True)
class Applied:
    """What a new listing's digests mean for the home's state."""

    #: the providers to rotate (EVERY_PROVIDER: all of them)
    rotate: frozenset[str] | None
    #: the key part of cache entries made before the home was listed, for these same files:
    #: they now belong under the providers' digests (``SnapshotCache.rekey``)
    adopt: object = None


class CredentialDigests:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: home -> provider -> last known digest (providers without a credential absent)
        self._homes: dict[str, dict[str, str]] = {}
        #: home -> the first stat seen, for homes not listed yet
        self._seen: dict[str, tuple] = {}
        #: home -> the stat its digests were last read for
        self._read_for: dict[str, tuple] = {}

    def key_part(self, home: Path, provider: str, fingerprint: tuple) -> object:
        """The third part of the (home, provider, ...) cache key: the provider's digest once
        the home was listed (None: it has no credential there), else the stat itself -- an
        unlisted home's entries are tied to its files, as before digests."""
        with self._lock:
            digests = self._homes.get(str(home))
        if digests is None:
            return ("stat", fingerprint)
        return digests.get(provider)

    def read_for(self, home: Path, fingerprint: tuple) -> bool:
        """True when the home's digests were last read for these very files: no change to
        look for. (Unlike the home's list, no racy-timestamp re-read: a same-size rewrite
        within one timestamp tick is the documented limit of stat-based detection, and the
        next home read, which re-reads a list that young anyway, notices it.)"""
        with self._lock:
            return self._read_for.get(str(home)) == fingerprint

    def seen(self, home: Path, fingerprint: tuple) -> bool:
        """For a home never listed: True while its stat is the first one seen (which is
        recorded now if there was none), so a single fetch need not ask a worker."""
        with self._lock:
            if str(home) in self._homes:
                return False
            return self._seen.setdefault(str(home), fingerprint) == fingerprint

    def apply(self, home: Path, fingerprint: tuple, digests: Mapping[str, str | None]) -> Applied:
        """Take a listing's ``digests`` (read for the files at ``fingerprint``) as the home's
        current ones: which providers to rotate. The caller holds the home's rotation
        lock, so two listings of one home are applied one at a time."""
        name = str(home)
        with self._lock:
            self._read_for[name] = fingerprint
            previous = self._homes.get(name)
            seen = self._seen.pop(name, None)
            if previous is None:
                self._homes[name] = {p: d for p, d in digests.items() if d is not None}
                if seen is not None and seen != fingerprint:
                    return Applied(EVERY_PROVIDER)
                return Applied(frozenset(), None if seen is None else ("stat", seen))
            current = dict(previous)
            changed = set()
            missing_is_unknown = None in digests.values()
            for provider in previous.keys() | digests.keys():
                digest = digests.get(provider, None if missing_is_unknown else "")
                if digest is None:
                    continue        # unknown: keep the last known digest
                if digest != previous.get(provider, ""):
                    changed.add(provider)
                if digest:
                    current[provider] = digest
                else:
                    current.pop(provider, None)
            self._homes[name] = current
            return Applied(frozenset(changed))
