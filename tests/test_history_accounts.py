"""History and alerts per account (SPEC §18 over §14): points, charts and alerts keyed by
the account, a 0.3 history file migrated without losing a point or re-sending an alert,
and labels only where the user reads them (never in a log line). Real SQLite files, a real
Apprise ``json://`` delivery to a webhook on 127.0.0.1."""
from __future__ import annotations

import logging
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from probe.monitor.alerts import Alerts, check_notify_urls, list_alerts
from probe.monitor.history import SCHEMA_VERSION, History, query_file
from probe.pace import iso
from probe.pool_view import assemble
from probe.snapshot import Account, ProbeInfo, Snapshot, Window
from support import wait_until
from test_alerts import Receiver

pytestmark = pytest.mark.timeout(60)
NOW = datetime.now(timezone.utc).replace(microsecond=0)
RESET = NOW + timedelta(days=2)
LABEL = "alice@example.com"


def account(account_id: str, used: float | None, *, label: str = LABEL, status: str = "available") -> Account:
    windows = () if used is None else (Window("Weekly", used, 100 - used, iso(RESET), None, 604800.0),)
    return Account(account_id, label, "manual", status, windows=windows, probed=used is not None)


def reading(minutes_ago: float, *accounts: Account) -> Snapshot:
    at = NOW - timedelta(minutes=minutes_ago)
    snap = Snapshot(provider="openai-codex", home="/x", available=True, fetched_at=iso(at),
                    probe=ProbeInfo("warm", 1.0), accounts=accounts)
    return assemble(snap)


