"""History in SQLite (SPEC §14): points, retention, schema, the read side, the recent
pace, and a broken file that must not stop probing. Real SQLite files in tmp_path."""
from __future__ import annotations

import json
import logging
import os
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from probe import ProbeConfig, ProbeService
from probe.monitor.history import SCHEMA_VERSION, History, query_file
from probe.pace import iso
from probe.monitor.readings import Reader
from probe.server import create_app
from probe.snapshot import Balance, ProbeInfo, Snapshot, Window
from support import RunningApp, run_cli

pytestmark = pytest.mark.timeout(60)
TOKEN = "history-test-token-0123456789"
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def reading(minutes_ago: float, used: float, *, reset_in_h: float = 2.0, label: str = "Current session",
            provider: str = "anthropic", balance: float | None = None, path: str = "warm") -> Snapshot:
    at = NOW - timedelta(minutes=minutes_ago)
    window = Window(label, used, 100 - used, iso(NOW + timedelta(hours=reset_in_h)), None, 18000.0)
    return Snapshot(provider=provider, home="/x", available=True, windows=(window,),
                    balances=() if balance is None else (Balance("Credits", balance, "USD"),),
                    fetched_at=iso(at), probe=ProbeInfo(path, 1.0))


@pytest.fixture
def history(tmp_path):
    store = History(tmp_path / "state" / "history.sqlite3")
    assert store.start()
    yield store
    store.close()


def test_points_when_changed_or_every_5_minutes_and_they_survive_a_restart(tmp_path, history):
    for minutes_ago, used in ((60, 10.0), (59, 10.0), (58, 11.0), (52, 11.0), (40, 11.0), (39, 11.0)):
        history.submit("alice", tmp_path / "alice", reading(minutes_ago, used, balance=5.0))
    history.submit("alice", tmp_path / "alice", reading(30, 50.0, path="cache"))    # not a new reading
    history.submit("alice", tmp_path / "alice", dataclass_replace_error(reading(29, 60.0)))
    history.close()
    reopened = History(history.path)
    assert reopened.start()
    try:
        body = reopened.query("alice", "anthropic", 0)
    finally:
        reopened.close()
    points = body["series"][0]["points"]
    # 60: first; 59: same value within 5 min -> skipped; 58: changed; 52: 6 min later; 40; 39 skipped
    assert [p["used_percent"] for p in points] == [10.0, 11.0, 11.0, 11.0]
    assert [p["t"] for p in points] == [iso(NOW - timedelta(minutes=m)) for m in (60, 58, 52, 40)]
    assert body["series"][0]["window"] == "Current session" and points[0]["reset_at"].endswith("Z")
    assert body["balances"] == [{"label": "Credits", "currency": "USD",
                                 "points": [{"t": iso(NOW - timedelta(minutes=60)), "amount": 5.0},
                                            {"t": iso(NOW - timedelta(minutes=52)), "amount": 5.0},
                                            {"t": iso(NOW - timedelta(minutes=40)), "amount": 5.0}]}]
    conn = sqlite3.connect(history.path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert b"sk-" not in history.path.read_bytes()
    conn.close()


def dataclass_replace_error(snap: Snapshot) -> Snapshot:
    import dataclasses

    from probe.snapshot import ProbeError
    return dataclasses.replace(snap, error=ProbeError("timeout", "x"), stale=True)


def test_retention_prunes_old_points(tmp_path):
    store = History(tmp_path / "h.sqlite3", days=1)
    assert store.start()
    store.submit("alice", tmp_path, reading(3 * 24 * 60, 10.0))    # 3 days old
    store.submit("alice", tmp_path, reading(10, 20.0))
    store.close()
    again = History(tmp_path / "h.sqlite3", days=1)
    assert again.start()
    again.submit("alice", tmp_path, reading(5, 30.0))                # any job prunes first
    assert again.flush()
    assert [p["used_percent"] for p in again.query("alice", "anthropic", 0)["series"][0]["points"]] == [20.0, 30.0]
    again.close()


def test_a_file_from_a_newer_release_is_refused_with_one_error(tmp_path, caplog):
    path = tmp_path / "newer.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with caplog.at_level(logging.ERROR, logger="quota_probe.history"):
        assert not History(path).start()
    assert [r.getMessage() for r in caplog.records if "newer release" in r.getMessage()]


def _broken_service_keeps_probing(emulator, make_home, store: History, caplog, expect: str) -> None:
    home = make_home("hist-broken", deepseek="sk-hist-broken")
    with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls())) as service:
        reader = Reader(service, {"alice": home}, history=store if store.available else None)
        with caplog.at_level(logging.ERROR, logger="quota_probe.history"):
            for _ in range(3):
                snap = reader.fetch("alice", "deepseek", refresh=True)
                assert snap.error is None and snap.available
            store.flush()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "quota_probe.history"]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert expect in errors[0].getMessage()


