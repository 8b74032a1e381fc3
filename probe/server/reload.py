"""A running backend's homes and options, kept current without a restart.

One thread (:class:`HomeWatcher`) does two things, never at the same time:

* **Every half refresh interval** (``--refresh-s``; 300 s when the refresher is off) it
  scans the Hermes root's profiles (``HomeSet.scan``: one ``scandir``, ~1 ms for 200
  profiles), when the backend serves discovered homes -- so a profile created or removed
  appears or disappears within one interval. Polls never scan; a fixed ``--home`` list is
  never scanned at all.
* **On SIGHUP** it re-reads the config file (``reread``, which re-applies the command line
  over it) and the profiles, and applies what changed.

Applying a new set of homes (:meth:`HomeWatcher.apply_homes`) touches only the homes that
changed: a removed home's workers are closed, its pool leaves the registry and its cache
entries, back-off and readings are dropped (``ProbeService.forget_home`` of that one
directory, unless another id still serves it); a request already in flight for it still
answers, by the directory it began with. An added one is served at once and joins the
refresher's schedule. Every other home keeps its warm workers, its cache and its place in
the schedule.

Options: the service settings (``cache-ttl-s``, ``cache-dir``) go through
``ProbeService.configure``, a no-op for unchanged values; a new positive refresh interval
applies from each home's next run. What a running process cannot change -- the address
and port, ``--allow-remote``, history, alerts, Redis, ``--demo``, ``--poll-s``, turning
the refresher on or off -- is logged once as needing a restart, and the rest still applies.

A reload that fails (the file is not TOML, names an unknown key, a home that is not a
directory...) is one error line; the running configuration stays exactly as it was.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from probe.config import ProbeConfig
from probe.home_set import HomeSet, ServedHomes
from probe.monitor.readings import Reader
from probe.monitor.refresher import Refresher
from probe.service import ProbeService

if TYPE_CHECKING:
    from probe.server.run import ServeOptions

log = logging.getLogger("quota_probe.reload")

#: options a running backend cannot change (the name a user knows them by)
RESTART_ONLY = {"host": "host", "port": "port", "allow_remote": "allow-remote", "demo": "demo",
                "history": "history, alerts and notify", "redis_url": "redis", "redis_prefix": "redis-prefix",
                "poll_s": "poll-s"}
#: the profile scan's interval when the background refresher is off
SCAN_WITHOUT_REFRESH_S = 300.0


def scan_interval_s(refresh_s: float) -> float:
    """Half the refresh interval (of :data:`SCAN_WITHOUT_REFRESH_S` with the refresher off):
    a profile created just after a scan is then served within one interval whatever the
    scan itself took. Two ``scandir`` calls per interval, whatever the number of polls."""
    return (refresh_s if refresh_s > 0 else SCAN_WITHOUT_REFRESH_S) / 2


class HomeWatcher:
    def __init__(self, options: "ServeOptions", home_set: HomeSet, homes: ServedHomes, service: ProbeService,
                 reader: Reader, refresher: Refresher | None, *, base_homes: Mapping[str, Path] | None = None,
                 base_config: ProbeConfig | None = None, reread: Callable[[], "ServeOptions"] | None = None) -> None:
        """``base_homes`` / ``base_config``: what ``probe serve`` had before the options
        were applied (the demo's homes and settings), so an option a reload no longer
        sets goes back to that value rather than staying as it was."""
        self.options = options
        self.home_set = home_set
        self.homes = homes
        self._service = service
        self._reader = reader
        self._refresher = refresher
        self._base_homes = dict(base_homes or {})
        self._base_config = base_config if base_config is not None else ProbeConfig()
        self._reread = reread
        self._wake = threading.Event()
        self._reload_asked = False
        self._stopped = False
        self._thread: threading.Thread | None = None

    @property
    def scan_interval_s(self) -> float:
        return scan_interval_s(self._refresher.interval_s if self._refresher is not None else 0.0)

    # -- the thread ----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="probe-home-watcher", daemon=True)
        self._thread.start()

    def request_reload(self) -> None:
        """Ask for a reload (safe from a signal handler: sets a flag and an event only)."""
        self._reload_asked = True
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        next_scan = time.monotonic() + self.scan_interval_s
        while True:
            woken = self._wake.wait(max(0.0, next_scan - time.monotonic()))
            self._wake.clear()
            if self._stopped:
                return
            try:
                if woken and self._reload_asked:
                    self._reload_asked = False
                    self.reload()
                elif not woken:
                    # a fixed cadence (not "interval after the last scan ended"), so the
                    # scans' own time never adds up into a late one
                    next_scan = max(next_scan + self.scan_interval_s, time.monotonic())
                    if self.home_set.discovering:
                        self.apply_homes(self.home_set.scan())
            except Exception:  # noqa: BLE001 -- the watcher must outlive one bad scan
                log.exception("keeping the served homes current failed; the running set stays")

    # -- applying ------------------------------------------------------------------------
    def reload(self) -> None:
        """Re-read the config file and the profiles; apply what changed, or keep everything
        and log one error line when the new configuration cannot be used."""
        from probe.server.run import home_set_of, live_config   # run imports this module

        if self._reread is None:
            new = self.options
        else:
            try:
                new = self._reread()
                home_set = home_set_of(new, self._base_homes)
                home_set.continue_from(self.home_set)
                homes = home_set.scan()
            except (ValueError, OSError) as exc:
                log.error("reload refused, the running configuration stays: %s", exc)
                return
            self.home_set = home_set
        old, self.options = self.options, new
        restart = [label for name, label in RESTART_ONLY.items() if getattr(old, name) != getattr(new, name)]
        old_refresh, new_refresh = old.effective_refresh_s(), new.effective_refresh_s()
        if (old_refresh > 0) != (new_refresh > 0):
            restart.append("refresh-s (turning the background refresh on or off)")
        elif new_refresh > 0 and self._refresher is not None:
            self._refresher.interval_s = new_refresh
        if restart:
            log.warning("reload: %s changed; that takes effect when probe serve restarts", ", ".join(restart))
        current = self._service.config     # cluster settings never change on a running service
        config = dataclasses.replace(live_config(self._base_config, new), redis_url=current.redis_url,
                                     redis_prefix=current.redis_prefix, home_ids=current.home_ids,
                                     provider_urls=current.provider_urls)
        try:
            self._service.configure(config)     # a no-op when nothing it holds changed
        except ValueError as exc:
            log.error("reload: the service settings stay as they were: %s", exc)
        self.apply_homes(self.home_set.scan() if self._reread is None else homes)
        log.warning("reloaded: %d home(s) served", len(self.homes))

    def apply_homes(self, homes: Mapping[str, Path]) -> None:
        """Serve ``homes`` from now on, touching only the homes that changed (module
        docstring)."""
        changes = self.homes.replace(homes)
        if not changes:
            return
        gone = {**changes.removed, **changes.moved}
        served_paths = self.homes.ids_by_path
        for home_id, path in gone.items():
            self._reader.readings.forget(home_id)
            if str(path) not in served_paths:
                self._service.forget_home(path)   # its pool, workers, cache, back-off: that home only
        if self._refresher is not None:
            self._refresher.sync()
        parts = [f"+{len(changes.added)} ({_some(changes.added)})" if changes.added else "",
                 f"-{len(changes.removed)} ({_some(changes.removed)})" if changes.removed else "",
                 f"{len(changes.moved)} moved ({_some(changes.moved)})" if changes.moved else ""]
        log.warning("homes changed: %s; %d served", ", ".join(p for p in parts if p), len(self.homes))


def _some(ids) -> str:
    ids = list(ids)
    return ", ".join(ids[:5]) + (f", ... {len(ids) - 5} more" if len(ids) > 5 else "")

