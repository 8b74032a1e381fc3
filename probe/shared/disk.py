"""Shared on-disk snapshot cache for several processes on one host (SPEC §7).

Layout: ``<cache_dir>/<sha256(home)[:16]>/<provider>.snap.json`` plus one
``<provider>.lock`` per (home, provider). File names carry hashes only: never a path
fragment a client chose. Each file holds the credentials it was read with: a hash of the
provider's credential digest (``probe.digests``; itself a hash of hashes) and a hash of the
files' stat. A reader takes it only for the same credentials: the same digest, or -- when
the writer or the reader has not listed the home yet and knows only the stat -- the same
stat. So Hermes' bookkeeping writes (new stat, same digest) keep the entry, while a result
read with superseded credentials, written however late by a process that has not noticed
the change yet, is never taken by one that has.

* Writes are atomic (temp file in the same directory + ``os.replace``) and made under the
  (home, provider) file lock, so a reader sees an old file or a new one, never half of one.
* The same lock is held for the whole probe: at most one process probes a given (home,
  provider) at a time; the others wait (within their deadline) and then read its result.
* Freshness is the **time since boot** (``CLOCK_BOOTTIME``: one host-wide clock every
  process shares, which no operator or NTP step moves and which counts a suspend) with the
  boot's id, so a wall-clock step either way neither keeps an expired entry fresh nor
  expires a good one. A file from another boot (or a platform without that clock) falls
  back to the wall clock, and an entry stamped after "now" -- written before a backward
  step -- is stale there, never fresh until its stamp comes round again.
* A credential change of a home (noticed or ``invalidate``d) deletes its files; temp files
  orphaned by a killed writer go then.
* A corrupt or truncated file is ignored (and replaced by the next write); a read-only or
  full disk degrades to "no shared cache" with one logged warning, never a failed probe.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import filelock

from probe import strict_json
from probe.shared import Fetch
from probe.snapshot import Snapshot

log = logging.getLogger("probe.disk_cache")
TEMP_PREFIX = ".tmp-"
#: a temp file this old belongs to no write in progress (a write takes milliseconds)
ORPHAN_TEMP_S = 60.0


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _since_boot() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


#: this boot's id (Linux); None where unknown: entries then age by the wall clock
BOOT_ID = _boot_id()
#: seconds since boot, shared by every process of the host; None where the platform has none
SINCE_BOOT: Callable[[], float] | None = _since_boot if BOOT_ID and hasattr(time, "CLOCK_BOOTTIME") else None


class DiskCache:
    def __init__(self, directory: str | os.PathLike[str], *, wall: Callable[[], float] = time.time,
                 since_boot: Callable[[], float] | None = SINCE_BOOT) -> None:
        """``wall`` and ``since_boot`` are the clocks (tests step them instead of the host's)."""
        self.directory = Path(directory)
        self._warned = False
        self._wall = wall
        self._since_boot = since_boot

    def _home_dir(self, home: str) -> Path:
        return self.directory / _digest(home)

    def _file(self, home: str, provider: str) -> Path:
        return self._home_dir(home) / f"{provider}.snap.json"

    def _warn(self, what: str, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            log.warning("shared cache %s failed (%s); continuing without it", what, type(exc).__name__)

    def read(self, fetch: Fetch, *, written_after: float | None = None) -> Snapshot | None:
        """A fresh snapshot, or None. ``written_after`` (wall clock) also demands that it was
        stored after that moment — a result another process produced while we waited."""
        home, provider, _ = fetch.key
        path = self._file(home, provider)
        try:
            data = strict_json.loads(path.read_bytes())   # a deep nest is a ValueError here, not a RecursionError
            if not self._fresh(data) or not _same_credentials(data, _credentials(fetch)):
                return None
            if written_after is not None and data["written_at"] < written_after:
                return None
            snap = Snapshot.from_dict(data["snapshot"])
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._warn("read", exc)
            return None
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # corrupt or truncated: ignored, the next write replaces it
        return snap if snap.home == home and snap.provider == provider else None

    def _fresh(self, data: dict) -> bool:
        """Younger than its time to live: by the time since boot when the entry was written
        in this boot, else by the wall clock -- and never when stamped in the future."""
        if self._since_boot is not None and data.get("boot") == BOOT_ID and "boot_at" in data:
            age_s = self._since_boot() - data["boot_at"]
            return 0 <= age_s < data["ttl_s"]
        now = self._wall()
        return data["written_at"] <= now < data["expires_at"]

    def write(self, fetch: Fetch, snap: Snapshot, ttl_s: float) -> None:
        path = self._file(fetch.key[0], fetch.provider)
        now = self._wall()
        entry = {"written_at": now, "expires_at": now + ttl_s, "ttl_s": ttl_s, **_credentials(fetch)}
        if self._since_boot is not None:
            entry.update(boot=BOOT_ID, boot_at=self._since_boot())
        payload = json.dumps({**entry, "snapshot": snap.to_dict()})
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(payload)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            self._warn("write", exc)

    @contextlib.contextmanager
    def probe_lock(self, fetch: Fetch, timeout_s: float) -> Iterator[bool]:
        """Hold the (home, provider) lock across processes; yields False if it could not be
        had within ``timeout_s`` (or the directory is unusable: then True, unlocked —
        probing unshared beats not probing)."""
        lock_path = self._home_dir(fetch.key[0]) / f"{fetch.provider}.lock"
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            lock = filelock.FileLock(str(lock_path), timeout=max(0.0, timeout_s), thread_local=False,
                                     poll_interval=0.005)
            lock.acquire()
        except filelock.Timeout:
            yield False
            return
        except OSError as exc:
            self._warn("lock", exc)
            yield True
            return
        try:
            yield True
        finally:
            lock.release()

    def drop(self, home: str | None, provider: str | None) -> None:
        """Forget stored snapshots of one home (all when None) for one provider (all when None).

        Also the one place that removes temp files a killed writer left behind (older than
        ORPHAN_TEMP_S, so another process's write in progress is never touched): rotations
        are rare, so this costs nothing on the probe path, and every credential change of
        a home passes here."""
        homes = [self._home_dir(home)] if home is not None else [p for p in self.directory.glob("*") if p.is_dir()]
        pattern = f"{provider}.*.json" if provider else "*.json"
        now = time.time()
        for directory in homes:
            for path in directory.glob(pattern):
                with contextlib.suppress(OSError):
                    path.unlink()
            for temp in directory.glob(f"{TEMP_PREFIX}*"):
                with contextlib.suppress(OSError):
                    if now - temp.stat().st_mtime > ORPHAN_TEMP_S:
                        temp.unlink()


def _credentials(fetch: Fetch) -> dict[str, object]:
    """What a stored entry says about the credentials it was read with (hashes only)."""
    part = fetch.key[2]
    listed = not (isinstance(part, tuple) and part[:1] == ("stat",))
    return {"digest": _digest(repr(part)) if listed else None, "stat": _digest(repr(fetch.fingerprint))}


def _same_credentials(stored: dict, ours: dict[str, object]) -> bool:
    if stored.get("digest") is not None and ours["digest"] is not None:
        return stored["digest"] == ours["digest"]
    return stored.get("stat") == ours["stat"]