def test_corrupt_file_is_one_logged_error_and_probing_goes_on(emulator, make_home, tmp_path, caplog):
    path = tmp_path / "corrupt.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    store = History(path)
    with caplog.at_level(logging.ERROR, logger="quota_probe.history"):
        assert not store.start()
    _broken_service_keeps_probing(emulator, make_home, store, caplog, "cannot be used")


def test_unwritable_file_is_one_logged_error_and_probing_goes_on(emulator, make_home, tmp_path, caplog):
    if os.geteuid() == 0:
        # root writes through permissions: make the directory a file's place instead
        blocker = tmp_path / "not-a-dir"
        blocker.write_text("x")
        store = History(blocker / "history.sqlite3")
    else:
        locked_dir = tmp_path / "ro"
        locked_dir.mkdir(mode=0o500)
        store = History(locked_dir / "history.sqlite3")
    with caplog.at_level(logging.ERROR, logger="quota_probe.history"):
        assert not store.start()
    _broken_service_keeps_probing(emulator, make_home, store, caplog, "cannot be used")


def test_locked_file_is_one_logged_error_per_outage(emulator, make_home, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("probe.monitor.history.BUSY_TIMEOUT_S", 0.05)
    store = History(tmp_path / "locked.sqlite3")
    assert store.start()
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")      # another process's writer, holding the lock
    try:
        _broken_service_keeps_probing(emulator, make_home, store, caplog, "locked")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with caplog.at_level(logging.WARNING, logger="quota_probe.history"):
        store.submit("alice", tmp_path, reading(1, 42.0))
        assert store.flush()
    assert any("resumed" in r.getMessage() for r in caplog.records)
    store.close()


def test_recent_basis_with_enough_history_else_average(tmp_path, history):
    """≥ 3 points spanning ≥ 10 % of the window: the projection follows the recent burn."""
    # a 5-hour window reset in 2 h: 3 h elapsed. Slow start, then a fast recent burn.
    for minutes_ago, used in ((170, 2.0), (60, 10.0), (40, 20.0), (20, 30.0)):
        history.submit("alice", tmp_path, reading(minutes_ago, used))
    assert history.flush()
    now_reading = reading(0, 45.0)
    average = now_reading.with_pace(NOW).windows[0].pace
    # 45 % in 3 h is 0.25 %/min: the other 55 % would take 220 min, the reset is in 120
    assert average.basis == "average" and average.lasts_until_reset
    recent = history.with_recent_pace("alice", now_reading.with_pace(NOW)).windows[0].pace
    # the last hour burnt ~0.58 %/min: 55 % is gone in ~95 min, before the reset
    assert recent.basis == "recent" and not recent.lasts_until_reset
    assert recent.runs_out_at < now_reading.windows[0].reset_at      # ISO UTC strings sort as instants
    assert recent.expected_used_percent == average.expected_used_percent
    too_little = History(tmp_path / "other.sqlite3")
    assert too_little.start()
    too_little.submit("alice", tmp_path, reading(5, 38.0))
    assert too_little.flush()
    assert too_little.with_recent_pace("alice", now_reading.with_pace(NOW)).windows[0].pace.basis == "average"
    too_little.close()


def test_recent_basis_projects_run_out_from_the_recent_rate(tmp_path, history):
    for minutes_ago, used in ((60, 10.0), (40, 25.0), (20, 40.0)):
        history.submit("alice", tmp_path, reading(minutes_ago, used, reset_in_h=3.0))
    assert history.flush()
    pace = history.with_recent_pace("alice", reading(0, 55.0, reset_in_h=3.0).with_pace(NOW)).windows[0].pace
    assert pace.basis == "recent" and not pace.lasts_until_reset
    runs_out = datetime.fromisoformat(pace.runs_out_at.replace("Z", "+00:00"))
    assert abs((runs_out - (NOW + timedelta(minutes=60))).total_seconds()) <= 60   # 45 % left at 0.75 %/min


def test_api_history_and_probe_history(emulator, make_home, tmp_path, history):
    home = make_home("hist-api", anthropic="sk-ant-oat01-hist-api")
    for minutes_ago, used in ((30, 20.0), (20, 30.0), (10, 45.0)):
        history.submit("alice", home.resolve(), reading(minutes_ago, used))
    assert history.flush()
    with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls())) as service:
        app = create_app(service, {"alice": home}, TOKEN, history=history)
        with RunningApp(app) as running, httpx.Client(base_url=running.url, timeout=30) as client:
            body = client.get("/api/history", params={"home": "alice", "provider": "anthropic"}).json()
            assert body["home"] == "alice" and body["provider"] == "anthropic"
            assert [p["used_percent"] for p in body["series"][0]["points"]] == [20.0, 30.0, 45.0]
            since = iso(NOW - timedelta(minutes=15))
            later = client.get("/api/history", params={"home": "alice", "provider": "anthropic", "since": since})
            assert [p["used_percent"] for p in later.json()["series"][0]["points"]] == [45.0]
            assert client.get("/api/history", params={"home": "nobody", "provider": "anthropic"}).status_code == 404
            assert client.get("/api/history", params={"home": "alice", "provider": "nope"}).status_code == 400
            assert client.get("/api/history", params={"home": "alice", "provider": "anthropic",
                                                      "since": "yesterday"}).status_code == 400
            assert str(home) not in later.text
        no_history = create_app(service, {"alice": home}, TOKEN)
        with RunningApp(no_history) as running:
            off = httpx.get(f"{running.url}/api/history", params={"home": "alice", "provider": "anthropic"})
            assert off.status_code == 404 and off.json()["error"]["code"] == "history_off"
    result = run_cli("history", "--home", str(home), "--provider", "anthropic", "--history", str(history.path))
    assert result.returncode == 0, result.stderr
    assert "Current session" in result.stdout and "now 45.0%" in result.stdout
    assert any(ch in result.stdout for ch in "▁▂▃▄▅▆▇█")
    as_json = json.loads(run_cli("history", "--home", str(home), "--provider", "anthropic", "--history",
                                 str(history.path), "--json").stdout)
    assert as_json == query_file(history.path, "anthropic", 0, home_path=str(home.resolve())) or \
        as_json["series"][0]["points"][-1]["used_percent"] == 45.0
    missing = run_cli("history", "--provider", "anthropic", "--history", str(Path(history.path).with_suffix(".nope")))
    assert missing.returncode == 1 and "no history file" in missing.stderr


