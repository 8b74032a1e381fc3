"""Hermes' own credential_pool records for a provider without an adapter (PROVIDERS.md,
last section): one line per entry by label (never a token), exhaustion ends, and the
failure when no entry is usable (rate_limited naming the earliest recovery, unauthorized
when all are dead)."""
from __future__ import annotations

import json

import pytest

from workers.providers.credential_pool import clock, pool_result
from workers.result import ProbeFailure

pytestmark = pytest.mark.timeout(10)

NOW = 1785852000.0           # 2026-08-04T14:00:00Z
TOKEN = "xai-very-secret-token-123"


def entry(label, status=None, **fields):
    record = {"label": label, "auth_type": "api_key", "access_token": TOKEN, **fields}
    if status is not None:
        record["last_status"] = status
    return record


def lines(entries):
    return pool_result("xai", entries, NOW)["details"]


def failure(entries, provider="xai"):
    with pytest.raises(ProbeFailure) as caught:
        pool_result(provider, entries, NOW)
    return caught.value


def test_the_providers_md_lines():
    got = pool_result("xai", [
        entry("work key", "exhausted", last_error_code=429, last_error_reset_at=NOW + 300),
        entry("personal", "ok"),
        entry("old", "dead", last_error_code=401),
    ], NOW)
    assert got == {"windows": [], "balances": [],
                   "details": ["work key: exhausted until 14:05 UTC (429)", "personal: ok", "old: revoked"],
                   "title": "Hermes credential pool", "plan": None, "unavailable_reason": None,
                   "source": "credential_pool"}
    assert TOKEN not in json.dumps(got)


@pytest.mark.parametrize("fields, line", [
    ({"last_error_reset_at": NOW + 300, "last_error_code": 429}, "k: exhausted until 14:05 UTC (429)"),
    ({"last_error_reset_at": "2026-08-04T14:05:00Z", "last_error_code": "429"}, "k: exhausted until 14:05 UTC (429)"),
    ({"last_error_reset_at": (NOW + 300) * 1000}, "k: exhausted until 14:05 UTC"),                 # epoch ms
    ({"last_error_reset_at": NOW + 241}, "k: exhausted until 14:05 UTC"),                           # rounded up
    ({"last_error_reset_at": NOW + 86400}, "k: exhausted until 2026-08-05 14:00 UTC"),              # another day
    # no reset time: last_status_at + 300 s after a 401, + 3600 s after anything else
    ({"last_status_at": NOW - 60, "last_error_code": 401}, "k: exhausted until 14:04 UTC (401)"),
    ({"last_status_at": NOW - 60, "last_error_code": 429}, "k: exhausted until 14:59 UTC (429)"),
    ({"last_status_at": NOW - 60}, "k: exhausted until 14:59 UTC"),
    ({"last_status_at": "2026-08-04T13:59:00Z", "last_error_code": 401}, "k: exhausted until 14:04 UTC (401)"),
    # the reset time wins over last_status_at
    ({"last_status_at": NOW - 60, "last_error_code": 401, "last_error_reset_at": NOW + 7200},
     "k: exhausted until 16:00 UTC (401)"),
    # no time at all: exhausted with no known end
    ({"last_error_code": 429}, "k: exhausted (429)"),
    ({"last_error_reset_at": "soon"}, "k: exhausted"),
    ({"last_error_reset_at": 1e300}, "k: exhausted"),
    # an end in the past: usable again
    ({"last_error_reset_at": NOW - 3300, "last_error_code": 429}, "k: ok since 13:05 UTC"),
    ({"last_status_at": NOW - 400, "last_error_code": 401}, "k: ok since 13:59 UTC"),
    ({"last_error_code": 429.5, "last_error_reset_at": NOW + 300}, "k: exhausted until 14:05 UTC"),
])
def test_exhausted_lines(fields, line):
    assert lines([entry("k", "exhausted", **fields), entry("spare", "ok")])[0] == line


