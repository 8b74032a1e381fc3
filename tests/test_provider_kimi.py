"""Kimi (PROVIDERS.md § kimi-coding, kimi-coding-cn): key routing, the Kimi Code windows
(string counts, nanosecond resets, window lengths, reset key aliases) and the Moonshot
balance (USD / CNY, errors by code and scode, negative cash) over recorded bodies."""
from __future__ import annotations

import pytest

from workers.providers import kimi, kimi_cn
from workers.result import ProbeFailure

pytestmark = pytest.mark.timeout(10)

USAGE_EXAMPLE = {
    "usage": {"limit": "2048", "used": "214", "remaining": "1834", "resetTime": "2026-01-09T15:23:13.716839300Z"},
    "limits": [{"window": {"duration": 300, "timeUnit": "TIME_UNIT_MINUTE"},
                "detail": {"limit": "200", "used": "139", "remaining": "61",
                           "resetTime": "2026-01-06T13:33:02.717479433Z"}}],
}
BALANCE_EXAMPLE = {"code": 0, "data": {"available_balance": 49.58, "voucher_balance": 50.00, "cash_balance": 12.34},
                   "scode": "0x0", "status": True}


# -- routing ------------------------------------------------------------------------------
@pytest.mark.parametrize("token, base, path, normalize", [
    ("sk-kimi-abc123", "https://api.kimi.com/coding", "/v1/usages", kimi.normalize_usage),
    ("sk-abc123", "https://api.moonshot.ai", "/v1/users/me/balance", kimi.normalize_balance),
    ("sk-KIMI-abc", "https://api.moonshot.ai", "/v1/users/me/balance", kimi.normalize_balance),
    ("xsk-kimi-abc", "https://api.moonshot.ai", "/v1/users/me/balance", kimi.normalize_balance),
])
def test_the_key_selects_the_endpoint(token, base, path, normalize):
    chosen = kimi.route(token)
    assert (chosen.base_url, chosen.path, chosen.normalize) == (base, path, normalize)


def test_credential_places_in_lookup_order():
    assert kimi.CREDENTIALS == [".env:KIMI_API_KEY", ".env:KIMI_CODING_API_KEY",
                                'auth.json:credential_pool."kimi-coding"[].access_token']
    assert kimi_cn.CREDENTIALS == [".env:KIMI_CN_API_KEY",
                                   'auth.json:credential_pool."kimi-coding-cn"[].access_token']


# -- Kimi Code windows --------------------------------------------------------------------
def test_the_usage_example():
    assert kimi.normalize_usage(USAGE_EXAMPLE) == {
        "windows": [
            {"label": "Rate window", "used_percent": 69.5, "reset_at": "2026-01-06T13:33:02Z", "window_s": 18000,
             "detail": "139 of 200 requests used"},
            {"label": "Weekly", "used_percent": 10.45, "reset_at": "2026-01-09T15:23:13Z", "window_s": 604800,
             "detail": "214 of 2,048 requests used"},
        ],
        "balances": [], "details": [], "title": "Kimi Code", "plan": None, "unavailable_reason": None,
        "source": "usage_api",
    }


@pytest.mark.parametrize("part, used, detail", [
    ({"limit": "2048", "used": "214"}, 10.45, "214 of 2,048 requests used"),
    ({"limit": "2048", "remaining": "1834"}, 10.45, "214 of 2,048 requests used"),     # used from remaining
    ({"limit": "2048", "used": "n/a", "remaining": "1834"}, 10.45, "214 of 2,048 requests used"),
    ({"limit": 2048, "used": 214, "remaining": 0}, 10.45, "214 of 2,048 requests used"),   # used wins
    ({"limit": "100", "used": "1e9"}, 100.0, "1,000,000,000 of 100 requests used"),     # clamped
    ({"limit": "100", "used": "-5"}, 0.0, "-5 of 100 requests used"),
    ({"limit": "10", "used": "2.5"}, 25.0, "2.5 of 10 requests used"),
])
def test_weekly_used_share_and_detail(part, used, detail):
    week = kimi.normalize_usage({"usage": part})["windows"]
    assert [(w["label"], w["used_percent"], w["detail"]) for w in week] == [("Weekly", used, detail)]


@pytest.mark.parametrize("part", [{"limit": "0", "used": "1"}, {"limit": "-3", "used": "1"}, {"used": "1"},
                                  {"limit": "100"}, {"limit": "many", "used": "1"}, "2048", None])
def test_unusable_parts_are_skipped(part):
    assert kimi.normalize_usage({"usage": part})["windows"] == []


@pytest.mark.parametrize("key", ["resetTime", "resetAt", "reset_time", "reset_at"])
def test_reset_key_aliases(key):
    week = kimi.normalize_usage({"usage": {"limit": 10, "used": 1, key: "2026-01-09T15:23:13.716839300Z"}})
    assert week["windows"][0]["reset_at"] == "2026-01-09T15:23:13Z"


@pytest.mark.parametrize("window_spec, seconds", [
    ({"duration": 300, "timeUnit": "TIME_UNIT_MINUTE"}, 18000),
    ({"duration": 5, "timeUnit": "TIME_UNIT_HOUR"}, 18000),
    ({"duration": "1", "timeUnit": "TIME_UNIT_DAY"}, 86400),
    ({"duration": 30, "timeUnit": "TIME_UNIT_SECOND"}, None),       # unknown unit: length unknown
    ({"timeUnit": "TIME_UNIT_MINUTE"}, None),
    ("5h", None),
])
def test_rate_window_length(window_spec, seconds):
    entry = {"window": window_spec, "detail": {"limit": 200, "used": 10}}
    assert kimi.normalize_usage({"limits": [entry]})["windows"][0]["window_s"] == seconds