def test_fetches_through_the_reader_are_recorded(emulator, make_home, history):
    home = make_home("hist-reader", anthropic="sk-ant-oat01-hist-reader", deepseek="sk-hist-reader")
    with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls())) as service:
        reader = Reader(service, {"bob": home}, history=history)
        reader.fetch("bob", "anthropic", refresh=True)
        reader.fetch("bob", "deepseek", refresh=True)
        reader.fetch("bob", "deepseek", refresh=False)    # a cache hit: not a new reading
        assert history.flush()
    anthropic = history.query("bob", "anthropic", 0)
    assert {s["window"] for s in anthropic["series"]} >= {"Current session", "Current week"}
    deepseek = history.query("bob", "deepseek", 0)
    assert deepseek["series"] == [] and len(deepseek["balances"]) >= 1
    assert all(len(b["points"]) == 1 for b in deepseek["balances"])


def jittered_reading(minutes_ago: float, used: float, reset: datetime, rng, *, window_s: float = 18000.0) -> Snapshot:
    """A reading whose reset is ``reset`` as a provider reports it: ±2 s off, microseconds."""
    shown = reset + timedelta(seconds=rng.uniform(-2.0, 2.0), microseconds=rng.randrange(1, 1_000_000))
    window = Window("Current session", used, 100 - used, shown.isoformat(), None, window_s)
    return Snapshot(provider="anthropic", home="/x", available=True, windows=(window,),
                    fetched_at=iso(NOW - timedelta(minutes=minutes_ago)), probe=ProbeInfo("warm", 1.0))


