"""MiniMax (PROVIDERS.md § minimax / minimax-cn): the usage_count = remaining trap, the
current and legacy shapes, base_resp errors, the fallback decision and the points
balance, over recorded bodies."""
from __future__ import annotations

import copy

import pytest

from workers.providers import minimax, minimax_cn
from workers.result import ProbeFailure

pytestmark = pytest.mark.timeout(10)

EXAMPLE = {"base_resp": {"status_code": 0, "status_msg": "success"}, "data": {
    "current_subscribe_title": "Token Plan Plus", "points_balance": "14000", "model_remains": [{
        "model_name": "general", "current_interval_total_count": 0, "current_interval_usage_count": 0,
        "current_interval_remaining_percent": "96", "start_time": 1780279200000, "end_time": 1780297200000,
        "current_weekly_total_count": 0, "current_weekly_usage_count": 0, "current_weekly_remaining_percent": "99",
        "weekly_start_time": 1780243200000, "weekly_end_time": 1780848000000}]}}
LEGACY = {"base_resp": {"status_code": 0}, "current_subscribe_title": "Max", "model_remains": [{
    "current_interval_total_count": 1000, "current_interval_usage_count": 250,
    "start_time": 1780279200000, "end_time": 1780297200000}]}


def rows(result):
    return [(w["label"], w["used_percent"], w["reset_at"], w["window_s"], w["detail"]) for w in result["windows"]]


def test_the_current_shape_example():
    assert minimax.normalize(EXAMPLE) == {
        "windows": [
            {"label": "Session", "used_percent": 4.0, "reset_at": "2026-06-01T07:00:00Z", "window_s": 18000,
             "detail": None},
            {"label": "Weekly", "used_percent": 1.0, "reset_at": "2026-06-07T16:00:00Z", "window_s": 604800,
             "detail": None},
        ],
        "balances": [{"label": "Points", "amount": 14000.0, "currency": "points"}],
        "details": ["Points: 14,000"],
        "title": "Coding Plan", "plan": "Token Plan Plus", "unavailable_reason": None, "source": "usage_api",
    }


def test_the_legacy_shape_and_the_usage_count_trap():
    got = minimax.normalize(LEGACY)
    # usage_count 250 of 1000 is what is LEFT: 75 % used, not 25 %
    assert rows(got) == [("Session", 75.0, "2026-06-01T07:00:00Z", 18000, "750 of 1,000 used")]
    assert (got["plan"], got["balances"], got["details"]) == ("Max", [], [])


@pytest.mark.parametrize("entry, used", [
    ({"current_interval_total_count": "1000", "current_interval_usage_count": "250"}, 75.0),   # decimal strings
    ({"current_interval_total_count": 1000, "current_interval_usage_count": 1000}, 0.0),       # all left
    ({"current_interval_total_count": 1000, "current_interval_usage_count": 0}, 100.0),        # none left
    ({"current_interval_total_count": 1000, "current_interval_usage_count": 250,
      "current_interval_remaining_percent": 10}, 90.0),                                         # percent wins
    ({"current_interval_remaining_percent": "-5"}, 100.0),                                      # clamped
    ({"current_interval_remaining_percent": 1e9}, 0.0),
    ({"current_interval_total_count": 100, "current_interval_usage_count": -1e9}, 100.0),
])
def test_session_used_share(entry, used):
    assert minimax.normalize({"model_remains": [entry]})["windows"][0]["used_percent"] == used


@pytest.mark.parametrize("entry", [
    {"current_interval_total_count": 0, "current_interval_usage_count": 0},
    {"current_interval_total_count": 1000},
    {"current_interval_usage_count": 250},
    {"current_interval_remaining_percent": "n/a"},
    {},
])
def test_a_window_without_a_usable_share_is_skipped(entry):
    got = minimax.normalize({"model_remains": [entry]})
    assert got["windows"] == [] and got["unavailable_reason"] == "MiniMax reported no plan usage for this account."


def test_the_general_entry_is_used_else_the_first():
    other = {"model_name": "video", "current_interval_remaining_percent": 50}
    general = {"model_name": "general", "current_interval_remaining_percent": 80}
    assert minimax.normalize({"model_remains": [other, general]})["windows"][0]["used_percent"] == 20.0
    assert minimax.normalize({"model_remains": ["junk", other]})["windows"][0]["used_percent"] == 50.0


@pytest.mark.parametrize("start, end, window_s, reset", [
    (1780279200000, 1780297200000, 18000, "2026-06-01T07:00:00Z"),
    (1780279200, 1780297200, 18000, "2026-06-01T07:00:00Z"),                  # seconds work too
    ("2026-06-01T02:00:00Z", "2026-06-01T07:00:00.123456789Z", 18000.123456, "2026-06-01T07:00:00Z"),
    (None, 1780297200000, None, "2026-06-01T07:00:00Z"),
    (1780297200000, 1780279200000, None, "2026-06-01T02:00:00Z"),            # reversed: no length
    (1780279200000, None, None, None),
])
def test_window_length_and_reset(start, end, window_s, reset):
    got = minimax.normalize({"model_remains": [{"current_interval_remaining_percent": 50, "start_time": start,
                                                "end_time": end}]})
    assert got["windows"][0]["window_s"] == (pytest.approx(window_s) if window_s else None)
    assert got["windows"][0]["reset_at"] == reset