@pytest.mark.parametrize("record, line", [
    (entry("k"), "k: ok"),                                      # never used yet
    (entry("k", "ok", last_error_code=429), "k: ok"),
    (entry("k", "cooldown"), "k: cooldown"),                    # unknown status, as written
    (entry("k", "dead"), "k: revoked"),
    ({"access_token": TOKEN, "last_status": "ok"}, "entry 1: ok"),
    (entry("   ", "ok"), "entry 1: ok"),
    (entry(f"my {TOKEN}", "ok"), "entry 1: ok"),                # a label quoting the token is not shown
    ({"label": "sk-xyz-refresh", "refresh_token": "sk-xyz-refresh", "last_status": "ok"}, "entry 1: ok"),
    (entry("line\nbreak", "ok"), "line break: ok"),
])
def test_entry_lines(record, line):
    assert lines([record, entry("spare", "ok")]) == [line, "spare: ok"]


def test_non_object_entries_are_skipped_and_numbering_follows_the_file():
    assert lines(["junk", {"last_status": "ok"}, None, {"label": "b", "last_status": "ok"}]) == ["entry 2: ok", "b: ok"]


def test_none_usable_is_rate_limited_naming_the_earliest_recovery():
    err = failure([entry("a", "exhausted", last_error_reset_at=NOW + 7200, last_error_code=429),
                   entry("b", "exhausted", last_error_reset_at=NOW + 300, last_error_code=429),
                   entry("c", "exhausted", last_error_code=429)])
    assert (err.code, err.message) == ("rate_limited", "Every xai credential in Hermes' pool is exhausted; the first "
                                                       "recovers at 14:05 UTC.")
    assert err.retry_after_s == 300.0


def test_dead_and_exhausted_is_rate_limited_too():
    err = failure([entry("a", "dead"), entry("b", "exhausted", last_status_at=NOW - 60, last_error_code=401)])
    assert (err.code, err.message) == ("rate_limited", "Every xai credential in Hermes' pool is exhausted or revoked; "
                                                       "the first recovers at 14:04 UTC.")
    assert err.retry_after_s == 240.0


def test_no_known_recovery_time():
    err = failure([entry("a", "exhausted"), entry("b", "dead")])
    assert (err.code, err.message, err.retry_after_s) == (
        "rate_limited", "Every xai credential in Hermes' pool is exhausted or revoked, with no known recovery time.",
        None)


def test_all_dead_is_unauthorized():
    err = failure([entry("a", "dead"), entry("b", "dead", last_error_code=401)], provider="openai-api")
    assert (err.code, err.message) == ("unauthorized", "Every openai-api credential in Hermes' pool is revoked; "
                                                       "sign in again in Hermes.")


@pytest.mark.parametrize("entries", [[], ["junk"], None, {"label": "x"}])
def test_no_entry_is_no_credentials(entries):
    err = failure(entries, provider="gemini")
    assert (err.code, err.message) == ("no_credentials", "No gemini entry in auth.json's credential_pool.")


def test_one_usable_entry_is_enough():
    got = pool_result("gemini", [entry("a", "dead"), entry("b", "exhausted"), entry("c")], NOW)
    assert got["details"] == ["a: revoked", "b: exhausted", "c: ok"] and got["unavailable_reason"] is None


def test_no_failure_message_holds_a_token():
    for entries in ([entry("a", "dead")], [entry("a", "exhausted", last_error_reset_at=NOW + 60)]):
        assert TOKEN not in failure(entries).message


@pytest.mark.parametrize("seconds, text", [(NOW, "14:00 UTC"), (NOW + 1, "14:01 UTC"), (NOW + 35940, "23:59 UTC"),
                                           (NOW + 35941, "2026-08-05 00:00 UTC"),     # rounded up past midnight
                                           (NOW - 86400, "2026-08-03 14:00 UTC")])
def test_clock(seconds, text):
    assert clock(seconds, NOW) == text
