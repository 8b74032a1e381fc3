"""A backend's history + alerts pipeline fed with readings, for the crash-safety test.

    python tests/alert_feeder.py DB NOTIFY_URL COUNT

Submits COUNT readings, each reaching 85 % of a window of its own home (so each is one
threshold alert), through the real History writer and Alerts delivery -- then waits until
every alert is delivered and exits 0. It is SIGKILLed at random moments and started again;
like a refresher after a restart it submits every reading again (the alert keys make that
idempotent)."""
from __future__ import annotations

import sqlite3
import sys
import time
from datetime import datetime, timedelta, timezone

from probe.monitor.alerts import Alerts, check_notify_urls
from probe.monitor.history import History, connect
from probe.pace import iso
from probe.snapshot import ProbeInfo, Snapshot, Window


def main(db: str, url: str, count: int) -> int:
    history = History(db)
    if not history.start():
        return 3
    alerts = Alerts(history, check_notify_urls([url]), (80,), retry_first_s=0.05)
    history.after_write, history.committed = alerts.record, alerts.committed
    alerts.start()
    reset = iso(datetime(2030, 1, 1, tzinfo=timezone.utc))
    now = datetime.now(timezone.utc).replace(microsecond=0)
    for i in range(count):
        window = Window("Current week", 85.0, 15.0, reset, None, None)
        history.submit(f"h{i}", "/unused", Snapshot(provider="anthropic", home="/x", available=True, windows=(window,),
                                                    fetched_at=iso(now + timedelta(seconds=i)),
                                                    probe=ProbeInfo("warm", 1.0)))
    history.flush(120)
    print("recorded", flush=True)
    while True:
        conn = connect(history.path, read_only=True)
        try:
            left = conn.execute("SELECT count(*) FROM deliveries WHERE delivered_at IS NULL").fetchone()[0]
        except sqlite3.Error:
            left = -1
        finally:
            conn.close()
        if left == 0:
            break
        time.sleep(0.05)
    alerts.close()
    history.close()
    print("delivered", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
