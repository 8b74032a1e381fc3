"""Reading history in SQLite (SPEC §14): one point per window and per balance of each account
(SPEC §18: series and alerts are keyed by the account's id, schema 3), kept for
``--history-days`` days, so a quota's past can be charted and its recent burn rate known.

Threads and connections -- why this shape:

* **One writer thread owns the only write connection.** Every write (points, alert records,
  delivery marks, pruning) is a job on its queue, run in order, one transaction per job. So
  there is exactly one writer, nothing waits for SQLite's write lock inside the process,
  and a fetch only pays for ``queue.put`` -- never for a disk write (the hot path stays
  ~free; measured in ``scripts/bench_history.py``).
* **Readers open a short-lived connection per query** (``mode=ro``). In WAL mode readers
  never block the writer or each other, and no connection is ever shared between threads.
* **What the writer keeps in memory**: the last point of each series (to apply the "changed,
  or 5 minutes passed" rule without a read per write, and to know the window's current
  instance) and the points of each window's current instance (for the ``recent`` pace
  basis, read on the fetch path without touching the disk). Both are loaded from the file
  on first use, so a restart loses neither; a failed write drops the first (it may hold
  what was rolled back), and the next reading loads it again.

**Window instances** (SPEC §14, the rule in :mod:`probe.monitor.instances`) are decided here, on the
writer, once per reading: each window point stores the reference reset of the instance it
belongs to (``points.instance``), so the chart's boundaries (:func:`query_file`), the alert
key (``after_write`` gets each window's instance) and the recent pace basis (the in-memory
ring) all follow the same decision, and a restart picks the current instance up from the
last point instead of re-deriving it. A jittered ``reset_at`` is not a change: a point is
written when the value changed, the instance changed, or 5 minutes passed.

Failure is local: a file that is corrupt, locked by another process past the busy timeout,
or not writable is **one** logged error (per outage: a later success logs one line that
writes resumed), the reading is dropped, and the service goes on probing. Nothing here ever
raises into a fetch.

Schema: ``PRAGMA user_version`` holds the version; :func:`migrate` brings an older file up
step by step (so a later release adds a step, never rewrites a file blindly) and refuses a
file written by a newer release. Times are Unix seconds (integers), so a 7-day query is a
primary-key range scan. Homes are stored by configured id with their resolved path (``probe
history --home PATH`` finds a home's series by path); no credential is ever stored.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from probe.monitor.instances import Instance, advance, assign, starts_new
from probe.pace import compute_recent, parse_instant
from probe.snapshot import Account, Snapshot, Window

log = logging.getLogger("quota_probe.history")

SCHEMA_VERSION = 3
#: the account a 0.3 file's series and alerts carry until the provider's first 0.4 reading
#: names it (:meth:`History._adopt_legacy`)
LEGACY_ACCOUNT = ""
#: a series gets a point when its value changed, or at least this long after its last one
POINT_EVERY_S = 300
DEFAULT_DAYS = 35
#: how long the writer waits for another process's lock before giving up on one write
BUSY_TIMEOUT_S = 2.0
#: pruning runs at start-up and then this often
PRUNE_EVERY_S = 3600
#: points of a window's current instance kept in memory for the recent pace
RING_MAX = 4096
#: the probe paths that mean "this reading came from a provider just now"
FRESH_PATHS = frozenset({"warm", "slot_start", "cold"})


def _window_instances(conn: sqlite3.Connection) -> None:
    """Schema 2: each window point names its instance (its reference reset, SPEC §14).
    Existing points get theirs by the same rule, in time order (their window's length was
    never stored, so the 60 s floor applies); existing alerts are re-keyed to the instance
    their reading belonged to, so an upgrade never re-sends an alert of the current
    instance. Where a file already holds the duplicates the exact-reset key let through,
    the first keeps the instance's key and the others keep their old text -- a key no new
    reading produces, so they stay as history and never block or repeat anything."""
    conn.execute("ALTER TABLE points ADD COLUMN instance INTEGER")
    for (series,) in conn.execute("SELECT id FROM series WHERE kind = 'window'").fetchall():
        rows = conn.execute("SELECT t, reset_at FROM points WHERE series = ? ORDER BY t", (series,)).fetchall()
        instances = assign(reset for _, reset in rows)
        conn.executemany("UPDATE points SET instance = ? WHERE series = ? AND t = ?",
                         [(instance.reset, series, t) for (t, _), instance in zip(rows, instances)])
    alerts = conn.execute("SELECT id, home_id, provider, window, reset_at, at FROM alerts ORDER BY id").fetchall()
    for alert_id, home_id, provider, label, reset_at, at in alerts:
        found = conn.execute(
            "SELECT p.instance FROM points p JOIN series s ON s.id = p.series JOIN homes h ON h.id = s.home "
            "WHERE h.home_id = ? AND s.provider = ? AND s.kind = 'window' AND s.label = ? AND p.t <= ? "
            "ORDER BY p.t DESC LIMIT 1", (home_id, provider, label, epoch(at) or 0)).fetchone()
        if found is not None and not starts_new(found[0], epoch(reset_at), None):
            conn.execute("UPDATE OR IGNORE alerts SET instance = ? WHERE id = ?", (Instance(found[0]).key, alert_id))


def _accounts(conn: sqlite3.Connection) -> None:
    """Schema 3 (SPEC §18): series and alerts per account. SQLite cannot change a UNIQUE
    constraint in place, so both tables are rebuilt with their rows and ids kept (points
    and deliveries refer to those ids). A 0.3 row gets the account ``''`` -- which account
    produced it is not in the file; the provider's first reading under 0.4 names it
    (:meth:`History._adopt_legacy`), so nothing is lost and no alert is sent twice."""
    conn.execute("""CREATE TABLE series_3 (id INTEGER PRIMARY KEY, home INTEGER NOT NULL REFERENCES homes(id),
               provider TEXT NOT NULL, account TEXT NOT NULL DEFAULT '',
               kind TEXT NOT NULL CHECK (kind IN ('window', 'balance')),
               label TEXT NOT NULL, currency TEXT NOT NULL DEFAULT '',
               UNIQUE (home, provider, account, kind, label, currency))""")
    conn.execute("INSERT INTO series_3 (id, home, provider, kind, label, currency) "
                 "SELECT id, home, provider, kind, label, currency FROM series")
    conn.execute("DROP TABLE series")
    conn.execute("ALTER TABLE series_3 RENAME TO series")
    conn.execute("""CREATE TABLE alerts_3 (id INTEGER PRIMARY KEY, home_id TEXT NOT NULL, provider TEXT NOT NULL,
               account TEXT NOT NULL DEFAULT '', account_label TEXT,
               window TEXT NOT NULL, kind TEXT NOT NULL, threshold INTEGER NOT NULL,
               instance TEXT NOT NULL, used_percent REAL, reset_at TEXT, at TEXT NOT NULL,
               UNIQUE (home_id, provider, account, window, kind, threshold, instance))""")
    conn.execute("INSERT INTO alerts_3 (id, home_id, provider, window, kind, threshold, instance, used_percent, "
                 "reset_at, at) SELECT id, home_id, provider, window, kind, threshold, instance, used_percent, "
                 "reset_at, at FROM alerts")
    conn.execute("DROP TABLE alerts")
    conn.execute("ALTER TABLE alerts_3 RENAME TO alerts")


#: one step per schema version: SQL statements, or a function run in the step's transaction
MIGRATIONS: dict[int, tuple[str | Callable[[sqlite3.Connection], None], ...]] = {
    1: (
        """CREATE TABLE homes (id INTEGER PRIMARY KEY, home_id TEXT NOT NULL UNIQUE, path TEXT NOT NULL)""",
        """CREATE TABLE series (id INTEGER PRIMARY KEY, home INTEGER NOT NULL REFERENCES homes(id),
               provider TEXT NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('window', 'balance')),
               label TEXT NOT NULL, currency TEXT NOT NULL DEFAULT '',
               UNIQUE (home, provider, kind, label, currency))""",
        """CREATE TABLE points (series INTEGER NOT NULL, t INTEGER NOT NULL, value REAL NOT NULL,
               reset_at INTEGER, PRIMARY KEY (series, t)) WITHOUT ROWID""",
        """CREATE TABLE alerts (id INTEGER PRIMARY KEY, home_id TEXT NOT NULL, provider TEXT NOT NULL,
               window TEXT NOT NULL, kind TEXT NOT NULL, threshold INTEGER NOT NULL,
               instance TEXT NOT NULL, used_percent REAL, reset_at TEXT, at TEXT NOT NULL,
               UNIQUE (home_id, provider, window, kind, threshold, instance))""",
        """CREATE TABLE deliveries (alert INTEGER NOT NULL REFERENCES alerts(id), target TEXT NOT NULL,
               delivered_at TEXT, attempts INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (alert, target))""",
    ),
    2: (_window_instances,),
    3: (_accounts,),
}


class HistoryError(Exception):
    pass


def recorded_accounts(snap: Snapshot) -> list[Account]:
    """The accounts of a reading whose windows and balances history keeps (and alerts
    decide on): each account probed in this read that answered, fresh and available --
    not a cooling, dead or failed one, nor a stale reading shown for one in back-off. A
    snapshot without accounts (a plugin that reports none) counts as one account ``''``
    holding the snapshot's own windows. The snapshot's own windows of a pool (the best
    per window) are never recorded: each comes from an account that is."""
    if not snap.accounts:
        return [Account(LEGACY_ACCOUNT, "", None, "available", windows=snap.windows, balances=snap.balances)]
    return [a for a in snap.accounts if a.probed and a.available and a.error is None and not a.stale]


def default_path() -> Path:
    """``$XDG_STATE_HOME/quota-probe/history.sqlite3``, else ``~/.local/state/...``."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state).expanduser() / "quota-probe" / "history.sqlite3"


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the file's schema to :data:`SCHEMA_VERSION`, one step per version."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise HistoryError(f"the history file was written by a newer release (schema {version}, "
                           f"this release knows {SCHEMA_VERSION})")
    for step in range(version + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[step]:
                if callable(statement):
                    statement(conn)
                else:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {step}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _owner_only(path: Path) -> None:
    """Create the database file 0600 before SQLite opens it (SQLite gives its WAL and SHM
    files the database's mode), and tighten one an older release left readable by others,
    with its WAL/SHM files: it holds home paths, quota history and alerts. The directory
    this creates is 0700 (as the disk cache's); an existing one is left as it is -- with
    ``--history PATH`` it may be anyone's directory."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.close(fd)
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            mode = file.stat().st_mode
            if mode & 0o077:
                os.chmod(file, mode & 0o700)
        except OSError:
            pass   # gone, or not ours to change: nothing this process can do about it


def epoch(value: str | None) -> int | None:
    when = parse_instant(value)
    return None if when is None else int(when.timestamp())


def connect(path: Path, *, read_only: bool = False, handed_over: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit ``BEGIN``/``COMMIT``).
    ``handed_over``: opened on one thread, then used by exactly one other (the writer) --
    never by two at once."""
    target = f"file:{path}?mode=ro" if read_only else str(path)
    conn = sqlite3.connect(target, uri=read_only, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                           check_same_thread=not handed_over)
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    return conn


@dataclass
class _Ring:
    """The points of one window's current instance, oldest first."""
    instance: Instance
    points: list[tuple[int, float]] = field(default_factory=list)


class _Last(NamedTuple):
    """A series' last point: when, its value and reset, and (windows) its instance's
    reference reset -- the window's current instance."""
    t: int
    value: float
    reset_at: int | None
    instance: int | None


_URGENT, _NORMAL, _LAST = 0, 1, 2
#: a job runs on the writer thread with the write connection; it returns None when it did
#: not touch the file (so its success says nothing about whether writes work again)
Job = Callable[[sqlite3.Connection], object]


class History:
    """The history file of one backend. ``submit`` from any thread; everything else that
    writes runs on the writer thread."""

    def __init__(self, path: Path | str, *, days: float = DEFAULT_DAYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``clock``: the monotonic clock readings are stamped with at :meth:`submit` (tests
        inject one; see :meth:`_reading_time`)."""
        self.path = Path(path).expanduser()
        self.days = days
        self._clock = clock
        #: per (home id, provider): (Unix seconds, clock) of the last reading recorded
        self._anchors: dict[tuple[str, str], tuple[int, float]] = {}
        #: runs inside a reading's transaction (alerts decide there) with each recorded
        #: window's instance by (account id, window label) (windows of a late reading that
        #: would start an instance are left out), then ``committed`` after it
        self.after_write: Callable[[sqlite3.Connection, str, Snapshot, dict[tuple[str, str], Instance]], None] \
            | None = None
        self.committed: Callable[[], None] | None = None
        #: (priority, order, job): urgent jobs (delivery records) overtake queued readings
        self._jobs: queue.PriorityQueue[tuple[int, int, Job | None]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._rings: dict[tuple[str, str, str, str], _Ring] = {}
        #: (home id, provider) whose 0.3 series were looked for in this process
        self._adopted: set[tuple[str, str]] = set()
        self._last: dict[int, _Last] = {}
        self._series_ids: dict[tuple, int] = {}
        self._home_ids: dict[str, int] = {}
        self._failing = False
        self.available = False
        self._writer: threading.Thread | None = None
        self._next_prune = 0.0

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> bool:
        """Open (create, migrate) the file and start the writer. False -- after one logged
        error -- when the file cannot be used; the service then runs without history."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _owner_only(self.path)
            conn = connect(self.path, handed_over=True)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                migrate(conn)
                conn.execute("SELECT count(*) FROM homes").fetchone()
            except BaseException:
                conn.close()
                raise
        except (sqlite3.Error, OSError, HistoryError) as exc:
            log.error("history disabled: %s cannot be used (%s); probing goes on without it", self.path,
                      _reason(exc))
            return False
        self.available = True
        self._writer = threading.Thread(target=self._write_loop, args=(conn,), name="probe-history-writer",
                                        daemon=True)
        self._writer.start()
        return True

    def close(self) -> None:
        """Finish the queued writes, then stop the writer."""
        if self._writer is not None:
            self._put(_LAST, None)
            self._writer.join()
            self._writer = None

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every job queued so far has run (tests and shutdown)."""
        if self._writer is None:
            return True
        done = threading.Event()
        self._put(_NORMAL, lambda conn: done.set())   # returns None: says nothing about the file
        return done.wait(timeout_s)

    def run(self, job: Job) -> None:
        """Queue ``job`` for the writer thread (no-op without a usable file)."""
        if self.available:
            self._put(_NORMAL, job)

    def run_urgent(self, job: Job, timeout_s: float = 10.0) -> bool:
        """Run ``job`` on the writer ahead of every queued reading and wait until it has
        committed; False when it did not (no file, a write error, timeout). Alert delivery
        records each send this way, so at most one delivered-but-unrecorded alert exists at
        any moment -- a crash can duplicate one alert, never a queue's worth."""
        if not self.available:
            return False
        done = threading.Event()
        result: list[object] = []

        def urgent(conn: sqlite3.Connection) -> object:
            try:
                outcome = job(conn)
                result.append(outcome)
                return outcome
            finally:
                done.set()   # a job that raised answers False now, not after the timeout

        self._put(_URGENT, urgent)
        return done.wait(timeout_s) and bool(result)

    def _put(self, priority: int, job: Job | None) -> None:
        self._jobs.put((priority, next(self._order), job))

    # -- writing -------------------------------------------------------------------------
    def submit(self, home_id: str, home_path: Path | str, snap: Snapshot) -> None:
        """Record a reading later, on the writer thread; only good, non-stale readings the
        service just obtained from a provider count (not cache hits or joiners). The caller
        submits only a reading whose probe saw no rotation of its home (``Reader`` checks
        the generation the probe began under): a point, and an alert, are kept for good."""
        if not self.available or snap.error is not None or snap.stale or not snap.available \
                or snap.probe.path not in FRESH_PATHS:
            return
        taken = self._clock()
        self._put(_NORMAL, lambda conn: self._record(conn, home_id, str(home_path), snap, taken))

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        try:
            while True:
                _, _, job = self._jobs.get()
                if job is None:
                    return
                try:
                    if time.monotonic() >= self._next_prune:
                        self._next_prune = time.monotonic() + PRUNE_EVERY_S
                        self._prune(conn)
                    if job(conn) is not None and self._failing:   # a job that touched the file worked
                        self._failing = False
                        log.warning("history writes resumed (%s)", self.path)
                except Exception as exc:  # noqa: BLE001 -- sqlite3.Error, or a bug in a job (an alert
                    # hook): the job is dropped, never the writer -- a dead writer would record
                    # nothing again while every flush and delivery record waited out its timeout
                    with contextlib.suppress(sqlite3.Error):
                        if conn.in_transaction:
                            conn.rollback()
                    # what the rolled-back job cached may not be in the file: load it again
                    self._last.clear()
                    self._series_ids.clear()
                    self._home_ids.clear()
                    self._adopted.clear()
                    if not self._failing:
                        self._failing = True
                        log.error("history write failed: %s (%s); readings are not recorded until it "
                                  "works again, probing goes on", self.path, _reason(exc),
                                  exc_info=not isinstance(exc, sqlite3.Error))
        finally:
            conn.close()

    def _prune(self, conn: sqlite3.Connection) -> None:
        """Delete points past retention: one primary-key range per series, so no index on
        ``t`` alone is needed (it would cost every write and ~40 % more file)."""
        cutoff = int(time.time() - self.days * 86400)
        for (series,) in conn.execute("SELECT id FROM series").fetchall():
            conn.execute("DELETE FROM points WHERE series = ? AND t < ?", (series, cutoff))

    def _home(self, conn: sqlite3.Connection, home_id: str, path: str) -> int:
        known = self._home_ids.get(home_id)
        if known is None:
            conn.execute("INSERT INTO homes (home_id, path) VALUES (?, ?) "
                         "ON CONFLICT (home_id) DO UPDATE SET path = excluded.path", (home_id, path))
            known = conn.execute("SELECT id FROM homes WHERE home_id = ?", (home_id,)).fetchone()[0]
            self._home_ids[home_id] = known
        return known

    def _series(self, conn: sqlite3.Connection, home: int, provider: str, account: str, kind: str, label: str,
                currency: str = "") -> int:
        key = (home, provider, account, kind, label, currency)
        known = self._series_ids.get(key)
        if known is None:
            conn.execute("INSERT OR IGNORE INTO series (home, provider, account, kind, label, currency) "
                         "VALUES (?, ?, ?, ?, ?, ?)", key)
            known = conn.execute("SELECT id FROM series WHERE home = ? AND provider = ? AND account = ? AND kind = ? "
                                 "AND label = ? AND currency = ?", key).fetchone()[0]
            self._series_ids[key] = known
        return known

    def _last_point(self, conn: sqlite3.Connection, series: int) -> _Last | None:
        last = self._last.get(series)
        if last is None:
            row = conn.execute("SELECT t, value, reset_at, instance FROM points WHERE series = ? ORDER BY t DESC "
                               "LIMIT 1", (series,)).fetchone()
            if row is not None:
                last = self._last[series] = _Last(int(row[0]), float(row[1]), row[2], row[3])
        return last

    def _point(self, conn: sqlite3.Connection, series: int, t: int, value: float, reset_at: int | None,
               window_s: float | None = None) -> Instance | None:
        """Write a point if the "changed, new instance, or 5 minutes" rule says so, and
        return the reading's window instance -- None for a late reading (older than the
        series' last point) that would start one: the newer reading stands, and an
        instance is only ever started in time order."""
        last = self._last_point(conn, series)
        current = None if last is None else Instance(last.instance)
        instance = advance(current, reset_at, window_s)
        if last is not None and t <= last.t:
            # out of order (a slow probe answered after a newer one): the newer one stands
            return current if instance is current else None
        if last is not None and instance is current and last.value == value and t - last.t < POINT_EVERY_S:
            return instance
        conn.execute("INSERT OR REPLACE INTO points (series, t, value, reset_at, instance) VALUES (?, ?, ?, ?, ?)",
                     (series, t, value, reset_at, instance.reset))
        self._last[series] = _Last(t, value, reset_at, instance.reset)
        return instance

    def _reading_time(self, conn: sqlite3.Connection, home_id: str, provider: str, stamped: int,
                      taken: float) -> int:
        """The time a reading's points are written at: its wall-clock stamp, but never
        earlier than the provider's last reading plus the monotonic time elapsed since.

        Why: a point whose time is not after the series' last is dropped (a late reading
        must not overwrite a newer one), so after a backward wall-clock step of an hour no
        point would be written for an hour. The monotonic clock knows the reading is newer;
        its points go after the last ones, the series' times keep increasing, and they
        rejoin the wall clock once it has caught up. A forward step simply moves the
        series on (the wall clock is later). The first reading of a provider in this
        process (the monotonic clock starts afresh) goes after the last point the file
        holds for it: a step across a restart is survived too."""
        key = (home_id, provider)
        anchor = self._anchors.get(key)
        if anchor is None:
            last = conn.execute("SELECT MAX(p.t) FROM points p JOIN series s ON s.id = p.series JOIN homes h "
                                "ON h.id = s.home WHERE h.home_id = ? AND s.provider = ?", key).fetchone()[0]
            anchor = None if last is None else (int(last) + 1, taken)
        elif taken < anchor[1]:
            return stamped    # submitted earlier than the anchor (cannot happen in order)
        t = stamped if anchor is None else max(stamped, anchor[0] + int(taken - anchor[1]))
        self._anchors[key] = (t, taken)
        return t

    def _record(self, conn: sqlite3.Connection, home_id: str, path: str, snap: Snapshot, taken: float) -> bool:
        t = self._reading_time(conn, home_id, snap.provider, epoch(snap.fetched_at) or int(time.time()), taken)
        conn.execute("BEGIN")
        home = self._home(conn, home_id, path)
        if snap.accounts:
            self._adopt_legacy(conn, home, home_id, snap)
        instances: dict[tuple[str, str], Instance] = {}
        for account in recorded_accounts(snap):
            for window in account.windows:
                if window.used_percent is None:
                    continue
                series = self._series(conn, home, snap.provider, account.id, "window", window.label)
                instance = self._point(conn, series, t, window.used_percent, epoch(window.reset_at), window.window_s)
                if instance is not None:
                    instances[(account.id, window.label)] = instance
                    self._remember(conn, (home_id, snap.provider, account.id, window.label), series, t,
                                   window.used_percent, instance)
            for balance in account.balances:
                series = self._series(conn, home, snap.provider, account.id, "balance", balance.label,
                                      balance.currency)
                self._point(conn, series, t, balance.amount, None)
        if self.after_write is not None:
            self.after_write(conn, home_id, snap, instances)
        conn.execute("COMMIT")
        if self.committed is not None:
            self.committed()
        return True

    def _adopt_legacy(self, conn: sqlite3.Connection, home: int, home_id: str, snap: Snapshot) -> None:
        """A 0.3 file's series and alerts of this (home, provider) carry no account
        (``''``): they become the account that produced them -- 0.3 read one credential
        per provider, the one this reading lists first (its only account; of a pool, the
        first by Hermes' priority, the one Hermes itself uses first, which is the closest
        the file allows: 0.3 never wrote down which it read). Once per (home, provider)
        and process, in the reading's own transaction (so its alerts are decided against
        the adopted keys: one already sent under 0.3 is not sent again). A series the
        account already has (cannot happen unless a file was edited) keeps its own points
        at equal times and takes the rest."""
        key = (home_id, snap.provider)
        if key in self._adopted:
            return
        self._adopted.add(key)
        owner = snap.accounts[0]
        legacy = conn.execute("SELECT id, kind, label, currency FROM series WHERE home = ? AND provider = ? "
                              "AND account = ?", (home, snap.provider, LEGACY_ACCOUNT)).fetchall()
        for series, kind, label, currency in legacy:
            target = conn.execute("SELECT id FROM series WHERE home = ? AND provider = ? AND account = ? AND kind = ? "
                                  "AND label = ? AND currency = ?",
                                  (home, snap.provider, owner.id, kind, label, currency)).fetchone()
            if target is None:
                conn.execute("UPDATE series SET account = ? WHERE id = ?", (owner.id, series))
            else:
                conn.execute("UPDATE OR IGNORE points SET series = ? WHERE series = ?", (target[0], series))
                conn.execute("DELETE FROM points WHERE series = ?", (series,))
                conn.execute("DELETE FROM series WHERE id = ?", (series,))
                self._last.pop(target[0], None)
            self._series_ids = {k: v for k, v in self._series_ids.items() if v != series}
            self._last.pop(series, None)
        if legacy:
            with self._lock:
                self._rings = {k: v for k, v in self._rings.items()
                               if k[:3] != (home_id, snap.provider, LEGACY_ACCOUNT)}
        conn.execute("UPDATE OR IGNORE alerts SET account = ? WHERE home_id = ? AND provider = ? AND account = ?",
                     (owner.id, home_id, snap.provider, LEGACY_ACCOUNT))

    # -- the current window instance, for the recent pace ---------------------------------
    def _remember(self, conn: sqlite3.Connection | None, key: tuple[str, str, str, str], series: int,
                  t: int, used: float, instance: Instance) -> None:
        with self._lock:
            ring = self._rings.get(key)
        if ring is None and conn is not None:
            rows = conn.execute("SELECT t, value FROM points WHERE series = ? AND instance IS ? AND t < ? "
                                "ORDER BY t DESC LIMIT ?", (series, instance.reset, t, RING_MAX)).fetchall()
            ring = _Ring(instance, [(int(a), float(b)) for a, b in reversed(rows)])
        with self._lock:
            if ring is None or ring.instance != instance:
                ring = _Ring(instance)
            if not ring.points or ring.points[-1][0] < t:
                ring.points.append((t, used))
                del ring.points[:-RING_MAX]
            self._rings[key] = ring

    def recent_points(self, home_id: str, provider: str, label: str, reset_at: str | None,
                      window_s: float | None = None, account: str = LEGACY_ACCOUNT) -> list[tuple[int, float]]:
        """The recorded points of the window instance a reading with ``reset_at`` belongs
        to (SPEC §14's rule: jitter keeps it in the current one), oldest first; [] when it
        starts a new instance or none is known in memory."""
        with self._lock:
            ring = self._rings.get((home_id, provider, account, label))
            if ring is None or advance(ring.instance, epoch(reset_at), window_s) is not ring.instance:
                return []
            return list(ring.points)

    def load_recent(self, home_ids: list[str]) -> None:
        """Fill the in-memory rings from the file (at start-up, on the writer thread), so
        the recent pace survives a restart."""
        def load(conn: sqlite3.Connection) -> None:
            rows = conn.execute(
                "SELECT h.home_id, s.provider, s.account, s.label, s.id FROM series s JOIN homes h ON h.id = s.home "
                "WHERE s.kind = 'window'").fetchall()
            for home_id, provider, account, label, series in rows:
                if home_id not in home_ids:
                    continue
                self._last.pop(series, None)
                last = self._last_point(conn, series)
                if last is not None:
                    with self._lock:
                        self._rings.pop((home_id, provider, account, label), None)
                    self._remember(conn, (home_id, provider, account, label), series, last.t, last.value,
                                   Instance(last.instance))
        self.run(load)

    # -- reading -------------------------------------------------------------------------
    def with_recent_pace(self, home_id: str, snap: Snapshot) -> Snapshot:
        """``snap`` with each window's pace projected from recent history where there is
        enough of it (``basis: "recent"``, SPEC §14); evaluated at the snapshot's
        ``fetched_at``, from memory only (no disk read on the fetch path). Each account's
        windows from its own points; the snapshot's own windows take the pace of the
        account they come from (its only account, or a pool's best for that window)."""
        now = parse_instant(snap.fetched_at)
        if now is None:
            return snap

        def paced(account: str, windows: tuple[Window, ...]) -> tuple[Window, ...]:
            out = []
            for window in windows:
                if window.pace is not None:
                    points = self.recent_points(home_id, snap.provider, window.label, window.reset_at,
                                                window.window_s, account)
                    if points:
                        window = dataclasses.replace(window, pace=compute_recent(
                            window.used_percent, window.reset_at, window.window_s, now, points))
                out.append(window)
            return tuple(out)

        if not snap.accounts:
            if not any(w.pace for w in snap.windows):
                return snap
            return dataclasses.replace(snap, windows=paced(LEGACY_ACCOUNT, snap.windows))
        if not any(w.pace for a in snap.accounts for w in a.windows):
            return snap
        accounts = tuple(dataclasses.replace(a, windows=paced(a.id, a.windows)) for a in snap.accounts)
        source = {a.id: {w.label.casefold(): w for w in a.windows} for a in accounts}
        owner = {b.window.casefold(): b.account_id for b in snap.pool.best} if snap.pool is not None \
            else {w.label.casefold(): accounts[0].id for w in snap.windows}
        windows = []
        for window in snap.windows:
            found = source.get(owner.get(window.label.casefold(), ""), {}).get(window.label.casefold())
            windows.append(window if found is None else dataclasses.replace(window, pace=found.pace))
        return dataclasses.replace(snap, windows=tuple(windows), accounts=accounts)

    def query(self, home_id: str, provider: str, since: float, account: str | None = None) -> dict[str, Any]:
        """The SPEC §14 ``/api/history`` body for one home id and provider, points at or
        after ``since`` (Unix seconds), oldest first (see :func:`query_file` for
        ``account``). Raises HistoryError when the file cannot be read."""
        return query_file(self.path, provider, since, home_id=home_id, account=account)


def query_file(path: Path, provider: str, since: float, *, home_id: str | None = None,
               home_path: str | None = None, account: str | None = None) -> dict[str, Any]:
    """Read one home's series (by configured id or by resolved path) from a history file.

    Per account (SPEC §18): with ``account``, that account's series and balances (the body
    also says ``"account": ID``). Without, the body is 0.3's when the provider has one
    account in the file -- its ``series`` and ``balances`` -- and, whatever the number,
    ``"accounts": [{"account": ID, "series": [...], "balances": [...]}]``, one per account
    with points in the file, in the order they were first recorded. A provider with
    several accounts has empty top-level ``series`` and ``balances``: no single account's
    past is "the provider's" (its ``accounts`` carry them all)."""
    try:
        conn = connect(path, read_only=True)
    except sqlite3.Error as exc:
        raise HistoryError(f"cannot open {path} ({_reason(exc)})") from None
    try:
        if home_id is not None:
            row = conn.execute("SELECT id, home_id FROM homes WHERE home_id = ?", (home_id,)).fetchone()
        else:
            row = conn.execute("SELECT id, home_id FROM homes WHERE path = ?", (home_path,)).fetchone()
        body: dict[str, Any] = {"home": home_id if home_id is not None else (row[1] if row else None),
                                "provider": provider}
        if account is not None:
            body["account"] = account
        body.update(series=[], balances=[])
        if account is None:
            body["accounts"] = []
        if row is None:
            return body
        series = conn.execute("SELECT id, account, kind, label, currency FROM series WHERE home = ? AND provider = ? "
                              "ORDER BY kind DESC, id", (row[0], provider)).fetchall()
        per_account: dict[str, dict[str, Any]] = {}
        for owner in [row[1] for row in sorted(series)]:     # by series id: the order first recorded
            per_account.setdefault(owner, {"account": owner, "series": [], "balances": []})
        for series_id, owner, kind, label, currency in series:
            if account is not None and owner != account:
                continue
            target = per_account[owner]
            points = conn.execute("SELECT t, value, reset_at, instance FROM points WHERE series = ? AND t >= ? "
                                  "ORDER BY t", (series_id, int(since))).fetchall()
            if kind == "window":
                before = conn.execute("SELECT t, value, reset_at, instance FROM points WHERE series = ? AND t < ? "
                                      "ORDER BY t DESC LIMIT 1", (series_id, int(since))).fetchone()
                resets = {reset: None if reset is None else _iso(reset) for reset in {p[2] for p in points}}
                target["series"].append({"window": label, "points": [
                    {"t": _iso(t), "used_percent": value, "reset_at": resets[reset]} for t, value, reset, _ in points],
                    "boundaries": [_iso(at) for at in boundaries(points, before, since)]})
            else:
                target["balances"].append({"label": label, "currency": currency,
                                           "points": [{"t": _iso(t), "amount": value} for t, value, _, _ in points]})
        if account is not None:
            if account in per_account:
                body.update(series=per_account[account]["series"], balances=per_account[account]["balances"])
            return body
        body["accounts"] = list(per_account.values())
        if len(per_account) == 1:
            only = body["accounts"][0]
            body.update(series=only["series"], balances=only["balances"])
        return body
    except sqlite3.Error as exc:
        raise HistoryError(f"cannot read {path} ({_reason(exc)})") from None
    finally:
        conn.close()


def boundaries(points: list[tuple], before: tuple | None = None, since: float = 0) -> list[int]:
    """Where one window instance ended and the next began (Unix seconds, oldest first, at
    or after ``since``), from points ``(t, value, reset_at, instance)`` in time order and
    the point just ``before`` them: the chart's dashed reset lines. The instances are the
    writer's decisions (stored with each point), so the chart shows exactly the instances
    alerts and the pace used -- jitter draws nothing. A boundary sits at the old instance's
    reset (the latest one its points reported), or at the new instance's first point when
    that came first (the provider moved the reset, or the old one was unknown)."""
    rows = [before, *points] if before is not None else list(points)
    out: list[int] = []
    known_reset: int | None = None      # the latest reset reported in the instance so far
    for index, (t, _, reset_at, instance) in enumerate(rows):
        if index and instance != rows[index - 1][3]:
            ended = known_reset if known_reset is not None else rows[index - 1][3]
            at = t if ended is None else min(ended, t)
            if at >= since:
                out.append(at)
            known_reset = None
        if reset_at is not None:
            known_reset = reset_at
    return out


def _iso(seconds: int) -> str:
    """Unix seconds → ``YYYY-MM-DDTHH:MM:SSZ``; a 7-day query formats ~4,000 of these, so
    this is ``time.strftime`` (~1 µs) rather than a datetime round trip (~10 µs)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]