def test_recent_basis_keeps_the_instance_across_reset_jitter_and_drops_it_at_a_rollover(tmp_path, history):
    """The ring of the current instance follows SPEC §14's rule: a reset that jitters from
    read to read keeps its points (an exact comparison would empty it at every read and
    fall back to "average"); a rollover starts it again."""
    import random

    rng = random.Random(5)
    reset = NOW + timedelta(hours=2)
    for minutes_ago, used in ((60, 10.0), (40, 25.0), (20, 40.0)):
        history.submit("alice", tmp_path, jittered_reading(minutes_ago, used, reset, rng))
    assert history.flush()
    now_reading = jittered_reading(0, 55.0, reset, rng).with_pace(NOW)
    assert len(history.recent_points("alice", "anthropic", "Current session", now_reading.windows[0].reset_at,
                                     18000.0)) == 3
    pace = history.with_recent_pace("alice", now_reading).windows[0].pace
    assert pace.basis == "recent" and not pace.lasts_until_reset       # 45 % left at 0.75 %/min: 60 min
    rolled = jittered_reading(0, 55.0, reset + timedelta(hours=5), rng)
    assert history.recent_points("alice", "anthropic", "Current session", rolled.windows[0].reset_at, 18000.0) == []
    history.close()
    again = History(history.path)                                       # a restart keeps the instance's ring
    assert again.start()
    again.load_recent(["alice"])
    assert again.flush()
    assert again.with_recent_pace("alice", now_reading).windows[0].pace.basis == "recent"
    again.close()


def test_jitter_writes_no_point_and_draws_no_boundary(tmp_path, history):
    """A point is written when the value changed, the instance changed or 5 minutes passed:
    a jittered reset alone is none of these."""
    import random

    rng = random.Random(11)
    reset = NOW + timedelta(hours=2)
    for i in range(30):
        history.submit("alice", tmp_path, jittered_reading(30 - i * 0.1, 42.0, reset, rng))
    assert history.flush()
    series = history.query("alice", "anthropic", 0)["series"][0]
    assert len(series["points"]) == 1 and series["boundaries"] == []


