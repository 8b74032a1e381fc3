"""Alerts (SPEC §14): a notification when a window first reaches 80/90/100 % (``--alert-at``)
and when its pace first says it runs out before the reset -- once per window instance, not
on every poll and not again after a restart.

Outbox, so "exactly once" survives crashes as far as a crash allows:

1. **Deciding** runs on the history writer thread, inside the same transaction as the
   reading's points: ``INSERT OR IGNORE`` of the alert row, whose UNIQUE key *is* the
   exactly-once key (home id, provider, account, window, kind, threshold, window instance), plus one
   ``deliveries`` row per notify target. The window instance is the one the history
   writer decided for this reading in the same transaction (SPEC §14's rule,
   :mod:`probe.monitor.instances`; stored as its reference reset, e.g. ``2030-01-01T05:00:00Z``),
   so a reset that jitters from read to read is still one instance and one key. A second
   reading above the threshold inserts nothing; a new window instance is a new key, so it
   re-arms by itself. Nothing is sent here: a probe never waits for a notification.
2. **Delivering** runs on this module's own thread: it sends every undelivered row through
   Apprise (new rows are signalled after their commit; at start-up it scans, so an alert
   recorded just before a crash is sent after the restart), retries a failing target with
   exponential back-off (2 s doubling, capped at 10 min), and records each success through
   the writer.

**Which way it errs:** a crash between a successful send and the record of it re-sends
that one alert after the restart -- at least once, never lost. A missed "your quota is
gone" costs more than hearing it twice; every step before the send is transactional, so
this window (one network round trip) is the only place a duplicate can come from.

Texts name the home id, provider, window, used % and reset time -- never a path, a token or
a notify URL (targets are stored as a hash, and logged by scheme only).
"""
from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from probe.monitor.history import History, connect, recorded_accounts
from probe.monitor.instances import Instance
from probe.pace import Pace, parse_instant
from probe.redact import mask
from probe.snapshot import Snapshot

log = logging.getLogger("quota_probe.alerts")

DEFAULT_THRESHOLDS = (80, 90, 100)
RETRY_FIRST_S = 2.0
RETRY_MAX_S = 600.0
#: the delivery thread also looks for work this often (a signal can be missed across a crash)
SCAN_EVERY_S = 5.0
#: the ``threshold`` stored for a runs-out alert (NULL would defeat the UNIQUE key)
RUNS_OUT = 0
#: a runs-out alert waits until this share of the window has elapsed (SPEC §14): earlier, a
#: few minutes of use extrapolate to noise (8 % used 19 minutes into 5 hours "runs out")
RUNS_OUT_MIN_ELAPSED_PERCENT = 10.0


def runs_out_due(pace: Pace | None) -> bool:
    """Whether a reading's pace warrants a runs-out alert: it projects a run-out before the
    reset and at least 10 % of the window has elapsed (the pace's expected share *is* the
    elapsed share)."""
    return pace is not None and pace.runs_out_at is not None and \
        pace.expected_used_percent >= RUNS_OUT_MIN_ELAPSED_PERCENT


class NotifyUrlError(ValueError):
    pass


def check_notify_urls(urls: Iterable[str]) -> list[str]:
    """Every URL Apprise can deliver to; NotifyUrlError naming (masked) the first it cannot."""
    import apprise

    checked = []
    for url in urls:
        if not apprise.Apprise().add(url):
            raise NotifyUrlError(f"--notify {mask(url)!r} is not a notification URL Apprise understands.")
        checked.append(url)
    return checked


def parse_thresholds(text: str) -> tuple[int, ...]:
    """``"80,90,100"`` → (80, 90, 100); ValueError for anything but whole percents 1-100."""
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"--alert-at takes whole percents like 80,90,100, not {text[:40]!r}") from None
    if not values or not all(1 <= v <= 100 for v in values):
        raise ValueError("--alert-at thresholds must be between 1 and 100")
    return tuple(values)


