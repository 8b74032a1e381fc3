"""The workers.result helpers the 0.3 providers added or extended: nanosecond ISO
fractions, decimal-string numbers, non-money balances, the §16 result dict, provider text
made safe for an error line, and run_pure's hand-over of a pure step's failure to the
ctx. (The older helpers are covered in test_adapters.py.)"""
from __future__ import annotations

import pytest

from workers.result import (RESULT_WINDOW_KEYS, ProbeFailure, balance, count, epoch_seconds, first_text, iso_utc,
                            number, percent, provider_text, result, run_pure, window)

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize("value, expected", [
    ("2026-01-09T15:23:13.716839300Z", 1767972193.716839),     # Kimi: 9 digits, cut to microseconds
    ("2026-01-06T13:33:02.717479433Z", 1767706382.717479),
    ("2026-01-09T15:23:13.7Z", 1767972193.7),                   # one digit
    ("2026-01-09T15:23:13.123Z", 1767972193.123),
    ("2026-01-09T15:23:13.1234567891234Z", 1767972193.123456),  # more than 9
    ("2026-01-09T15:23:13,5+00:00", 1767972193.5),              # ISO's comma
    ("2026-01-09T16:23:13.999999999+01:00", 1767972193.999999),
    ("2026-09-01", 1788220800.0),                               # a date: 00:00 UTC
    (1785816000000, 1785816000.0),                              # epoch ms above 1e12
    ("1785816000000", 1785816000.0),
    (1785816000, 1785816000.0),
    ("1785816000.5", 1785816000.5),
])
def test_epoch_seconds_fractions_and_milliseconds(value, expected):
    assert epoch_seconds(value) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("value, expected", [
    ("2026-01-09T15:23:13.716839300Z", "2026-01-09T15:23:13Z"),
    ("2026-01-06T13:33:02.717479433Z", "2026-01-06T13:33:02Z"),
    ("2026-09-01", "2026-09-01T00:00:00Z"),
    (1780297200000, "2026-06-01T07:00:00Z"),
    ("15:23:13.716839300", None),             # a time without a date is not an instant
])
def test_iso_utc_of_the_new_shapes(value, expected):
    assert iso_utc(value) == expected


@pytest.mark.parametrize("value, expected", [
    ("14000", 14000.0), (" 12.30 ", 12.3), ("-3.5", -3.5), ("1e3", 1000.0), ("0", 0.0),
    ("", None), ("NaN", None), ("Infinity", None), ("1,000", None), ("0x10", None), (True, None), ([], None),
])
def test_number_reads_decimal_strings(value, expected):
    assert number(value) == expected


@pytest.mark.parametrize("value, expected", [
    (1e9, 100.0), (-5, 0.0), ("250", 100.0), ("-0.5", 0.0), ("96", 96.0), (22.4, 22.4),
])
def test_percent_clamps(value, expected):
    assert percent(value) == expected


def test_balance_of_a_non_money_unit_keeps_its_lower_case_unit_and_precision():
    assert balance("Points", "14000", "points", unit=True) == {"label": "Points", "amount": 14000.0,
                                                                 "currency": "points"}
    assert balance("Points", 0.125, "Points", unit=True)["amount"] == 0.125      # not rounded to cents
    assert balance("Points", 3, "Points", unit=True)["currency"] == "points"
    assert balance("Points", "many", "points", unit=True) is None
    # money is unchanged: upper-case code, cents
    assert balance("Cash", "12.345", "usd") == {"label": "Cash", "amount": 12.35, "currency": "USD"}


def test_result_has_exactly_the_contract_keys():
    built = result(title="T", source="s", windows=[window("W", 140, 1780297200000, "d", window_s=18000)],
                   details=["x"], balances=[balance("B", "1.5"), None], plan="Pro")
    assert built == {
        "windows": [{"label": "W", "used_percent": 100.0, "reset_at": "2026-06-01T07:00:00Z", "window_s": 18000,
                     "detail": "d"}],
        "balances": [{"label": "B", "amount": 1.5, "currency": "USD"}],
        "details": ["x"], "title": "T", "plan": "Pro", "unavailable_reason": None, "source": "s",
    }
    assert tuple(built["windows"][0]) == RESULT_WINDOW_KEYS
    assert result(title="T", source="s", unavailable_reason="r")["windows"] == []


@pytest.mark.parametrize("value, expected", [
    ("Invalid API key", "Invalid API key"),
    ("  two\nlines\tand\x00nul  ", "two lines and nul"),
    ("", None), ("   ", None), (None, None), (42, None), ({"msg": "x"}, None),
    ("é" * 300, "é" * 199 + "…"),
])
def test_provider_text(value, expected):
    assert provider_text(value) == expected


def test_first_text_and_count():
    assert first_text({"a": "", "b": "  ", "c": 3, "d": " Pro ", "e": "Max"}, "a", "b", "c", "d", "e") == "Pro"
    assert first_text({}, "a") is None
    assert [count(v) for v in (2048, 2048.0, 214, 12.5, 1234567.125, 0)] == ["2,048", "2,048", "214", "12.5",
                                                                               "1,234,567.12", "0"]


class CtxFailure(Exception):
    """Stands for whatever failure class a ctx has: run_pure must not assume ProbeFailure."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


class FailOnly:
    """Only ``fail`` is used by run_pure; this is the documented ctx.fail contract, not a
    stand-in for a probe's HTTP or home access."""

    Failure = CtxFailure

    def fail(self, code, message):
        raise CtxFailure(code, message)


def test_run_pure_hands_a_failure_to_ctx_fail_without_the_secret_or_a_chained_cause():
    def step(token):
        raise ProbeFailure("provider_error", f"bad key {token} rejected")

    with pytest.raises(CtxFailure) as caught:
        run_pure(FailOnly(), step, "sk-secret-1", secret="sk-secret-1")
    assert (caught.value.code, caught.value.message) == ("provider_error", "bad key … rejected")
    assert caught.value.__context__ is None and caught.value.__cause__ is None
    assert run_pure(FailOnly(), lambda a, b: a + b, 2, 3) == 5


def test_run_pure_lets_other_exceptions_through():
    with pytest.raises(KeyError):
        run_pure(FailOnly(), lambda: {}["x"])
