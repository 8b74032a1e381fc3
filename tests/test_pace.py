"""Pace arithmetic (SPEC §13), table by table, and the pace a fetch carries."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from probe import pace
from probe.pace import Pace

pytestmark = pytest.mark.timeout(30)

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=timezone.utc)
HOUR, DAY, WEEK = 3600, 86400, 604800


def at(seconds: float) -> str:
    return pace.iso(NOW + timedelta(seconds=seconds))


@pytest.mark.parametrize("case, used, reset_in_s, window_s, expected", [
    # 5-hour window, 1 h elapsed (20 %), 42 % used: deficit, runs out after 1 h 22 m 51 s
    ("deficit", 42.0, 4 * HOUR, 5 * HOUR, Pace(20.0, 22.0, "deficit", at(58 * HOUR / 42), False)),
    # 7-day window, 3.5 days elapsed (50 %), 17 % used: reserve, lasts
    ("reserve", 17.0, 3.5 * DAY, WEEK, Pace(50.0, -33.0, "reserve", None, True)),
    # within 2 points either way: on track -- and an on-track window never runs out, though
    # 51 % at 50 % elapsed would reach 100 % 2 % before the reset at its average rate
    ("on track, would run out at the average rate", 51.0, 3.5 * DAY, WEEK, Pace(50.0, 1.0, "on_track", None, True)),
    # issue #25: 8 % used 19 minutes into a 5-hour window said "On pace · Runs out in 3h"
    ("on pace early in a session", 8.0, 5 * HOUR - 19 * 60, 5 * HOUR, Pace(6.33, 1.67, "on_track", None, True)),
    ("on track, lasts", 49.0, 3.5 * DAY, WEEK, Pace(50.0, -1.0, "on_track", None, True)),
    ("exactly on the band edge", 52.0, 3.5 * DAY, WEEK, Pace(50.0, 2.0, "deficit", at(48 * 3.5 * DAY / 52), False)),
    ("nothing used", 0.0, 3 * DAY, WEEK, Pace(57.14, -57.14, "reserve", None, True)),
    # a 60-minute window, 45 minutes in, 90 % used: runs out in 5 minutes
    ("60-minute window", 90.0, 15 * 60, HOUR, Pace(75.0, 15.0, "deficit", at(300), False)),
    # a 24-hour window, 6 hours in, 10 % used
    ("24-hour window", 10.0, 18 * HOUR, DAY, Pace(25.0, -15.0, "reserve", None, True)),
    ("reset missing", 42.0, None, 5 * HOUR, None),
    ("window length unknown", 42.0, 4 * HOUR, None, None),
    ("reset in the past", 42.0, -60, 5 * HOUR, None),
    ("reset right now", 42.0, 0, 5 * HOUR, None),
    ("reset further than one window", 42.0, 5 * HOUR + 1, 5 * HOUR, None),
    ("no elapsed time (reset exactly one window away)", 0.0, 5 * HOUR, 5 * HOUR, None),
    ("too early: under 3 % elapsed", 1.0, 5 * HOUR * 0.971, 5 * HOUR, None),
    ("just past 3 % elapsed", 1.0, 5 * HOUR * 0.97, 5 * HOUR, Pace(3.0, -2.0, "reserve", None, True)),
    ("depleted", 100.0, 2 * HOUR, 5 * HOUR, None),
    ("used unknown", None, 2 * HOUR, 5 * HOUR, None),
])
def test_pace_table(case, used, reset_in_s, window_s, expected):
    reset_at = None if reset_in_s is None else pace.iso(NOW + timedelta(seconds=reset_in_s))
    assert pace.compute(used, reset_at, window_s, NOW) == expected, case


def test_reset_with_an_offset_and_fraction_is_read_as_an_instant():
    reset = (NOW + timedelta(hours=4)).astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()
    assert pace.compute(42.0, reset, 5 * HOUR, NOW).expected_used_percent == 20.0
    assert pace.compute(42.0, "not a time", 5 * HOUR, NOW) is None


@pytest.mark.parametrize("p, line", [
    (Pace(20.0, 7.4, "deficit", at(3 * DAY + 5 * HOUR), False), "7% in deficit · Runs out in 3d"),
    (Pace(50.0, -33.0, "reserve", None, True), "33% in reserve · Lasts until reset"),
    (Pace(50.0, 1.2, "on_track", None, True), "On pace · Lasts until reset"),
    (Pace(75.0, 15.0, "deficit", at(300), False), "15% in deficit · Runs out in 5m"),
    (Pace(75.0, 15.0, "deficit", at(-10), False), "15% in deficit · Runs out now"),
])
def test_pace_line(p, line):
    assert pace.line(p, NOW) == line


def test_fetch_carries_pace_evaluated_at_fetched_at(make_service, make_home, emulator):
    """The SPEC §13 formula, recomputed from the snapshot's own numbers, agrees with what
    the service stamped to 0.1 percentage point and one minute."""
    token = "sk-ant-oat01-pace"
    now = datetime.now(timezone.utc)
    emulator.script(token, {"five_hour": {"utilization": 42.0, "resets_at": (now + timedelta(hours=4)).isoformat()},
                            "seven_day": {"utilization": 10.0, "resets_at": (now + timedelta(days=3.5)).isoformat()}})
    home = make_home("pace", anthropic=token)
    snap = make_service().fetch("anthropic", home=home)
    assert snap.error is None
    fetched = pace.parse_instant(snap.fetched_at)
    session, week = snap.windows
    assert session.window_s == 18000 and week.window_s == 604800
    for window in (session, week):
        reset = pace.parse_instant(window.reset_at)
        elapsed = window.window_s - (reset - fetched).total_seconds()
        expected = elapsed / window.window_s * 100
        assert abs(window.pace.expected_used_percent - expected) <= 0.1
        assert abs(window.pace.delta_percent - (window.used_percent - expected)) <= 0.1
    runs_out = fetched + timedelta(seconds=(100 - 42.0) / (42.0 / (18000 - (pace.parse_instant(session.reset_at)
                                                                           - fetched).total_seconds())))
    assert session.pace.status == "deficit" and not session.pace.lasts_until_reset
    assert abs((pace.parse_instant(session.pace.runs_out_at) - runs_out).total_seconds()) <= 60
    assert week.pace.status == "reserve" and week.pace.lasts_until_reset and week.pace.runs_out_at is None
    assert snap.to_dict()["windows"][0]["pace"]["status"] == "deficit"
