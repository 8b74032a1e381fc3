"""z.ai (PROVIDERS.md § zai): the pure parts of workers/providers/zai.py over recorded
bodies -- the example, ms epochs, unit codes, the monthly TIME_LIMIT, three or more
limits labelled by length, success:false, shape errors, and the GLM_BASE_URL host rule.
probe(ctx) itself is exercised end to end once the ctx is on main."""
from __future__ import annotations

import copy

import pytest

from workers.providers import zai
from workers.result import ProbeFailure

pytestmark = pytest.mark.timeout(10)

EXAMPLE = {"code": 200, "msg": "success", "success": True, "data": {"planName": "Pro", "limits": [
    {"type": "TOKENS_LIMIT", "unit": 3, "number": 5, "percentage": 25, "nextResetTime": 1785816000000},
    {"type": "TOKENS_LIMIT", "unit": 6, "number": 1, "percentage": 9, "nextResetTime": 1786291200000},
    {"type": "TIME_LIMIT", "unit": 5, "number": 1, "usage": 1000, "currentValue": 224, "remaining": 776,
     "percentage": 22}]}}


def body(limits, **data):
    return {"code": 200, "msg": "success", "success": True, "data": {"limits": limits, **data}}


def rows(result):
    return [(w["label"], w["used_percent"], w["reset_at"], w["window_s"]) for w in result["windows"]]


def test_the_providers_md_example():
    assert zai.normalize(EXAMPLE) == {
        "windows": [
            {"label": "Session", "used_percent": 25.0, "reset_at": "2026-08-04T04:00:00Z", "window_s": 18000,
             "detail": None},
            {"label": "Weekly", "used_percent": 9.0, "reset_at": "2026-08-09T16:00:00Z", "window_s": 604800,
             "detail": None},
            {"label": "Tool calls (month)", "used_percent": 22.4, "reset_at": None, "window_s": 2592000,
             "detail": "224 of 1,000 tool calls used"},
        ],
        "balances": [], "details": [], "title": "GLM Coding Plan", "plan": "Pro", "unavailable_reason": None,
        "source": "quota_api",
    }


def test_limits_are_sorted_by_length_not_by_response_order():
    limits = list(reversed(copy.deepcopy(EXAMPLE["data"]["limits"])))
    assert [r[0] for r in rows(zai.normalize(body(limits)))] == ["Session", "Weekly", "Tool calls (month)"]


@pytest.mark.parametrize("unit, how_many, seconds", [(1, 1, 86400), (3, 5, 18000), (5, 90, 5400), (6, 1, 604800),
                                                     (3, "12", 43200), (1, "2", 172800)])
def test_unit_codes(unit, how_many, seconds):
    assert zai.length_s({"unit": unit, "number": how_many}) == seconds


@pytest.mark.parametrize("limit", [{"unit": 2, "number": 1}, {"unit": 3}, {"unit": 3, "number": 0},
                                   {"unit": "hour", "number": 1}, {"unit": 3.5, "number": 1}, {}])
def test_unknown_lengths(limit):
    assert zai.length_s(limit) is None


def test_three_or_more_limits_label_the_middle_ones_by_length():
    limits = [
        {"type": "TOKENS_LIMIT", "unit": 6, "number": 1, "percentage": 40, "nextResetTime": 1786291200000},
        {"type": "CREDIT_LIMIT", "unit": 1, "number": 1, "percentage": 30, "nextResetTime": 1785888000000},
        {"type": "TOKENS_LIMIT", "unit": 3, "number": 5, "percentage": 20, "nextResetTime": 1785816000000},
        {"type": "TOKENS_LIMIT", "unit": 3, "number": 12, "percentage": 25, "nextResetTime": 1785830400000},
        {"type": "TOKENS_LIMIT", "unit": 5, "number": 90, "percentage": 5},
    ]
    assert rows(zai.normalize(body(limits))) == [
        ("Session", 5.0, None, 5400),
        ("5-hour", 20.0, "2026-08-04T04:00:00Z", 18000),
        ("12-hour", 25.0, "2026-08-04T08:00:00Z", 43200),
        ("1-day", 30.0, "2026-08-05T00:00:00Z", 86400),
        ("Weekly", 40.0, "2026-08-09T16:00:00Z", 604800),
    ]


@pytest.mark.parametrize("seconds, label", [(86400, "1-day"), (43200, "12-hour"), (5400, "90-minute"),
                                            (1209600, "2-week"), (172800, "2-day"), (90, "90-second"),
                                            (None, "Limit")])
def test_length_labels(seconds, label):
    assert zai.length_label(seconds) == label