def version_03_file(path) -> None:
    """A history file exactly as quota-probe 0.3 left it (schema 2, its DDL written out
    here rather than taken from the code under test): one Codex window series of three
    points in one window instance, and its 80 % alert, already delivered."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript("""
        CREATE TABLE homes (id INTEGER PRIMARY KEY, home_id TEXT NOT NULL UNIQUE, path TEXT NOT NULL);
        CREATE TABLE series (id INTEGER PRIMARY KEY, home INTEGER NOT NULL REFERENCES homes(id),
               provider TEXT NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('window', 'balance')),
               label TEXT NOT NULL, currency TEXT NOT NULL DEFAULT '',
               UNIQUE (home, provider, kind, label, currency));
        CREATE TABLE points (series INTEGER NOT NULL, t INTEGER NOT NULL, value REAL NOT NULL,
               reset_at INTEGER, instance INTEGER, PRIMARY KEY (series, t)) WITHOUT ROWID;
        CREATE TABLE alerts (id INTEGER PRIMARY KEY, home_id TEXT NOT NULL, provider TEXT NOT NULL,
               window TEXT NOT NULL, kind TEXT NOT NULL, threshold INTEGER NOT NULL,
               instance TEXT NOT NULL, used_percent REAL, reset_at TEXT, at TEXT NOT NULL,
               UNIQUE (home_id, provider, window, kind, threshold, instance));
        CREATE TABLE deliveries (alert INTEGER NOT NULL REFERENCES alerts(id), target TEXT NOT NULL,
               delivered_at TEXT, attempts INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (alert, target));
        PRAGMA user_version = 2;
    """)
    reset = int(RESET.timestamp())
    conn.execute("INSERT INTO homes VALUES (1, 'alice', '/srv/alice')")
    conn.execute("INSERT INTO series (id, home, provider, kind, label) VALUES (7, 1, 'openai-codex', 'window', "
                 "'Weekly')")
    for minutes_ago, used in ((90, 60.0), (60, 75.0), (30, 82.0)):
        conn.execute("INSERT INTO points VALUES (7, ?, ?, ?, ?)",
                     (int((NOW - timedelta(minutes=minutes_ago)).timestamp()), used, reset, reset))
    conn.execute("INSERT INTO alerts VALUES (3, 'alice', 'openai-codex', 'Weekly', 'threshold', 80, ?, 82.0, ?, ?)",
                 (iso(RESET), iso(RESET), iso(NOW - timedelta(minutes=30))))
    conn.execute("INSERT INTO deliveries VALUES (3, 'old-target', ?, 1)", (iso(NOW - timedelta(minutes=29)),))
    conn.close()


def start(path, urls=()):
    history = History(path)
    assert history.start()
    alerts = Alerts(history, check_notify_urls(urls), (80, 90, 100), retry_first_s=0.05)
    history.after_write, history.committed = alerts.record, alerts.committed
    alerts.start()
    return history, alerts


def test_a_03_file_migrates_to_the_account_that_produced_it_losing_nothing_and_sending_nothing_twice(tmp_path):
    path = tmp_path / "h.sqlite3"
    version_03_file(path)
    with Receiver() as receiver:
        history, alerts = start(path, [receiver.url])
        try:
            assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
            # before any 0.4 reading: the points are all there, under the unknown account ''
            before = history.query("alice", "openai-codex", 0)
            assert [p["used_percent"] for p in before["series"][0]["points"]] == [60.0, 75.0, 82.0]
            # the provider's only account answers, still in the 80 % window instance (85 %)
            history.submit("alice", tmp_path, reading(5, account("env:OPENAI_API_KEY", 85.0)))
            assert history.flush()
            body = history.query("alice", "openai-codex", 0)
            assert [p["used_percent"] for p in body["series"][0]["points"]] == [60.0, 75.0, 82.0, 85.0]
            assert [a["account"] for a in body["accounts"]] == ["env:OPENAI_API_KEY"]
            assert history.query("alice", "openai-codex", 0, account="env:OPENAI_API_KEY")["series"] == body["series"]
            alerted = list_alerts(history)
            assert [(a["threshold"], a["account"]) for a in alerted] == [(80, "env:OPENAI_API_KEY")]
            # 91 % is new: one 90 % alert, to the account; nothing else is sent
            history.submit("alice", tmp_path, reading(1, account("env:OPENAI_API_KEY", 91.0)))
            assert history.flush()
            assert wait_until(lambda: len(receiver.titles()) == 1)
            assert not wait_until(lambda: len(receiver.titles()) > 1, timeout_s=0.5)
            assert receiver.titles() == ["quota-probe: alice openai-codex Weekly at 91%"]   # one account: 0.3's text
            assert [(a["threshold"], a["account"]) for a in list_alerts(history)] == \
                [(90, "env:OPENAI_API_KEY"), (80, "env:OPENAI_API_KEY")]
        finally:
            alerts.close()
            history.close()


def test_a_03_file_of_a_provider_that_now_pools_goes_to_its_first_account(tmp_path):
    """Which pooled account produced 0.3's points is not in the file: they go to the first
    account (Hermes' priority order, the one Hermes itself uses first) -- documented in
    History._adopt_legacy and the README. The other accounts start their own series."""
    path = tmp_path / "h.sqlite3"
    version_03_file(path)
    history, alerts = start(path)
    try:
        history.submit("alice", tmp_path, reading(5, account("first", 84.0), account("second", 10.0, label="bob")))
        assert history.flush()
        body = history.query("alice", "openai-codex", 0)
        assert body["series"] == [] and [a["account"] for a in body["accounts"]] == ["first", "second"]
        first = history.query("alice", "openai-codex", 0, account="first")
        assert first["account"] == "first"
        assert [p["used_percent"] for p in first["series"][0]["points"]] == [60.0, 75.0, 82.0, 84.0]
        assert [p["used_percent"] for p in history.query("alice", "openai-codex", 0, account="second")
                ["series"][0]["points"]] == [10.0]
        assert [(a["threshold"], a["account"]) for a in list_alerts(history)] == [(80, "first")]   # not again
    finally:
        alerts.close()
        history.close()


def test_each_account_alerts_on_its_own_naming_its_label_which_no_log_line_carries(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with Receiver(fail=1) as receiver:     # one failed delivery: the retry path logs too
        history, alerts = start(tmp_path / "h.sqlite3", [receiver.url])
        try:
            # two accounts, one at 85 %: one alert, for that account, naming its label
            history.submit("alice", tmp_path, reading(3, account("acct-a", 85.0), account("acct-b", 20.0, label="bob")))
            # the other account reaching 80 % later is its own alert; the first's repeats nothing
            history.submit("alice", tmp_path, reading(2, account("acct-a", 86.0), account("acct-b", 81.0, label="bob")))
            # a cooling account (not probed) decides nothing, whatever its last windows say
            history.submit("alice", tmp_path, reading(1, account("acct-a", 87.0),
                                                      account("acct-b", None, label="bob", status="exhausted")))
            assert history.flush()
            assert wait_until(lambda: len(receiver.titles()) == 2)
            assert sorted(receiver.titles()) == [f"quota-probe: alice openai-codex ({LABEL}) Weekly at 85%",
                                                 "quota-probe: alice openai-codex (bob) Weekly at 81%"]
            rows = list_alerts(history)
            assert [(a["account"], a["account_label"], a["threshold"]) for a in rows] == \
                [("acct-b", "bob", 80), ("acct-a", LABEL, 80)]
            body = history.query("alice", "openai-codex", 0)
            assert [[p["used_percent"] for p in a["series"][0]["points"]] for a in body["accounts"]] == \
                [[85.0, 86.0, 87.0], [20.0, 81.0]]
        finally:
            alerts.close()
            history.close()
    # our log lines (Apprise's own DEBUG lines echo the payload it sends: that is the notification)
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("quota_probe"))
    assert "delivery to a json:// target failed" in logged
    assert LABEL not in logged and "bob" not in logged


def test_the_snapshot_windows_of_a_pool_take_their_best_accounts_recent_pace(tmp_path):
    """The recent pace is kept per account: a pool's best window shows the pace of the
    account it comes from, never one mixed from several accounts' points."""
    history = History(tmp_path / "h.sqlite3")
    assert history.start()
    try:
        for minutes_ago, used in ((600, 10.0), (400, 20.0), (200, 30.0)):
            snap = reading(minutes_ago, account("a", used), account("b", 5.0, label="bob"))
            history.submit("alice", tmp_path, snap.with_pace(NOW - timedelta(minutes=minutes_ago)))
        assert history.flush()
        now = reading(0, account("a", 40.0), account("b", 5.0, label="bob")).with_pace(NOW)
        paced = history.with_recent_pace("alice", now)
        by_id = {a.id: a for a in paced.accounts}
        assert paced.pool.best[0].account_id == "b"
        assert paced.windows[0].pace == by_id["b"].windows[0].pace
        assert query_file(history.path, "openai-codex", 0, home_id="alice", account="nobody")["series"] == []
    finally:
        history.close()


def test_api_history_and_probe_history_per_account(emulator, make_home, tmp_path):
    """Over HTTP and the CLI: ``account=ID`` answers that account's series; without it a
    pool's body lists every account (``accounts``) and ``probe history`` prints each."""
    import httpx

    from probe import ProbeConfig, ProbeService
    from probe.server import create_app
    from support import RunningApp, run_cli

    home = make_home("hist-accounts", openrouter="sk-or-hist")
    history = History(tmp_path / "h.sqlite3")
    assert history.start()
    try:
        for minutes_ago, first, second in ((30, 20.0, 70.0), (20, 30.0, 75.0)):
            history.submit("alice", home.resolve(), reading(minutes_ago, account("acct-a", first),
                                                            account("acct-b", second, label="bob")))
        assert history.flush()
        with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls())) as service, \
                RunningApp(create_app(service, {"alice": home}, "t" * 24, history=history)) as running, \
                httpx.Client(base_url=running.url, timeout=30) as client:
            params = {"home": "alice", "provider": "openai-codex"}
            body = client.get("/api/history", params=params).json()
            assert body["series"] == [] and [a["account"] for a in body["accounts"]] == ["acct-a", "acct-b"]
            one = client.get("/api/history", params={**params, "account": "acct-b"}).json()
            assert one["account"] == "acct-b" and "accounts" not in one
            assert [p["used_percent"] for p in one["series"][0]["points"]] == [70.0, 75.0]
            assert client.get("/api/history", params={**params, "account": ""}).status_code == 400
            assert LABEL not in client.get("/api/history", params=params).text   # ids, not labels
        text = run_cli("history", "--home", str(home), "--provider", "openai-codex", "--history",
                       str(history.path)).stdout
        assert "  account acct-a" in text and "  account acct-b" in text and "now 75.0%" in text
        only = run_cli("history", "--home", str(home), "--provider", "openai-codex", "--history",
                       str(history.path), "--account", "acct-a").stdout
        assert "account acct-a history" in only and "now 30.0%" in only and "75.0" not in only
    finally:
        history.close()
