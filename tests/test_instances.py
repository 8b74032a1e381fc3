"""SPEC §14's window-instance rule (probe/monitor/instances.py), table by table. The pipeline
tests (test_alerts, test_history, test_panel_browser) check that alerts, chart boundaries
and the recent pace all follow it."""
from __future__ import annotations

import pytest

from probe.monitor.instances import Instance, advance, assign, starts_new, tolerance_s


@pytest.mark.parametrize("window_s, expected", [(18000, 180), (604800, 6048), (3600, 60), (None, 60), (0, 60)])
def test_tolerance_is_one_percent_of_the_window_with_a_60_s_floor(window_s, expected):
    assert tolerance_s(window_s) == expected


@pytest.mark.parametrize("reference, reset, window_s, new", [
    (1000, 1000, 18000, False),
    (1000, 998, 18000, False),          # jitter backwards
    (1000, 1002, 18000, False),         # jitter forwards
    (1000, 1180, 18000, False),         # exactly the tolerance: still the same
    (1000, 1181, 18000, True),          # later by more: new
    (1000, 1000 - 5 * 3600, 18000, False),   # earlier by any amount: never new
    (1000, 1061, None, True),           # length unknown: the 60 s floor
    (1000, None, 18000, False),         # no reset reported: the current instance
    (None, 1000, 18000, True),          # the first reset after none: the window started
    (None, None, 18000, False),
])
def test_starts_new(reference, reset, window_s, new):
    assert starts_new(reference, reset, window_s) is new


def test_the_reference_is_the_first_readings_reset_so_drift_cannot_hide_a_rollover():
    # a reset creeping 50 s later per read: each step is below the 60 s tolerance, the sum is not
    instances = assign([1000, 1050, 1100, 1150, 1200], None)
    assert [i.reset for i in instances] == [1000, 1000, 1100, 1100, 1200]


def test_advance_returns_the_current_instance_itself_or_a_new_one():
    current = Instance(1000)
    assert advance(current, 1001, 18000) is current
    assert advance(current, None, 18000) is current
    assert advance(current, 20000, 18000) == Instance(20000)
    assert advance(None, None, None) == Instance(None)
    assert Instance(None).key == "" and Instance(1893456000).key == "2030-01-01T00:00:00Z"