def _version_1_file(path: Path, rng) -> datetime:
    """A history file as schema 1 wrote it, with the duplicates its exact-reset alert key
    let through: points of one jittered instance and two 80 % alerts for it."""
    from probe.monitor.history import MIGRATIONS

    conn = sqlite3.connect(path, isolation_level=None)
    for statement in MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO homes (id, home_id, path) VALUES (1, 'alice', '/srv/alice')")
    conn.execute("INSERT INTO series (id, home, provider, kind, label) VALUES (1, 1, 'anthropic', 'window', "
                 "'Current session')")
    reset = NOW + timedelta(hours=2)
    for i, minutes_ago in enumerate((50, 40, 30, 20)):
        at = int((NOW - timedelta(minutes=minutes_ago)).timestamp())
        shown = int((reset + timedelta(seconds=rng.uniform(-2, 2))).timestamp())
        conn.execute("INSERT INTO points (series, t, value, reset_at) VALUES (1, ?, ?, ?)", (at, 70.0 + 5 * i, shown))
        if i >= 2:   # 80 % and 85 %: the same threshold, "two instances" to schema 1
            conn.execute("INSERT INTO alerts (home_id, provider, window, kind, threshold, instance, used_percent, "
                         "reset_at, at) VALUES ('alice', 'anthropic', 'Current session', 'threshold', 80, ?, ?, ?, ?)",
                         (iso(datetime.fromtimestamp(shown, timezone.utc)), 70.0 + 5 * i,
                          iso(datetime.fromtimestamp(shown, timezone.utc)), iso(datetime.fromtimestamp(at, timezone.utc))))
    conn.close()
    return reset


def test_a_schema_1_file_is_migrated_instances_and_alert_keys_included(tmp_path):
    import random

    from probe.monitor.alerts import Alerts, list_alerts

    rng = random.Random(23)
    path = tmp_path / "v1.sqlite3"
    reset = _version_1_file(path, rng)
    store = History(path)
    assert store.start()
    alerts = Alerts(store, [], (80,))
    store.after_write = alerts.record
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    # every point in one instance, named by the first point's reset
    first = conn.execute("SELECT reset_at FROM points ORDER BY t LIMIT 1").fetchone()[0]
    assert conn.execute("SELECT DISTINCT instance FROM points").fetchall() == [(first,)]
    # the first alert now carries the instance's key; the duplicate keeps its old text
    keys = [k for (k,) in conn.execute("SELECT instance FROM alerts ORDER BY id")]
    assert keys[0] == time_iso(first) and keys[1] != keys[0]
    conn.close()
    store.submit("alice", tmp_path, jittered_reading(5, 90.0, reset, rng))   # same instance, jittered
    assert store.flush()
    store.close()
    assert len(list_alerts(store)) == 2                                  # no third 80 % alert
    assert query_file(path, "anthropic", 0, home_id="alice")["series"][0]["boundaries"] == []


def time_iso(seconds: int) -> str:
    return iso(datetime.fromtimestamp(seconds, timezone.utc))


def _stepped(seconds_since_start: float, wall_step_s: float, used: float) -> Snapshot:
    """A reading taken ``seconds_since_start`` into the run, stamped by a wall clock that
    was stepped by ``wall_step_s``."""
    at = NOW + timedelta(seconds=seconds_since_start + wall_step_s)
    window = Window("Current session", used, 100 - used, iso(NOW + timedelta(hours=4)), None, 18000.0)
    return Snapshot(provider="anthropic", home="/x", available=True, windows=(window,), fetched_at=iso(at),
                    probe=ProbeInfo("warm", 1.0))


@pytest.mark.parametrize("steps", [(0, -3600, -3600), (0, 3600, 0)], ids=["backward", "forward-then-back"])
def test_a_backward_clock_step_stops_history_points_for_the_length_of_the_step(tmp_path, steps):
    """Issue #26 item 9: a point was dropped whenever its wall-clock stamp was not after the
    series' last one, so after a backward step of an hour no point was written for an hour.
    The monotonic clock (injected here) says the reading is newer: it is written, after the
    last point; a forward step and its correction keep the series going too."""
    elapsed = [0.0]
    store = History(tmp_path / "h.sqlite3", clock=lambda: elapsed[0])
    assert store.start()
    try:
        for index, (step_s, used) in enumerate(zip(steps, (10.0, 20.0, 30.0))):
            elapsed[0] = index * 600.0
            store.submit("alice", "/x", _stepped(elapsed[0], step_s, used))
        assert store.flush()
        (series,) = store.query("alice", "anthropic", 0)["series"]
    finally:
        store.close()
    points = series["points"]
    assert [p["used_percent"] for p in points] == [10.0, 20.0, 30.0]
    times = [parse_instant_z(p["t"]) for p in points]
    assert times == sorted(times) and len(set(times)) == 3


