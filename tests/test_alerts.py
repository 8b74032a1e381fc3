"""Alerts (SPEC §14): exactly once per (home, provider, window, threshold, window instance),
delivered through Apprise to a real HTTP receiver on 127.0.0.1, off the probe path."""
from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from probe import ProbeConfig, ProbeService
from probe.monitor.alerts import Alerts, check_notify_urls, list_alerts, mask, parse_thresholds
from probe.monitor.history import History
from probe.pace import iso, parse_instant
from probe.server import create_app
from probe.snapshot import ProbeInfo, Snapshot, Window
from support import RunningApp, run_cli, wait_until

pytestmark = pytest.mark.timeout(60)
NOW = datetime.now(timezone.utc).replace(microsecond=0)


class Receiver:
    """A JSON webhook on 127.0.0.1: what Apprise's ``json://`` delivers to."""

    def __init__(self, fail: int = 0) -> None:
        self.bodies: list[dict] = []
        self.fail_left = fail
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    failing = receiver.fail_left > 0
                    receiver.fail_left -= failing
                    if not failing:
                        receiver.bodies.append(json.loads(body))
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server.server_address[1]}/alerts"

    def titles(self) -> list[str]:
        with self.lock:
            return [b["title"] for b in self.bodies]

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def reading(used: float, *, reset_in_h: float = 2.0, label: str = "Current session", minutes_ago: float = 0,
            path: str = "warm") -> Snapshot:
    window = Window(label, used, 100 - used, iso(NOW + timedelta(hours=reset_in_h)), None, 18000.0)
    snap = Snapshot(provider="anthropic", home="/x", available=True, windows=(window,),
                    fetched_at=iso(NOW - timedelta(minutes=minutes_ago)), probe=ProbeInfo(path, 1.0))
    return snap.with_pace(NOW - timedelta(minutes=minutes_ago))


def start(path, urls, thresholds=(80, 90, 100), retry_first_s=2.0):
    history = History(path)
    assert history.start()
    alerts = Alerts(history, check_notify_urls(urls), thresholds, retry_first_s=retry_first_s)
    history.after_write, history.committed = alerts.record, alerts.committed
    alerts.start()
    return history, alerts


def stop(history, alerts):
    alerts.close()
    history.close()


def test_each_threshold_once_per_window_instance_and_not_again_after_a_restart(tmp_path):
    with Receiver() as receiver:
        history, alerts = start(tmp_path / "h.sqlite3", [receiver.url])
        # 5 h window, reset in 2 h (3 h elapsed = 60 %): 70 -> 85 -> 86 -> 95 -> 95
        for minutes_ago, used in ((50, 70.0), (40, 85.0), (30, 86.0), (20, 95.0), (10, 95.0)):
            history.submit("alice", tmp_path, reading(used, minutes_ago=minutes_ago))
        assert wait_until(lambda: len(receiver.titles()) == 3)
        titles = receiver.titles()
        assert any("at 85%" in t for t in titles) and any("at 95%" in t for t in titles)
        assert sum("runs out before reset" in t for t in titles) == 1
        stop(history, alerts)

        history, alerts = start(tmp_path / "h.sqlite3", [receiver.url])   # a restart
        history.submit("alice", tmp_path, reading(96.0, minutes_ago=5))
        assert history.flush()
        # a new window instance (new reset_at) re-arms every threshold
        history.submit("alice", tmp_path, reading(81.0, reset_in_h=4.9))
        assert wait_until(lambda: len(receiver.titles()) == 4)
        stop(history, alerts)
        assert len(receiver.titles()) == 4
        body = receiver.bodies[0]
        assert "alice" in body["title"] and "anthropic" in body["title"] and "Current session" in body["title"]
        assert "reset at 20" in body["message"] and str(tmp_path) not in json.dumps(receiver.bodies)
        listed = list_alerts(history)
        assert [a["threshold"] for a in listed][:1] == [80]               # most recent first
        assert {a["kind"] for a in listed} == {"threshold", "runs_out"}
        assert all(a["home"] == "alice" and a["reset_at"] for a in listed)


