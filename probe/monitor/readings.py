"""The backend's latest reading per (home id, provider): what the panel, ``/metrics`` and
(later) history read between probes, so none of them ever calls a provider on its own.

Why a store of its own and not the service's cache: the cache forgets an entry after
``cache_ttl_s`` (45 s), while the background refresher re-reads every ``refresh_s`` (300 s);
a scrape or a panel poll in between must still find the last reading, and must not turn
into a provider request.

A reading is kept with the home's rotation generation as the service saw it *before* the
fetch began. :meth:`get` answers only while the home is still in that generation, so a
reading taken before a credential change -- even one that finished after it -- is never
shown as the current account's. History and alerts take the same guard at write time
(:meth:`Reader._recorded`): what they keep is kept for good.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from probe.home_list import HomeListFailed
from probe.snapshot import ProbeInfo, Snapshot

if TYPE_CHECKING:
    from collections.abc import Collection

    from probe.monitor.history import History
    from probe.service import ProbeService


@dataclass(frozen=True)
class Reading:
    home_id: str
    snapshot: Snapshot
    generation: int


class Readings:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[tuple[str, str], Reading] = {}

    def record(self, home_id: str, snapshot: Snapshot, generation: int) -> None:
        """Keep ``snapshot`` unless a reading of a newer generation is already there."""
        key = (home_id, snapshot.provider)
        with self._lock:
            current = self._latest.get(key)
            if current is None or current.generation <= generation:
                self._latest[key] = Reading(home_id, snapshot, generation)

    def get(self, home_id: str, provider: str, generation: int) -> Snapshot | None:
        with self._lock:
            reading = self._latest.get((home_id, provider))
        return reading.snapshot if reading is not None and reading.generation == generation else None

    def current(self, generation_of: "dict[str, int]") -> list[Reading]:
        """Every reading whose home is still in the generation it was taken in (homes
        missing from ``generation_of`` are left out)."""
        with self._lock:
            readings = list(self._latest.values())
        return [r for r in readings if generation_of.get(r.home_id) == r.generation]

    def forget(self, home_id: str) -> None:
        """Drop a home's readings: the backend stopped serving it (a profile removed, a
        reload), and an id served again later must not show the old directory's quota."""
        with self._lock:
            self._latest = {key: reading for key, reading in self._latest.items() if key[0] != home_id}