def test_a_rate_window_without_window_is_300_minutes_and_may_carry_its_counts_itself():
    got = kimi.normalize_usage({"limits": [{"limit": "200", "remaining": "61", "reset_at": 1767706382717}]})
    assert got["windows"] == [{"label": "Rate window", "used_percent": 69.5, "reset_at": "2026-01-06T13:33:02Z",
                               "window_s": 18000, "detail": "139 of 200 requests used"}]


def test_only_the_first_limit_is_the_rate_window():
    second = {"window": {"duration": 1, "timeUnit": "TIME_UNIT_DAY"}, "detail": {"limit": 1, "used": 1}}
    got = kimi.normalize_usage({**USAGE_EXAMPLE, "limits": [*USAGE_EXAMPLE["limits"], second]})
    assert [w["label"] for w in got["windows"]] == ["Rate window", "Weekly"]


def test_nothing_usable_is_unavailable_and_a_non_object_is_bad_response():
    assert kimi.normalize_usage({"usage": None, "limits": []})["unavailable_reason"] == \
        "Kimi Code reported no usage limits for this key."
    assert kimi.normalize_usage({"limits": "x"})["windows"] == []
    with pytest.raises(ProbeFailure) as caught:
        kimi.normalize_usage(["usage"])
    assert caught.value.code == "bad_response"


# -- Moonshot balance ---------------------------------------------------------------------
def test_the_balance_example():
    assert kimi.normalize_balance(BALANCE_EXAMPLE) == {
        "windows": [],
        "balances": [{"label": "Available", "amount": 49.58, "currency": "USD"},
                     {"label": "Voucher", "amount": 50.0, "currency": "USD"},
                     {"label": "Cash", "amount": 12.34, "currency": "USD"}],
        "details": ["Balance: $49.58 (voucher $50.00, cash $12.34)"],
        "title": "Moonshot balance", "plan": None, "unavailable_reason": None, "source": "balance_api",
    }


def test_the_china_balance_is_in_cny():
    got = kimi_cn.normalize(BALANCE_EXAMPLE)
    assert got["details"] == ["Balance: ¥49.58 (voucher ¥50.00, cash ¥12.34)"]
    assert [(b["label"], b["amount"], b["currency"]) for b in got["balances"]] == [
        ("Available", 49.58, "CNY"), ("Voucher", 50.0, "CNY"), ("Cash", 12.34, "CNY")]
    assert (got["title"], got["source"]) == ("Moonshot balance", "balance_api")
    assert kimi_cn.MOONSHOT_CN_BASE_URL == "https://api.moonshot.cn"


@pytest.mark.parametrize("data, details, amounts", [
    ({"available_balance": -2.5, "voucher_balance": 0, "cash_balance": -12.34},
     ["Balance: -$2.50 (voucher $0.00, cash -$12.34)"], [-2.5, 0.0, -12.34]),       # a deficit stays negative
    ({"available_balance": "49.58", "voucher_balance": "50", "cash_balance": "0"},
     ["Balance: $49.58 (voucher $50.00, cash $0.00)"], [49.58, 50.0, 0.0]),         # decimal strings, zero listed
    ({"available_balance": 0, "voucher_balance": None, "cash_balance": "x"}, ["Balance: $0.00"], [0.0]),
    ({"voucher_balance": 50, "cash_balance": 1}, ["Balance: voucher $50.00, cash $1.00"], [50.0, 1.0]),
    ({}, [], []),
])
def test_balance_parts(data, details, amounts):
    got = kimi.normalize_balance({"code": 0, "data": data, "scode": "0x0", "status": True})
    assert got["details"] == details
    assert [b["amount"] for b in got["balances"]] == amounts
    assert got["unavailable_reason"] == (None if details else "Moonshot reported no balance for this account.")


@pytest.mark.parametrize("answer, code, message", [
    ({"code": 1, "scode": "unauthorized", "status": False}, "unauthorized",
     "Moonshot rejected the API key (unauthorized)."),
    ({"code": 0, "scode": "Unauthorized", "status": False}, "unauthorized",
     "Moonshot rejected the API key (unauthorized)."),
    ({"code": 5, "scode": "0x5", "status": True}, "provider_error", "Moonshot reported an error (0x5)."),
    ({"code": "3", "scode": "rate\nlimited"}, "provider_error", "Moonshot reported an error (rate limited)."),
    ({"code": 7, "data": {"available_balance": 1}}, "provider_error", "Moonshot reported an error (code 7)."),
    ({"status": False}, "provider_error", "Moonshot reported an error (code none)."),
])
def test_balance_errors(answer, code, message):
    with pytest.raises(ProbeFailure) as caught:
        kimi.normalize_balance(answer)
    assert (caught.value.code, caught.value.message) == (code, message)


def test_code_as_a_decimal_string_and_absent_status_are_fine():
    got = kimi.normalize_balance({"code": "0", "data": {"available_balance": 1}})
    assert got["details"] == ["Balance: $1.00"]


@pytest.mark.parametrize("answer", [[], {"code": 0, "data": None}, {"code": 0, "data": [1]}, {"code": 0}])
def test_balance_shapes(answer):
    with pytest.raises(ProbeFailure) as caught:
        kimi.normalize_balance(answer)
    assert caught.value.code == "bad_response"
