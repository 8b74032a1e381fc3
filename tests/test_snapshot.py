"""The Snapshot shape of SPEC §4."""
from __future__ import annotations

import json

import pytest

from probe.snapshot import ProbeInfo, Snapshot

pytestmark = pytest.mark.timeout(10)

SPEC_EXAMPLE = {
    "provider": "anthropic", "home": "/abs/home", "available": True,
    "title": "Account limits", "plan": None, "source": "oauth_usage_api",
    "windows": [{"label": "Current session", "used_percent": 42.0, "remaining_percent": 58.0,
                 "reset_at": "2026-11-23T05:00:00Z", "detail": None, "window_s": 18000.0,
                 "pace": {"expected_used_percent": 20.0, "delta_percent": 22.0, "status": "deficit",
                          "runs_out_at": "2026-11-23T02:22:51Z", "lasts_until_reset": False,
                          "basis": "average"}}],
    "details": ["Extra usage: $3.20 of $50.00"], "balances": [], "unavailable_reason": None,
    "error": None, "stale": False, "fetched_at": "2026-11-23T01:00:00Z",
    "probe": {"path": "warm", "latency_ms": 1.3, "worker_pid": 4242},
    "accounts": [], "pool": None,   # SPEC §18 (0.4)
}


def test_round_trip_is_exactly_the_spec_shape():
    snap = Snapshot.from_dict(SPEC_EXAMPLE)
    assert snap.to_dict() == SPEC_EXAMPLE
    assert list(snap.to_dict()) == list(SPEC_EXAMPLE)  # key order too
    assert json.loads(json.dumps(snap.to_dict())) == SPEC_EXAMPLE


def test_error_serializes_code_and_message_only():
    snap = Snapshot.failed("anthropic", "/h", "rate_limited", "Slow down.", probe=ProbeInfo("cold", 2.0),
                           retry_after_s=30)
    assert snap.to_dict()["error"] == {"code": "rate_limited", "message": "Slow down."}
    assert snap.error.retry_after_s == 30
    assert snap.available is False


@pytest.mark.parametrize("bad", [{}, {"provider": 1}, {"provider": "a", "home": "/h", "available": True,
                                                        "windows": [{"used_percent": "x"}]},
                                 {"provider": "a", "home": "/h", "available": False,
                                  "error": {"code": "not_a_spec_code", "message": "m"}}])
def test_bad_shapes_raise_value_error(bad):
    with pytest.raises(ValueError):
        Snapshot.from_dict(bad)