class Reader:
    """The one way the backend reads a home's quota: through the service, recording each
    result in :class:`Readings` under the generation seen before the fetch began. The HTTP
    handlers and the background refresher both read through here, so the panel, metrics and
    refresher agree on what "the latest reading" is."""

    def __init__(self, service: "ProbeService", homes: dict[str, Path], readings: Readings | None = None,
                 history: "History | None" = None) -> None:
        self.service = service
        self.homes = homes
        self.readings = readings or Readings()
        self.history = history

    def fetch(self, home_id: str, provider: str, *, refresh: bool, home: Path | None = None) -> Snapshot:
        """A fetch through the service (cache, coalescing and back-off rules apply). With
        history, the pace is projected from recent points and the reading is queued for the
        history writer (a queue put: the fetch never waits for the disk).

        ``home``: the id's directory as the caller found it (:meth:`_directory`)."""
        home = self._directory(home_id, home)
        if home is None:
            return _unserved(provider, home_id)
        generation = self.service.generation(home)
        snap = self.service.fetch(provider, home=home, refresh=refresh)
        return self._recorded(home_id, home, snap, generation, self._unrotated(home, generation))

    def fetch_home(self, home_id: str, *, refresh: bool, providers: "Collection[str] | None" = None,
                   home: Path | None = None) -> list[Snapshot]:
        """A home read through the service (``ProbeService.fetch_home``: one worker
        request for whatever needs a probe), each provider's answer recorded exactly as
        :meth:`fetch` records one. The one snapshot of a home that could not be listed
        (``"provider": null``) is answered, not recorded: it is no provider's reading."""
        home = self._directory(home_id, home)
        if home is None:
            return [_unserved(None, home_id)]
        generation = self.service.generation(home)
        snaps = self.service.fetch_home(home=home, refresh=refresh, providers=providers)
        unrotated = self._unrotated(home, generation)
        return [self._recorded(home_id, home, snap, generation, unrotated) if snap.provider is not None else snap
                for snap in snaps]

    def read_home(self, home_id: str, *, refresh: bool, from_readings: bool,
                  home: Path | None = None) -> list[Snapshot]:
        """What the panel shows for a home: with ``from_readings`` (a background refresher
        keeps them) the latest reading of each listed provider, and one home read for the
        ones that have none -- a pool-only id always among them: the refresher's reading of
        Hermes' records may be an interval old, while the service's cache (one worker
        request per ``cache_ttl_s``, no provider request) keeps its exhaustion times
        current. Without ``from_readings``, or with ``refresh``, a home read of all."""
        home = self._directory(home_id, home)
        if home is None:
            return [_unserved(None, home_id)]
        if refresh or not from_readings:
            return self.fetch_home(home_id, refresh=refresh, home=home)
        try:
            listing = self.service.home_providers(home)
        except HomeListFailed as exc:
            return [exc.snapshot]
        # a provider a now-unreadable file hides, or whose reading says its file could not
        # be read, is asked again (a worker request: the service answers its last good
        # reading stale with the error, or, the file back, the cache): the refresher's
        # reading may be an interval old either way, and must not hide a broken auth.json
        # nor keep showing one that was fixed
        latest = {name: snap for name in listing.names
                  if name not in listing.pool_only and name not in listing.unreadable
                  and _still_current(snap := self.latest(home_id, name, home=home))}
        missing = [name for name in listing.names if latest.get(name) is None]
        fetched = {snap.provider: snap for snap in self.fetch_home(home_id, refresh=False, providers=missing,
                                                                   home=home)} if missing else {}
        if None in fetched:   # the home went away between the list and the read
            return [fetched[None]]
        return [snap for snap in (latest.get(name) or fetched.get(name) for name in listing.names) if snap is not None]

    def _unrotated(self, home: Path, generation: int) -> bool:
        """Is the home still in ``generation``, the one seen before the fetch began? Asked
        after the fetch returned, so True means no rotation happened at any moment of the
        probe: its reading is the current account's (only then may history keep it)."""
        return self.history is None or self.service.generation(home) == generation

    def _recorded(self, home_id: str, home: Path, snap: Snapshot, generation: int, unrotated: bool) -> Snapshot:
        """Keep the reading: in :class:`Readings` under ``generation`` (which serves it only
        while the home stays in it), and in history -- hence alerts, decided on the history
        writer -- only when ``unrotated``: a history point is written for good, so a probe
        that began before a rotation (the old account's reading, finished after it) must
        never become one, nor fire an alert under the home."""
        if self.history is not None:
            snap = self.history.with_recent_pace(home_id, snap)
            if unrotated:
                self.history.submit(home_id, home, snap)
        self.readings.record(home_id, snap, generation)
        if self.homes.get(home_id) != home:
            # the id was dropped (or moved) while this read ran: its reading must not
            # outlive the watcher's forget. Checked after the record, so a forget that ran
            # before it is made good here.
            self.readings.forget(home_id)
        return snap

    def latest(self, home_id: str, provider: str, *, home: Path | None = None) -> Snapshot | None:
        """The latest reading of the home's current generation, without any fetch (None
        for an id no longer served)."""
        home = self._directory(home_id, home)
        return None if home is None else self.readings.get(home_id, provider, self.service.generation(home))

    def _directory(self, home_id: str, home: Path | None) -> Path | None:
        """The directory a read of ``home_id`` uses: ``home`` when the caller passes the
        one it found (an HTTP request looks its id up once, on arrival, and keeps that
        directory whatever a reload does meanwhile: a profile removed mid-request must not
        turn its answer into a 500), else the id's directory now, None when it is no
        longer served."""
        return home if home is not None else self.homes.get(home_id)

    def current_readings(self) -> list[Reading]:
        return self.readings.current({home_id: self.service.generation(path) for home_id, path in self.homes.items()})


def _still_current(snap: Snapshot | None) -> bool:
    """A reading the panel may show without asking again: not one that says a credential
    file could not be read (fixed since, perhaps -- only a read tells)."""
    return snap is not None and (snap.error is None or snap.error.code != "credentials_unreadable")


def _unserved(provider: str | None, home_id: str) -> Snapshot:
    """The answer for an id that is no longer served (a reload dropped it before the read
    began): the ``home_not_found`` a request for an unknown id gets, never a KeyError."""
    return Snapshot.failed(provider, home_id, "home_not_found", f"No configured home {home_id[:64]!r}.",
                           probe=ProbeInfo("cold", 0))