def target_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def _when(iso_text: str | None) -> str:
    when = parse_instant(iso_text)
    return "an unknown time" if when is None else when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def message(row: dict[str, Any]) -> tuple[str, str]:
    """(title, body) of an alert row. An account of a provider with several names its
    label (``account_label``, SPEC §18) after the provider; a provider's only account is
    not named (the texts are 0.3's)."""
    who = row["provider"] if not row.get("account_label") else f"{row['provider']} ({row['account_label']})"
    where = f"{row['home']} · {who} · {row['window']}"
    used = row["used_percent"]
    if row["kind"] == "runs_out":
        return (f"quota-probe: {row['home']} {who} {row['window']} runs out before reset",
                f"{where}: {used:.1f}% used; at this pace it runs out before the reset at "
                f"{_when(row['reset_at'])}.")
    return (f"quota-probe: {row['home']} {who} {row['window']} at {used:.0f}%",
            f"{where}: {used:.1f}% used (alert at {row['threshold']}%); resets at {_when(row['reset_at'])}.")


@dataclass
class _Retry:
    attempts: int
    next_at: float


class Alerts:
    """Decides (on the history writer) and delivers (on its own thread)."""

    def __init__(self, history: History, notify_urls: list[str], thresholds: Iterable[int] = DEFAULT_THRESHOLDS,
                 *, retry_first_s: float = RETRY_FIRST_S) -> None:
        self.history = history
        self.thresholds = tuple(sorted(thresholds))
        self._targets = {target_key(url): url for url in notify_urls}
        self._retry_first_s = retry_first_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._retries: dict[tuple[int, str], _Retry] = {}
        self._sent: set[tuple[int, str]] = set()
        self._failing: set[str] = set()
        self._thread: threading.Thread | None = None
        self.sent_count = 0

    # -- deciding (history writer thread, inside the reading's transaction) ---------------
    def record(self, conn: sqlite3.Connection, home_id: str, snap: Snapshot,
               instances: dict[tuple[str, str], Instance]) -> None:
        """Decide the alerts of one reading, per account the history writer recorded
        (SPEC §18: the key is home, provider, account, window, kind, threshold, instance);
        ``instances``: each (account id, window label)'s instance as the writer decided it
        in this transaction (a window left out is not decided: a late reading that would
        have started an instance). The label of an account of a pool is stored with the
        alert for its texts (the history file is the user's; logs never see it)."""
        now = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        pooled = len(snap.accounts) > 1
        for account in recorded_accounts(snap):
            for window in account.windows:
                if window.used_percent is None or (account.id, window.label) not in instances:
                    continue
                instance = instances[(account.id, window.label)].key
                due = [("threshold", t) for t in self.thresholds if window.used_percent >= t]
                if runs_out_due(window.pace):
                    due.append(("runs_out", RUNS_OUT))
                for kind, threshold in due:
                    cursor = conn.execute(
                        "INSERT OR IGNORE INTO alerts (home_id, provider, account, account_label, window, kind, "
                        "threshold, instance, used_percent, reset_at, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (home_id, snap.provider, account.id, account.label if pooled else None, window.label, kind,
                         threshold, instance, window.used_percent, window.reset_at, now))
                    if cursor.rowcount == 1:
                        conn.executemany("INSERT INTO deliveries (alert, target) VALUES (?, ?)",
                                         [(cursor.lastrowid, key) for key in self._targets])

    def committed(self) -> None:
        """Called by the writer after a commit: there may be something to send."""
        self._wake.set()

    # -- delivering (own thread) ------------------------------------------------------------
    def start(self) -> None:
        if self._targets:
            self._thread = threading.Thread(target=self._deliver_loop, name="probe-alerts", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def _deliver_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._next_wait_s())
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                pending = self._pending()
            except Exception as exc:  # noqa: BLE001 -- sqlite3.Error, or rows it cannot use: try later
                log.error("alerts: cannot read the history file (%s: %s)", type(exc).__name__, exc)
                continue
            for row in pending:
                if self._stop.is_set():
                    return
                try:
                    self._deliver(row)
                except Exception:  # noqa: BLE001 -- one row that cannot be sent must not end delivery
                    log.exception("alerts: alert %s cannot be sent; retrying with back-off", row["id"])
                    self._retry_later((row["id"], row["target"]))

    def _next_wait_s(self) -> float:
        now = time.monotonic()
        soonest = min((r.next_at for r in self._retries.values()), default=now + SCAN_EVERY_S)
        return max(0.0, min(SCAN_EVERY_S, soonest - now))

    def _pending(self) -> list[dict[str, Any]]:
        conn = connect(self.history.path, read_only=True)
        try:
            rows = conn.execute(
                "SELECT a.id, d.target, a.home_id, a.provider, a.window, a.kind, a.threshold, a.used_percent, "
                "a.reset_at, a.account_label FROM deliveries d JOIN alerts a ON a.id = d.alert WHERE d.delivered_at IS NULL "
                "ORDER BY a.id").fetchall()
        finally:
            conn.close()
        now = time.monotonic()
        out = []
        for alert_id, target, home, provider, window, kind, threshold, used, reset_at, account_label in rows:
            key = (alert_id, target)
            retry = self._retries.get(key)
            if key in self._sent or target not in self._targets or (retry and retry.next_at > now):
                continue
            out.append({"id": alert_id, "target": target, "home": home, "provider": provider, "window": window,
                        "kind": kind, "threshold": threshold, "used_percent": used, "reset_at": reset_at,
                        "account_label": account_label})
        return out

    def _deliver(self, row: dict[str, Any]) -> None:
        import apprise

        key = (row["id"], row["target"])
        url = self._targets[row["target"]]
        title, body = message(row)
        sender = apprise.Apprise()
        sender.add(url)
        try:
            ok = bool(sender.notify(title=title, body=body))
        except Exception:  # noqa: BLE001 -- a plugin bug is a failed delivery, not a dead thread
            ok = False
        scheme = urlsplit(url).scheme or "?"
        if ok:
            self._sent.add(key)
            self._retries.pop(key, None)
            self.sent_count += 1
            if row["target"] in self._failing:
                self._failing.discard(row["target"])
                log.warning("alerts: delivery to a %s:// target works again", scheme)
            delivered_at = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
            # recorded before the next send (ahead of queued readings): at most one delivered
            # alert is ever unrecorded, so a crash can duplicate one alert at most
            self.history.run_urgent(lambda conn: conn.execute(
                "UPDATE deliveries SET delivered_at = ?, attempts = attempts + 1 WHERE alert = ? AND target = ?",
                (delivered_at, row["id"], row["target"])))
            return
        self._retry_later(key)
        if row["target"] not in self._failing:
            self._failing.add(row["target"])
            log.warning("alerts: delivery to a %s:// target failed; retrying with back-off", scheme)

    def _retry_later(self, key: tuple[int, str]) -> None:
        """The next attempt at ``key`` (alert id, target) after an exponential back-off."""
        retry = self._retries.get(key) or _Retry(0, 0.0)
        retry.attempts += 1
        retry.next_at = time.monotonic() + min(RETRY_MAX_S, self._retry_first_s * 2 ** (retry.attempts - 1))
        self._retries[key] = retry


def list_alerts(history: History, limit: int = 500) -> list[dict[str, Any]]:
    """``GET /api/alerts``: every alert fired, most recent first, with the reading that fired it."""
    conn = connect(history.path, read_only=True)
    try:
        rows = conn.execute("SELECT home_id, provider, window, kind, threshold, used_percent, reset_at, at, account, "
                            "account_label FROM alerts ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    finally:
        conn.close()
    return [{"home": home, "provider": provider, "window": window, "kind": kind,
             "threshold": None if kind == "runs_out" else threshold, "used_percent": used, "reset_at": reset_at,
             "at": at, "account": account, "account_label": label}
            for home, provider, window, kind, threshold, used, reset_at, at, account, label in rows]