@pytest.mark.parametrize("points, amount, detail", [("14000", 14000.0, "Points: 14,000"), (0, 0.0, "Points: 0"),
                                                    ("12.5", 12.5, "Points: 12.5"), (None, None, None),
                                                    ("lots", None, None)])
def test_points_balance_is_a_unit_never_money(points, amount, detail):
    got = minimax.normalize({"data": {"points_balance": points}})
    assert got["balances"] == ([{"label": "Points", "amount": amount, "currency": "points"}] if amount is not None
                               else [])
    assert got["details"] == ([detail] if detail else [])
    assert not any("$" in line for line in got["details"])


@pytest.mark.parametrize("base_resp, code, message", [
    ({"status_code": 1004, "status_msg": "login fail"}, "unauthorized", "MiniMax rejected the API key (1004: login fail)."),
    ({"status_code": 2049, "status_msg": "Invalid API Key"}, "unauthorized",
     "MiniMax rejected the API key (2049: Invalid API Key)."),
    ({"status_code": 1001, "status_msg": "please log in again"}, "unauthorized",
     "MiniMax rejected the API key (1001: please log in again)."),
    ({"status_code": "1002", "status_msg": "cookie is missing"}, "unauthorized",
     "MiniMax rejected the API key (1002: cookie is missing)."),
    ({"status_code": 1008, "status_msg": "insufficient balance"}, "provider_error",
     "MiniMax reported an error (1008: insufficient balance)."),
    ({"status_code": 1004}, "unauthorized", "MiniMax rejected the API key (status 1004)."),
    ({"status_code": "E42"}, "provider_error", "MiniMax reported an error (status E42)."),
])
@pytest.mark.parametrize("where", ["top", "data"])
def test_base_resp_errors(base_resp, code, message, where):
    body = {"base_resp": base_resp} if where == "top" else {"data": {"base_resp": base_resp, "model_remains": []}}
    with pytest.raises(ProbeFailure) as caught:
        minimax.normalize(body)
    assert (caught.value.code, caught.value.message) == (code, message)
    assert minimax.needs_fallback(body) is False          # an error is an answer, never a fallback


@pytest.mark.parametrize("body, fallback", [
    (EXAMPLE, False),
    (LEGACY, False),
    ({"base_resp": {"status_code": 0}, "data": {"points_balance": "1"}}, True),
    ({"base_resp": {"status_code": 0}, "data": {"model_remains": []}}, True),
    ({"base_resp": {"status_code": 0}, "data": {"model_remains": None}}, True),
    ({"base_resp": {"status_code": 0}}, True),
    ({}, True),
    ({"base_resp": {"status_code": 1004}}, False),
    ({"model_remains": "x"}, False),                      # a bad shape is an answer (bad_response)
    (["x"], False), (None, False),
])
def test_fallback_decision(body, fallback):
    assert minimax.needs_fallback(body) is fallback


@pytest.mark.parametrize("body", [[], "x", {"model_remains": {"general": {}}}, {"data": {"model_remains": 3}}])
def test_bad_shapes(body):
    with pytest.raises(ProbeFailure) as caught:
        minimax.normalize(body)
    assert caught.value.code == "bad_response"


def test_weekly_needs_its_own_fields():
    entry = copy.deepcopy(EXAMPLE["data"]["model_remains"][0])
    for key in ("current_weekly_remaining_percent", "current_weekly_total_count", "current_weekly_usage_count"):
        del entry[key]
    assert [w["label"] for w in minimax.normalize({"model_remains": [entry]})["windows"]] == ["Session"]
    weekly_counts = {"current_weekly_total_count": "200", "current_weekly_usage_count": "50",
                     "weekly_start_time": 1780243200000, "weekly_end_time": 1780848000000}
    got = minimax.normalize({"model_remains": [weekly_counts]})
    assert rows(got) == [("Weekly", 75.0, "2026-06-07T16:00:00Z", 604800, "150 of 200 used")]


def test_both_names_share_one_implementation():
    assert minimax.CREDENTIALS == [".env:MINIMAX_CODING_API_KEY", ".env:MINIMAX_API_KEY",
                                   "auth.json:credential_pool.minimax[].access_token"]
    assert minimax_cn.CREDENTIALS == [".env:MINIMAX_CN_API_KEY",
                                      'auth.json:credential_pool."minimax-cn"[].access_token']
    assert (minimax.DEFAULT_BASE_URL, minimax_cn.DEFAULT_BASE_URL) == ("https://api.minimax.io",
                                                                       "https://api.minimaxi.com")
    assert minimax_cn.normalize is minimax.normalize
    assert (minimax.TOKEN_PLAN_PATH, minimax.CODING_PLAN_PATH) == (
        "/v1/token_plan/remains", "/v1/api/openplatform/coding_plan/remains")