def parse_instant_z(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")


def test_the_history_database_is_created_0644_in_a_0755_directory(tmp_path):
    """Issue #26 item 10: the history file holds home paths, quota history and alerts; it
    was created world-readable in a world-readable directory. Like the disk cache: the
    directory it creates is 0700, the database and its WAL/SHM files 0600 -- whatever the
    umask -- and a file an older release left 0644 is tightened at start-up."""
    import stat

    old_umask = os.umask(0o022)
    try:
        store = History(tmp_path / "state" / "quota-probe" / "history.sqlite3")
        assert store.start()
        store.submit("alice", "/x", reading(1, 10.0))
        assert store.flush()
        mode = lambda p: stat.S_IMODE(p.stat().st_mode)   # noqa: E731
        assert mode(tmp_path / "state" / "quota-probe") == 0o700
        files = sorted((tmp_path / "state" / "quota-probe").iterdir())
        assert {p.name for p in files} >= {"history.sqlite3", "history.sqlite3-wal", "history.sqlite3-shm"}
        assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
        store.close()
        old = tmp_path / "old.sqlite3"
        old.touch(mode=0o644)
        os.chmod(old, 0o644)
        again = History(old)
        assert again.start()
        again.close()
        assert mode(old) == 0o600
    finally:
        os.umask(old_umask)


def test_the_history_writer_ends_for_good_on_an_exception_other_than_sqlite3_error(tmp_path, caplog):
    """Second look at issue #26 item 6 (a thread loop ending on an exception): the writer
    caught ``sqlite3.Error`` only, so a bug in a job -- here the alert hook raising on one
    reading -- ended the thread for good: no point was written again, every ``flush`` and
    every alert delivery record (``run_urgent``) waited out its timeout, and the queue grew
    without bound. The failed reading is dropped with one logged error; the next one is
    written."""
    store = History(tmp_path / "h.sqlite3")
    assert store.start()
    calls = []

    def hook(conn, home_id, snap, instances):
        calls.append(home_id)
        if len(calls) == 1:
            raise RecursionError("maximum recursion depth exceeded")

    store.after_write = hook
    try:
        with caplog.at_level(logging.ERROR, logger="quota_probe.history"):
            store.submit("alice", "/x", reading(10, 10.0))
            store.submit("alice", "/x", reading(5, 20.0))
            assert store.flush(5.0), "the writer thread is gone"
        assert store.run_urgent(lambda conn: conn.execute("SELECT 1"), 5.0)
        (series,) = store.query("alice", "anthropic", 0)["series"]
        assert [p["used_percent"] for p in series["points"]] == [20.0]
        assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    finally:
        store.close()


def test_a_backward_clock_step_across_a_restart_stops_history_points(tmp_path):
    """The same step, with a restart in between (the monotonic clock starts afresh): the
    first reading after the restart goes after what the file holds, and the series goes on."""
    path = tmp_path / "h.sqlite3"
    first = History(path)
    assert first.start()
    first.submit("alice", "/x", _stepped(0, 0, 10.0))
    assert first.flush()
    first.close()
    elapsed = [0.0]
    second = History(path, clock=lambda: elapsed[0])
    assert second.start()
    try:
        second.submit("alice", "/x", _stepped(600, -3600, 20.0))
        elapsed[0] = 600.0
        second.submit("alice", "/x", _stepped(1200, -3600, 30.0))
        assert second.flush()
        (series,) = second.query("alice", "anthropic", 0)["series"]
    finally:
        second.close()
    points = series["points"]
    assert [p["used_percent"] for p in points] == [10.0, 20.0, 30.0]
    times = [parse_instant_z(p["t"]) for p in points]
    assert times == sorted(times) and len(set(times)) == 3
