"""GitHub Copilot (PROVIDERS.md § copilot): token selection (order, ghp_ skip), headers,
paid-plan snapshots, unlimited/empty skips, the free plan's monthly_quotas and the
date-only reset (00:00 UTC), over recorded bodies."""
from __future__ import annotations

import pytest

from workers.providers import copilot
from workers.result import ProbeFailure

pytestmark = pytest.mark.timeout(10)

EXAMPLE = {"copilot_plan": "pro", "quota_reset_date": "2026-09-01", "quota_snapshots": {
    "premium_interactions": {"entitlement": 300, "remaining": 240, "percent_remaining": 80, "unlimited": False},
    "chat": {"entitlement": 0, "remaining": 0, "percent_remaining": 100, "unlimited": True}},
    "monthly_quotas": {"chat": 500, "completions": 4000}, "limited_user_quotas": {"chat": 410, "completions": 3990}}
FREE = {"copilot_plan": "free", "quota_reset_date": "2026-09-01",
        "monthly_quotas": {"chat": 500, "completions": 4000}, "limited_user_quotas": {"chat": 410, "completions": 3990}}


def rows(result):
    return [(w["label"], w["used_percent"], w["reset_at"], w["window_s"], w["detail"]) for w in result["windows"]]


# -- credential -----------------------------------------------------------------------------
def test_credential_places_in_lookup_order():
    assert copilot.CREDENTIALS == [".env:COPILOT_GITHUB_TOKEN", ".env:GH_TOKEN", ".env:GITHUB_TOKEN",
                                   "auth.json:credential_pool.copilot[].access_token"]


@pytest.mark.parametrize("values, token", [
    (["gho_first", "github_pat_second"], "gho_first"),
    (["ghp_classic", "gho_oauth"], "gho_oauth"),                         # classic skipped, next place used
    (["ghp_a", "ghp_b", "ghu_pool"], "ghu_pool"),                         # down to the pool entry
    (["  github_pat_x  "], "github_pat_x"),
    (["", "   ", "gho_x"], "gho_x"),
    (["GHP_upper"], "GHP_upper"),                                         # the prefix is lower-case
])
def test_token_selection(values, token):
    assert copilot.select_token(values) == token


@pytest.mark.parametrize("values, message", [
    ([], copilot.NO_CREDENTIAL), (["", " "], copilot.NO_CREDENTIAL), (["ghp_one", "ghp_two"], copilot.ONLY_CLASSIC),
])
def test_no_usable_token(values, message):
    with pytest.raises(ProbeFailure) as caught:
        copilot.select_token(values)
    assert (caught.value.code, caught.value.message) == ("no_credentials", message)
    assert "ghp_one" not in caught.value.message


def test_headers_use_the_token_scheme_and_the_api_version():
    assert copilot.request_headers("gho_x") == {"Authorization": "token gho_x", "X-Github-Api-Version": "2025-04-01"}


# -- windows --------------------------------------------------------------------------------
def test_the_paid_example():
    assert copilot.normalize(EXAMPLE) == {
        "windows": [{"label": "Premium requests", "used_percent": 20.0, "reset_at": "2026-09-01T00:00:00Z",
                     "window_s": None, "detail": "240 of 300 remaining"}],
        "balances": [], "details": [], "title": "Monthly quotas", "plan": "pro", "unavailable_reason": None,
        "source": "copilot_internal",
    }


def test_the_free_plan_reads_monthly_quotas():
    assert rows(copilot.normalize(FREE)) == [
        ("Completions", 0.25, "2026-09-01T00:00:00Z", None, "3,990 of 4,000 remaining"),
        ("Chat", 18.0, "2026-09-01T00:00:00Z", None, "410 of 500 remaining"),
    ]
    assert copilot.normalize(FREE)["plan"] == "free"


def test_free_quotas_when_every_snapshot_is_skipped():
    body = {**FREE, "quota_snapshots": {"chat": {"unlimited": True}, "premium_interactions": {
        "entitlement": 0, "remaining": 0, "percent_remaining": 0, "unlimited": False}}}
    assert [r[0] for r in rows(copilot.normalize(body))] == ["Completions", "Chat"]