def test_a_single_limit_is_the_session_and_unknown_lengths_sort_last():
    one = [{"type": "TOKENS_LIMIT", "unit": 3, "number": 5, "percentage": 25}]
    assert rows(zai.normalize(body(one))) == [("Session", 25.0, None, 18000)]
    two = [{"type": "TOKENS_LIMIT", "unit": 99, "number": 1, "percentage": 50},
           {"type": "TOKENS_LIMIT", "unit": 3, "number": 5, "percentage": 25}]
    assert rows(zai.normalize(body(two))) == [("Session", 25.0, None, 18000), ("Weekly", 50.0, None, None)]


def test_time_limit_is_a_monthly_window_whatever_its_unit_says():
    limits = [{"type": "TIME_LIMIT", "unit": 5, "number": 1, "percentage": 22, "nextResetTime": 1788220800000}]
    assert rows(zai.normalize(body(limits))) == [("Tool calls (month)", 22.0, "2026-09-01T00:00:00Z", 2592000)]


@pytest.mark.parametrize("limit, used", [
    ({"usage": 1000, "currentValue": 224, "percentage": 22}, 22.4),        # the count wins over percentage
    ({"usage": "1000", "currentValue": "224", "percentage": "22"}, 22.4),  # decimal strings
    ({"usage": 0, "currentValue": 5, "percentage": 7}, 7.0),               # no allowance: percentage
    ({"usage": 1000, "percentage": 7}, 7.0),                               # no currentValue: percentage
    ({"usage": 100, "currentValue": 1e9}, 100.0),                          # clamped
    ({"percentage": -5}, 0.0),
    ({"percentage": "96"}, 96.0),
])
def test_used_share(limit, used):
    result = zai.normalize(body([{"type": "TOKENS_LIMIT", "unit": 3, "number": 5, **limit}]))
    assert result["windows"][0]["used_percent"] == used


def test_ignored_limits_and_plan_fallbacks():
    limits = [{"type": "MCP_LIMIT", "unit": 3, "number": 5, "percentage": 1},
              {"type": "TOKENS_LIMIT", "unit": 3, "number": 5, "percentage": None},
              "junk", None]
    result = zai.normalize(body(limits, planName="", plan=None, plan_type="  ", packageName="GLM Lite", level="x"))
    assert result["windows"] == [] and result["plan"] == "GLM Lite"
    assert result["unavailable_reason"] == "z.ai reported no quota limits for this account."
    assert zai.normalize(body([], level="max"))["plan"] == "max"          # as sent, never re-cased
    assert zai.normalize(body([]))["plan"] is None


@pytest.mark.parametrize("answer, message", [
    ({"code": 200, "msg": "Token expired", "success": False, "data": None}, "Token expired"),
    ({"code": 1001, "msg": "Authorization failure", "success": True}, "Authorization failure"),
    ({"code": 500, "success": False}, "z.ai reported an error (code 500)."),
    ({"msg": "no code", "success": True}, "no code"),
    ({"code": "200", "success": "true", "msg": "odd"}, "odd"),
])
def test_a_failure_in_a_200_body_is_a_provider_error_with_msg(answer, message):
    with pytest.raises(ProbeFailure) as caught:
        zai.normalize(answer)
    assert (caught.value.code, caught.value.message) == ("provider_error", message)


def test_code_as_a_decimal_string_is_accepted():
    assert zai.normalize({**EXAMPLE, "code": "200"})["plan"] == "Pro"


@pytest.mark.parametrize("answer", [
    [], "ok", {"code": 200, "success": True},
    {"code": 200, "success": True, "data": {"limits": {"a": 1}}},
    {"code": 200, "success": True, "data": {"planName": "Pro"}},
    {"code": 200, "success": True, "data": []},
])
def test_unexpected_shapes_are_bad_response(answer):
    with pytest.raises(ProbeFailure) as caught:
        zai.normalize(answer)
    assert caught.value.code == "bad_response"


@pytest.mark.parametrize("glm_base_url, base", [
    (None, "https://api.z.ai"),
    ("", "https://api.z.ai"),
    ("https://open.bigmodel.cn/api/paas/v4", "https://open.bigmodel.cn"),
    ("http://open.bigmodel.cn/api/coding/paas/v4/", "https://open.bigmodel.cn"),   # never downgraded
    ("https://OPEN.BIGMODEL.CN:443/x", "https://open.bigmodel.cn"),
    ("https://api.z.ai/api/paas/v4", "https://api.z.ai"),
    ("https://open.bigmodel.cn.evil.example/api", "https://api.z.ai"),
    ("https://proxy.example/open.bigmodel.cn", "https://api.z.ai"),
    ("open.bigmodel.cn", "https://api.z.ai"),                                      # no scheme: no host
    ("http://[::1", "https://api.z.ai"),                                           # unparsable
])
def test_glm_base_url_host_rule(glm_base_url, base):
    assert zai.default_base_url(glm_base_url) == base


def test_credential_places_in_lookup_order():
    assert zai.CREDENTIALS == [".env:GLM_API_KEY", ".env:ZAI_API_KEY", ".env:Z_AI_API_KEY",
                               "auth.json:credential_pool.zai[].access_token"]