def test_a_runs_out_alert_waits_for_ten_percent_of_the_window(tmp_path):
    """SPEC §14, issue #25: a few minutes of use extrapolate to noise. 19 minutes into a
    5-hour window (6 % elapsed) 8 % used is on pace (no run-out at all), and 12 % used is in
    deficit and would run out -- but no alert before 30 minutes (10 %) have elapsed; the
    same instance alerts once it has."""
    history, alerts = start(tmp_path / "h.sqlite3", [])
    early = {used: reading(used, reset_in_h=(300 - 19) / 60) for used in (8.0, 12.0)}
    assert early[8.0].windows[0].pace.status == "on_track" and early[8.0].windows[0].pace.runs_out_at is None
    assert early[12.0].windows[0].pace.status == "deficit" and early[12.0].windows[0].pace.runs_out_at
    for snap in early.values():
        history.submit("alice", tmp_path, snap)
    assert history.flush()
    assert [a["kind"] for a in list_alerts(history)] == []
    later = reading(20.0, reset_in_h=(300 - 31) / 60)            # 10.3 % elapsed, still in deficit
    assert later.windows[0].pace.runs_out_at
    history.submit("alice", tmp_path, later)
    assert history.flush()
    assert [(a["kind"], a["used_percent"]) for a in list_alerts(history)] == [("runs_out", 20.0)]
    stop(history, alerts)


def test_a_failing_target_is_retried_and_never_slows_recording(tmp_path):
    with Receiver(fail=2) as receiver:
        history, alerts = start(tmp_path / "h.sqlite3", [receiver.url], retry_first_s=0.05)
        history.submit("alice", tmp_path, reading(91.0, reset_in_h=0.25))   # lasts: no runs-out alert
        assert history.flush(5.0)                      # the writer did not wait for delivery
        assert wait_until(lambda: len(receiver.titles()) == 2, 20)      # 80 and 90, after two 500s
        stop(history, alerts)
        conn = sqlite3.connect(history.path)
        assert conn.execute("SELECT count(*) FROM deliveries WHERE delivered_at IS NULL").fetchone()[0] == 0
        conn.close()


def test_an_unreachable_target_never_slows_a_fetch(emulator, make_home, tmp_path):
    from probe.monitor.readings import Reader

    dead = "json://127.0.0.1:9/alerts"     # discard port: nothing listens
    history, alerts = start(tmp_path / "h.sqlite3", [dead], thresholds=(1,))
    home = make_home("alert-fetch", anthropic="sk-ant-oat01-alert-fetch")
    with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls())) as service:
        reader = Reader(service, {"alice": home}, history=history)
        for _ in range(3):
            snap = reader.fetch("alice", "anthropic", refresh=True)
            assert snap.error is None
        assert history.flush(5.0)
    stop(history, alerts)


def test_notify_url_checks():
    assert mask("json://user:s3cret@example.com/x") == "json://user:****@example.com/x"
    assert mask("ntfy://topic") == "ntfy://topic"
    assert parse_thresholds("90, 80,100") == (80, 90, 100)
    for bad in ("", "eighty", "0", "101"):
        with pytest.raises(ValueError):
            parse_thresholds(bad)


def test_serve_refuses_a_malformed_notify_url_and_notify_without_history(tmp_path):
    bad = run_cli("serve", "--port", "1", "--notify", "nosuchscheme://user:hunter2@host/x", "--no-history")
    assert bad.returncode == 2
    bad = run_cli("serve", "--port", "1", "--notify", "nosuchscheme://user:hunter2@host/x",
                  "--history", str(tmp_path / "h.sqlite3"))
    assert bad.returncode == 2 and "nosuchscheme://user:****@host/x" in bad.stderr and "hunter2" not in bad.stderr
    both = run_cli("serve", "--port", "1", "--notify", "json://127.0.0.1:9/x", "--no-history")
    assert both.returncode == 2 and "--no-history" in both.stderr
    threshold = run_cli("serve", "--port", "1", "--alert-at", "80,abc")
    assert threshold.returncode == 2