def test_free_quotas_are_not_read_when_a_snapshot_is_usable():
    assert [r[0] for r in rows(copilot.normalize(EXAMPLE))] == ["Premium requests"]


@pytest.mark.parametrize("snap, used, detail", [
    ({"entitlement": 300, "remaining": 240, "percent_remaining": 80}, 20.0, "240 of 300 remaining"),
    ({"entitlement": 300, "remaining": 240}, 20.0, "240 of 300 remaining"),             # from the counts
    ({"entitlement": "300", "remaining": "60", "percent_remaining": "20"}, 80.0, "60 of 300 remaining"),
    ({"percent_remaining": 33.5}, 66.5, None),
    ({"entitlement": 300, "remaining": -50}, 100.0, "-50 of 300 remaining"),            # clamped (overage)
    ({"percent_remaining": 1e9}, 0.0, None),
    ({"entitlement": 0, "remaining": 5, "percent_remaining": 100}, 0.0, None),          # only 0 AND 0 skips
])
def test_snapshot_share(snap, used, detail):
    got = rows(copilot.normalize({"quota_snapshots": {"chat": snap}}))
    assert got == [("Chat", used, None, None, detail)]


@pytest.mark.parametrize("snap", [
    {"entitlement": 300, "remaining": 240, "percent_remaining": 80, "unlimited": True},
    {"entitlement": 0, "remaining": 0, "percent_remaining": 100},
    {"entitlement": "0", "remaining": "0"},
    {"entitlement": 0, "remaining": 3},                         # no percent and no positive entitlement
    {"remaining": 3}, None, "x",
])
def test_skipped_snapshots(snap):
    assert copilot.normalize({"quota_snapshots": {"premium_interactions": snap}})["windows"] == []


@pytest.mark.parametrize("totals, left, expected", [
    ({"chat": 500}, {"chat": 500}, [("Chat", 0.0)]),
    ({"chat": 0, "completions": 100}, {"chat": 0, "completions": 1e9}, [("Completions", 0.0)]),
    ({"chat": 500, "completions": 4000}, {"chat": 410}, [("Chat", 18.0)]),        # remaining unknown: skipped
    ({"chat": "500"}, {"chat": "0"}, [("Chat", 100.0)]),
    ({"chat": 500}, None, []),
])
def test_free_quota_rules(totals, left, expected):
    got = copilot.normalize({"monthly_quotas": totals, "limited_user_quotas": left})
    assert [(w["label"], w["used_percent"]) for w in got["windows"]] == expected


@pytest.mark.parametrize("reset, expected", [
    ("2026-09-01", "2026-09-01T00:00:00Z"),                   # date only: 00:00 UTC that day
    ("2026-09-01T00:00:00+02:00", "2026-08-31T22:00:00Z"),
    ("2025-01-01", "2025-01-01T00:00:00Z"),                   # already past: kept as sent
    (None, None), ("next month", None),
])
def test_reset_date(reset, expected):
    got = copilot.normalize({**EXAMPLE, "quota_reset_date": reset})
    assert got["windows"][0]["reset_at"] == expected and got["windows"][0]["window_s"] is None


def test_unavailable_reasons():
    unlimited = {"copilot_plan": "business", "quota_snapshots": {"chat": {"unlimited": True},
                                                                 "completions": {"unlimited": True}}}
    assert copilot.normalize(unlimited)["unavailable_reason"] == copilot.UNLIMITED
    assert copilot.normalize({})["unavailable_reason"] == copilot.NO_QUOTAS
    assert copilot.normalize(EXAMPLE)["unavailable_reason"] is None


@pytest.mark.parametrize("body", [[], "x", {"quota_snapshots": []}, {"quota_snapshots": "none"}])
def test_bad_shapes(body):
    with pytest.raises(ProbeFailure) as caught:
        copilot.normalize(body)
    assert caught.value.code == "bad_response"
