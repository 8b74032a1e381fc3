"""``/metrics`` values as a scrape shows them (issue #25): ratios and amounts without a
float's binary noise (``0.37799999999999995``)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from prometheus_client import CollectorRegistry, generate_latest

from probe.monitor.readings import Reading
from probe.pace import iso
from probe.server.metrics import _QuotaCollector
from probe.snapshot import Balance, ProbeInfo, Snapshot, Window


class Latest:
    """The one method of ``probe.monitor.readings.Reader`` the quota collector reads."""

    def __init__(self, *readings: Reading) -> None:
        self.readings = list(readings)

    def current_readings(self) -> list[Reading]:
        return self.readings


def test_ratios_and_amounts_are_rounded():
    now = datetime.now(timezone.utc)
    window = Window("Current session", 37.8, 62.2, iso(now + timedelta(hours=2)), None, 18000.0)
    snap = Snapshot(provider="anthropic", home="/x", available=True, windows=(window,),
                    balances=(Balance("Credits", 0.1 + 0.2, "USD"),), fetched_at=iso(now),
                    probe=ProbeInfo("warm", 1.0)).with_pace(now)
    assert 37.8 / 100 == 0.37799999999999995 and snap.windows[0].pace is not None
    registry = CollectorRegistry()
    registry.register(_QuotaCollector(Latest(Reading("alice", snap, 0))))
    text = generate_latest(registry).decode()
    assert 'quota_probe_window_used_ratio{home="alice",provider="anthropic",window="Current session"} 0.378\n' in text
    assert 'quota_probe_balance{currency="USD",home="alice",label="Credits",provider="anthropic"} 0.3\n' in text
    delta = next(line for line in text.splitlines() if line.startswith("quota_probe_window_pace_delta_ratio{"))
    assert len(delta.rsplit(" ", 1)[1]) <= len("-0.123456")
    assert "9999999" not in text and "0000001" not in text


def test_each_account_is_a_series_labelled_by_its_id_never_its_label():
    """SPEC §18: ``account`` = the id; the label (personal data) is nowhere in a scrape. The
    provider-level series of a pool stay the best per window (as the snapshot says)."""
    from probe.pool_view import assemble
    from probe.snapshot import Account

    now = datetime.now(timezone.utc)
    reset = iso(now + timedelta(days=3))

    def weekly(used: float) -> tuple[Window, ...]:
        return (Window("Weekly", used, 100 - used, reset, None, 604800.0),)

    accounts = (Account("pool-1", "alice@example.com", "manual", "available", windows=weekly(40.0), probed=True),
                Account("pool-2", "bob@example.com", "manual", "available", windows=weekly(90.0), probed=True),
                Account("pool-3", "carol@example.com", "manual", "exhausted", retry_after=reset))
    snap = assemble(Snapshot(provider="openai-codex", home="/x", available=True, fetched_at=iso(now),
                             probe=ProbeInfo("warm", 1.0), accounts=accounts))
    registry = CollectorRegistry()
    registry.register(_QuotaCollector(Latest(Reading("alice", snap, 0))))
    text = generate_latest(registry).decode()
    assert 'quota_probe_window_used_ratio{home="alice",provider="openai-codex",window="Weekly"} 0.4\n' in text
    for account_id, value in (("pool-1", "0.4"), ("pool-2", "0.9")):
        assert (f'quota_probe_account_window_used_ratio{{account="{account_id}",home="alice",'
                f'provider="openai-codex",window="Weekly"}} {value}\n') in text
    assert 'quota_probe_account_available{account="pool-3",home="alice",provider="openai-codex"} 0.0\n' in text
    assert 'quota_probe_account_retry_after_timestamp_seconds{account="pool-3",' in text
    assert "example.com" not in text
