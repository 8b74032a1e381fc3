"""The example plugin's own tests: its mapping, with nothing of quota-probe imported.
(quota-probe's suite installs this package and reads it end to end: tests/test_example_plugin.py.)"""
import pytest

from quota_probe_example.provider import emulated_response, normalize


def test_maps_each_quota_to_a_window_and_the_credit_to_a_balance():
    result = normalize({"plan": "team", "credit_usd": "12.5", "quotas": [
        {"name": "daily", "used": 120, "limit": 1000, "period_s": 86400, "resets_at": 1790000000},
        {"name": "monthly", "used": "5300", "limit": "20000", "period_s": 2592000,
         "resets_at": "2026-12-31T00:00:00Z"}]})
    assert [(w["label"], w["used_percent"], w["window_s"]) for w in result["windows"]] == [
        ("Today", 12.0, 86400), ("This month", 26.5, 2592000)]
    assert result["windows"][0]["detail"] == "120 of 1,000 requests used"
    assert result["balances"] == [{"label": "Credit", "amount": 12.5, "currency": "USD"}]
    assert result["plan"] == "team"


def test_a_quota_without_a_limit_is_left_out():
    assert normalize({"quotas": [{"name": "daily", "used": 1, "limit": 0}]})["windows"] == []


@pytest.mark.parametrize("body", [[], {"quotas": None}, {"quotas": [{"used": "x", "limit": 10}]}])
def test_an_unknown_shape_raises(body):
    with pytest.raises((ValueError, TypeError, KeyError)):
        normalize(body)


def test_the_emulated_answer_is_one_it_understands():
    status, body = emulated_response("ex-token")
    assert status == 200 and len(normalize(body)["windows"]) == 2
    assert emulated_response("ex-401-token")[0] == 401