def test_api_alerts(emulator, make_home, tmp_path):
    with Receiver() as receiver:
        history, alerts = start(tmp_path / "h.sqlite3", [receiver.url])
        history.submit("alice", tmp_path, reading(82.0, reset_in_h=0.5))   # lasts until the reset
        history.submit("mallory", tmp_path, reading(99.0))       # not configured in this app
        assert wait_until(lambda: len(receiver.titles()) >= 2)
        home = make_home("alert-api")
        with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls())) as service:
            with RunningApp(create_app(service, {"alice": home}, "t" * 24, history=history)) as running:
                body = httpx.get(f"{running.url}/api/alerts").json()
        stop(history, alerts)
    assert [(a["home"], a["kind"], a["threshold"], a["used_percent"]) for a in body["alerts"]] == \
        [("alice", "threshold", 80, 82.0)]
    # SPEC §18: the account (its id; its label only for an account of a pool -- this one has none)
    assert set(body["alerts"][0]) == {"home", "provider", "window", "kind", "threshold", "used_percent",
                                      "reset_at", "at", "account", "account_label"}
    assert (body["alerts"][0]["account"], body["alerts"][0]["account_label"]) == ("", None)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_crash_safety_no_alert_lost_duplicates_only_from_kills(tmp_path):
    """1,000 readings crossing a threshold; the pipeline SIGKILLed at random moments and
    restarted. Every alert arrives; a duplicate is only possible where a kill landed
    between a delivery and its record -- at most one per kill (delivery is sequential)."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time
    from collections import Counter
    from pathlib import Path

    count, kills = 1000, 8
    feeder = Path(__file__).with_name("alert_feeder.py")
    rng = random.Random(4)
    with Receiver() as receiver:
        args = [sys.executable, str(feeder), str(tmp_path / "h.sqlite3"), receiver.url, str(count)]
        for _ in range(kills):
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.3, 2.5))   # a random moment: recording or delivering
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        final = subprocess.run(args, capture_output=True, text=True, timeout=240)
        assert final.returncode == 0, final.stderr
        titles = Counter(receiver.titles())
    homes = Counter(t.split()[1] for t in titles.elements())
    assert len(homes) == count, f"lost: {count - len(homes)}"                 # no alert lost
    duplicates = sum(n - 1 for n in homes.values())
    assert duplicates <= kills, f"{duplicates} duplicates for {kills} kills"


# -- window instances (SPEC §14): jitter is one instance, a rollover is a new one -----------
def jittered(used: float, reset: datetime, at: datetime, rng, *, window_s: float = 18000.0) -> Snapshot:
    """A reading at ``at`` whose reset is ``reset`` as a real provider reports it: up to
    ±2 s off either way, with microseconds."""
    shown = reset + timedelta(seconds=rng.uniform(-2.0, 2.0), microseconds=rng.randrange(1, 1_000_000))
    window = Window("Current session", used, 100 - used, shown.isoformat(), None, window_s)
    snap = Snapshot(provider="anthropic", home="/x", available=True, windows=(window,), fetched_at=iso(at),
                    probe=ProbeInfo("warm", 1.0))
    return snap.with_pace(at)


def one_instance(rng, reset: datetime, count: int = 100):
    """``count`` jittered readings of one 5-hour instance, used 60 % -> 100 % over its
    last 2 h: crosses 80, 90 and 100, and runs out before the reset on the way."""
    start = reset - timedelta(hours=2)
    return [jittered(min(100.0, 60.0 + 45.0 * i / (count - 1)), reset, start + timedelta(seconds=70 * i), rng)
            for i in range(count)]


def alert_keys(history) -> list[tuple]:
    return sorted((a["kind"], a["threshold"]) for a in list_alerts(history))


def test_jittered_readings_of_one_window_instance_alert_once_per_threshold_even_across_a_restart(tmp_path):
    import random

    rng = random.Random(19)
    reset = NOW + timedelta(hours=1)
    readings = one_instance(rng, reset)
    resets = [r.windows[0].reset_at for r in readings]
    assert len(set(resets)) == 100 and any(b < a for a, b in zip(resets, resets[1:]))   # backwards too
    with Receiver() as receiver:
        history, alerts = start(tmp_path / "h.sqlite3", [receiver.url])
        for snap in readings[:50]:
            history.submit("alice", tmp_path, snap)
        assert history.flush()
        stop(history, alerts)
        history, alerts = start(tmp_path / "h.sqlite3", [receiver.url])       # a restart mid-instance
        for snap in readings[50:]:
            history.submit("alice", tmp_path, snap)
        assert history.flush()
        assert wait_until(lambda: len(receiver.titles()) >= 4)
        stop(history, alerts)
        assert alert_keys(history) == [("runs_out", None), ("threshold", 80), ("threshold", 90), ("threshold", 100)]
        assert len(receiver.titles()) == 4
    series = history.query("alice", "anthropic", 0)["series"][0]
    assert len(series["points"]) > 40 and series["boundaries"] == []        # no boundary inside the instance


def test_a_rollover_re_arms_exactly_once_and_is_one_boundary(tmp_path):
    import random

    rng = random.Random(7)
    first_reset = NOW - timedelta(hours=3)
    old = one_instance(rng, first_reset, 40)
    # the next instance: the reset one window later, readings past the old reset, 85 % used
    new_reset = first_reset + timedelta(hours=5)
    new = [jittered(85.0 + i * 0.1, new_reset, first_reset + timedelta(minutes=5 + i), rng) for i in range(40)]
    history, alerts = start(tmp_path / "h.sqlite3", [])
    for snap in old + new:
        history.submit("alice", tmp_path, snap)
    assert history.flush()
    stop(history, alerts)
    listed = list_alerts(history)
    of_new = [a for a in listed if parse_instant(a["reset_at"]) > first_reset + timedelta(hours=1)]
    # the new instance: 80 % once, and (85 % five minutes in) runs out once
    assert sorted((a["kind"], a["threshold"]) for a in of_new) == [("runs_out", None), ("threshold", 80)]
    assert len(listed) - len(of_new) == 4                                # the old one: 80, 90, 100, runs out
    series = history.query("alice", "anthropic", 0)["series"][0]
    assert len(series["boundaries"]) == 1
    # at the old instance's reset (give or take its jitter), between its last point and the new first
    boundary = datetime.fromisoformat(series["boundaries"][0].replace("Z", "+00:00"))
    assert abs((boundary - first_reset).total_seconds()) <= 3


def test_a_reset_moved_later_by_more_than_the_tolerance_is_a_new_instance(tmp_path):
    """max(60 s, 1 % of window_s): 180 s for a 5-hour window, 60 s when the length is unknown."""
    reset = NOW + timedelta(hours=2)
    history, alerts = start(tmp_path / "h.sqlite3", [], thresholds=(50,))

    def submit(minute: int, moved_s: float, window_s: float | None) -> None:
        window = Window("W", 60.0, 40.0, iso(reset + timedelta(seconds=moved_s)), None, window_s)
        history.submit("alice", tmp_path, Snapshot(provider="anthropic", home="/x", available=True,
                                                   windows=(window,), fetched_at=iso(NOW + timedelta(minutes=minute)),
                                                   probe=ProbeInfo("warm", 1.0)))

    submit(0, 0, 18000.0)
    submit(1, 170, 18000.0)      # later, within 180 s of the first reading's reset: same instance
    submit(2, -3600, 18000.0)    # earlier, by any amount: same instance
    submit(3, 175, 18000.0)      # the reference is the first reading's reset, not the last one's
    assert history.flush() and len(list_alerts(history)) == 1
    submit(4, 190, 18000.0)      # later by more than 180 s: a new instance, re-armed
    assert history.flush() and len(list_alerts(history)) == 2
    submit(5, 240, None)         # length unknown: the 60 s floor; 50 s after the new reference: same
    submit(6, 249, None)         # 59 s: same
    assert history.flush() and len(list_alerts(history)) == 2
    submit(7, 251, None)         # 61 s: new
    assert history.flush() and len(list_alerts(history)) == 3
    stop(history, alerts)


def test_history_and_alerts_accept_readings_from_probes_that_began_before_a_rotation(emulator, make_home, tmp_path):
    """Issue #26 item 8: only the readings store checked the generation the probe began
    under. A probe of the old account held at the emulator, a rotation, then the release:
    its reading must reach neither the history series nor the alerts -- while a reading
    of the new account, begun after the rotation, reaches both."""
    from probe.monitor.readings import Reader

    old, new = "sk-ant-oat01-gen-old", "sk-ant-oat01-gen-new"
    history, alerts = start(tmp_path / "h.sqlite3", [], thresholds=(1,))
    home = make_home("alert-gen", anthropic=old)
    gate = emulator.hold(old)
    try:
        with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls())) as service:
            reader = Reader(service, {"alice": home}, history=history)
            answers = []
            probe = threading.Thread(target=lambda: answers.append(reader.fetch("alice", "anthropic", refresh=True)))
            probe.start()
            assert emulator.wait_for(1, token=old)       # the old account's probe is in flight
            make_home("alert-gen", anthropic=new)
            service.invalidate(home=home)                 # the rotation
            gate.set()
            probe.join(30)
            assert answers and answers[0].error is None and max(w.used_percent for w in answers[0].windows) >= 1
            assert history.flush()
            assert history.query("alice", "anthropic", 0)["series"] == []
            assert list_alerts(history) == []
            fresh = reader.fetch("alice", "anthropic", refresh=True)    # the new account: recorded
            assert fresh.error is None and emulator.count(token=new) == 1
            assert history.flush()
            assert history.query("alice", "anthropic", 0)["series"] != []
            assert list_alerts(history) != []
    finally:
        gate.set()
        stop(history, alerts)


def test_one_unsendable_alert_row_ends_alert_delivery_for_good(tmp_path, caplog):
    """Second look at issue #26 item 6 (a thread loop ending on an exception): the delivery
    thread caught failures of the send only, so a row it could not even word -- here a
    ``used_percent`` of NULL, as an older or hand-edited file may hold -- raised out of the
    loop and no alert was ever delivered again. That row is logged and retried with back-off;
    the alerts after it are delivered."""
    from probe.monitor.alerts import target_key

    with Receiver() as receiver:
        history, alerts = start(tmp_path / "h.sqlite3", [receiver.url])
        try:
            def insert(conn, used, threshold):
                cursor = conn.execute(
                    "INSERT INTO alerts (home_id, provider, window, kind, threshold, instance, used_percent, reset_at, "
                    "at) VALUES ('alice', 'anthropic', 'Current week', 'threshold', ?, 'x', ?, NULL, 'now')",
                    (threshold, used))
                conn.execute("INSERT INTO deliveries (alert, target) VALUES (?, ?)",
                             (cursor.lastrowid, target_key(receiver.url)))
                return True

            assert history.run_urgent(lambda conn: insert(conn, None, 80))
            assert history.run_urgent(lambda conn: insert(conn, 91.0, 90))
            alerts.committed()
            assert wait_until(lambda: any("at 91%" in t for t in receiver.titles()), 10), receiver.titles()
            assert alerts._thread.is_alive()
        finally:
            stop(history, alerts)
