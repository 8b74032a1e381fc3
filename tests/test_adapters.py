"""Every normalization rule and error mapping of PROVIDERS.md, over real HTTP: the adapter
runs in this process (child-side code) with a real ProviderHttp against the emulator,
which serves the literal examples of PROVIDERS.md through ``script()``. The pure helpers
of workers.result / workers.http are tested first."""
from __future__ import annotations

import base64
import itertools
import json
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.credentials import load_home
from workers.http import MAX_BODY_BYTES, ProviderHttp, base_url, retry_after_s
from workers.providers import NAMES, run_probe
from workers.providers.openai_codex import jwt_account_id, plan_name, usage_url
from workers.result import ProbeFailure, failure, iso_utc, money, snapshot, window
from support import fresh

pytestmark = pytest.mark.timeout(30)
SNAPSHOT_KEYS = ["provider", "available", "title", "plan", "source", "windows", "details", "balances",
                 "unavailable_reason", "error"]
_unique = itertools.count()



@pytest.fixture
def probe_home(emulator_env, http, tmp_path):
    """probe_home(provider, env={...}, auth={...}) -> the child-side snapshot dict."""

    def run(provider: str, env: dict[str, str] | None = None, auth: dict | None = None, timeout_s: float = 5.0,
            client: ProviderHttp | None = None):
        home = tmp_path / f"home-{next(_unique)}"
        home.mkdir()
        if env is not None:
            (home / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        if auth is not None:
            (home / "auth.json").write_text(json.dumps(auth))
        snap = run_probe(provider, load_home(home), client or http, timeout_s)
        assert list(snap) == SNAPSHOT_KEYS
        return snap

    return run


def codex_auth(token: str, account_id: str | None = None) -> dict:
    tokens = {"access_token": token, **({"account_id": account_id} if account_id else {})}
    return {"providers": {"openai-codex": {"tokens": tokens}}}


def credential_for(provider: str, token: str) -> dict:
    """probe_home keyword arguments that give ``provider`` this token."""
    if provider == "openai-codex":
        return {"auth": codex_auth(token)}
    if provider == "nous":
        return {"auth": {"providers": {"nous": {"access_token": token, "expires_at": "2099-01-01T00:00:00Z"}}}}
    name = {"anthropic": "ANTHROPIC_TOKEN", "openrouter": "OPENROUTER_API_KEY", "deepseek": "DEEPSEEK_API_KEY",
            "zai": "GLM_API_KEY", "kimi-coding": "KIMI_API_KEY", "kimi-coding-cn": "KIMI_CN_API_KEY",
            "minimax": "MINIMAX_API_KEY", "minimax-cn": "MINIMAX_CN_API_KEY",
            "copilot": "COPILOT_GITHUB_TOKEN"}[provider]
    return {"env": {name: token}}


def last_request(emulator, token: str):
    matching = [r for r in emulator.requests() if r.token == token]
    assert matching, "the emulator saw no request with this token"
    return matching[-1]


def no_secret_in(result: dict, *secrets: str) -> None:
    text = json.dumps(result)
    for secret in secrets:
        assert secret not in text


def rows(snap: dict) -> list[tuple]:
    return [(w["label"], w["used_percent"], w["remaining_percent"], w["reset_at"], w["detail"]) for w in snap["windows"]]


# -- pure helpers --------------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [
    ("2026-11-23T05:00:00.288792+00:00", "2026-11-23T05:00:00Z"),
    ("2026-11-23T05:00:00Z", "2026-11-23T05:00:00Z"),
    ("2026-11-23T05:00:00z", "2026-11-23T05:00:00Z"),
    ("2026-11-23T10:30:00+05:30", "2026-11-23T05:00:00Z"),
    ("2026-11-22T21:00:00.999999-08:00", "2026-11-23T05:00:00Z"),
    ("2026-11-23T05:00:00", "2026-11-23T05:00:00Z"),          # no offset: UTC
    ("2026-11-23 05:00:00+00:00", "2026-11-23T05:00:00Z"),
    (1795410000, "2026-11-23T05:00:00Z"),
    (1795410000.75, "2026-11-23T05:00:00Z"),
    ("1795410000", "2026-11-23T05:00:00Z"),
    (1795410000000, "2026-11-23T05:00:00Z"),                  # milliseconds
    (None, None), (True, None), ("", None), ("soon", None), ("2026-13-01T00:00:00Z", None),
    ("0001-01-01T00:00:00+01:00", None), ("9999-12-31T23:59:59-01:00", None), (1e300, None),
    (float("nan"), None), ({"at": 1}, None), ([1795410000], None),
])
def test_iso_utc(value, expected):
    assert iso_utc(value) == expected


@given(st.one_of(st.text(max_size=40), st.integers(), st.floats(), st.none(), st.booleans(), st.datetimes(
    timezones=st.timezones()).map(lambda d: d.isoformat())))
@settings(max_examples=300, deadline=None)
def test_iso_utc_never_raises_and_is_always_canonical(value):
    result = iso_utc(value)
    assert result is None or (len(result) == 20 and result.endswith("Z") and iso_utc(result) == result)


@pytest.mark.parametrize("amount, currency, text", [
    (3.5, "USD", "$3.50"), (12.3, "CNY", "¥12.30"), (5, "EUR", "€5.00"), (7.25, "GBP", "£7.25"),
    (3.5, "CHF", "3.50 CHF"), (3.5, "chf", "3.50 CHF"), (3.5, None, "$3.50"), (3.5, "", "$3.50"),
    (1234.5, "USD", "$1,234.50"), (-1, "USD", "-$1.00"), (-3.5, "CHF", "-3.50 CHF"), (-0.001, "USD", "$0.00"),
    (0.125, "USD", "$0.13"), (12.345, "CNY", "¥12.35"), ("2.005", "USD", "$2.01"), (0, "USD", "$0.00"),
])
def test_money(amount, currency, text):
    assert money(amount, currency) == text


@pytest.mark.parametrize("used, expected", [
    (42, (42.0, 58.0)), (0.5, (0.5, 99.5)), ("61", (61.0, 39.0)), (-5, (0.0, 100.0)), (140, (100.0, 0.0)),
    (None, (None, None)), ("n/a", (None, None)), (True, (None, None)), (float("inf"), (None, None)),
    (33.3333, (33.33, 66.67)),
])
def test_window_percentages(used, expected):
    built = window("W", used, "2026-11-23T05:00:00Z", "d")
    assert (built["used_percent"], built["remaining_percent"]) == expected
    assert built["label"] == "W" and built["reset_at"] == "2026-11-23T05:00:00Z" and built["detail"] == "d"


def test_snapshot_and_failure_shapes():
    assert snapshot("p", title="T", source="s")["available"] is False
    assert snapshot("p", title="T", source="s", details=["x"])["available"] is True
    assert snapshot("p", title="T", source="s", details=["x"], unavailable_reason="r")["available"] is False
    assert list(snapshot("p", title="T", source="s")) == SNAPSHOT_KEYS
    failed = failure("p", "rate_limited", "Slow down.", retry_after_s=7.0)
    assert list(failed) == SNAPSHOT_KEYS and failed["available"] is False
    assert failed["error"] == {"code": "rate_limited", "message": "Slow down.", "retry_after_s": 7.0}
    assert failure("p", "timeout", "Late.")["error"] == {"code": "timeout", "message": "Late."}


def test_retry_after_parsing():
    now = time.time()
    http_date = format_datetime(datetime.fromtimestamp(now, timezone.utc) + timedelta(seconds=120), usegmt=True)
    assert retry_after_s("7") == 7 and retry_after_s(" 0 ") == 0 and retry_after_s("2.5") == 2.5
    assert 118 <= retry_after_s(http_date, now=now) <= 121
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0        # in the past
    for bad in (None, "", "-3", "soon", "inf", "nan"):
        assert retry_after_s(bad) is None


def test_base_url_override(monkeypatch):
    monkeypatch.delenv("PROBE_OPENAI_CODEX_BASE_URL", raising=False)
    assert base_url("openai-codex", "https://chatgpt.com/backend-api/codex") == "https://chatgpt.com/backend-api/codex"
    monkeypatch.setenv("PROBE_OPENAI_CODEX_BASE_URL", " http://127.0.0.1:9/backend-api/codex/ ")
    assert base_url("openai-codex", "https://x") == "http://127.0.0.1:9/backend-api/codex"


# -- anthropic -----------------------------------------------------------------------------
ANTHROPIC_EXAMPLE = {
    "five_hour": {"utilization": 42.0, "resets_at": "2026-11-23T05:00:00.288792+00:00"},
    "seven_day": {"utilization": 61, "resets_at": "2026-11-27T00:00:00Z"},
    "seven_day_opus": None,
    "extra_usage": {"is_enabled": True, "used_credits": 350, "monthly_limit": 5000, "currency": "USD"},
}


def test_anthropic_example_from_providers_md(emulator, probe_home):
    token = fresh("sk-ant-oat01-example")
    emulator.script(token, ANTHROPIC_EXAMPLE)
    snap = probe_home("anthropic", {"ANTHROPIC_TOKEN": token})
    assert snap == {
        "provider": "anthropic", "available": True, "title": "Account limits", "plan": None,
        "source": "oauth_usage_api",
        "windows": [
            {"label": "Current session", "used_percent": 42.0, "remaining_percent": 58.0,
             "reset_at": "2026-11-23T05:00:00Z", "detail": None, "window_s": 18000},
            {"label": "Current week", "used_percent": 61.0, "remaining_percent": 39.0,
             "reset_at": "2026-11-27T00:00:00Z", "detail": None, "window_s": 604800},
        ],
        "details": ["Extra usage: $3.50 of $50.00"], "balances": [], "unavailable_reason": None, "error": None,
    }
    request = last_request(emulator, token)
    assert request.path == "/api/oauth/usage" and request.method == "GET"
    assert request.headers["anthropic-beta"] == "oauth-2025-04-20"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/json"
    assert request.headers["authorization"] == f"Bearer {token}"
    no_secret_in(snap, token)


def test_anthropic_utilization_is_a_percentage_never_rescaled(emulator, probe_home):
    token = fresh("sk-ant-oat01-small")
    emulator.script(token, {"five_hour": {"utilization": 0.5, "resets_at": None},
                            "seven_day": {"utilization": 1, "resets_at": None},
                            "seven_day_opus": {"utilization": 0.0, "resets_at": None}})
    snap = probe_home("anthropic", {"ANTHROPIC_TOKEN": token})
    assert rows(snap) == [("Current session", 0.5, 99.5, None, None), ("Current week", 1.0, 99.0, None, None),
                          ("Opus week", 0.0, 100.0, None, None)]


def test_anthropic_window_order_labels_skips_and_reset_normalization(emulator, probe_home):
    token = fresh("sk-ant-oat01-order")
    emulator.script(token, {
        "seven_day_oauth_apps": {"utilization": 5, "resets_at": "2026-11-27T05:30:00+05:30"},
        "seven_day_sonnet": {"utilization": 4, "resets_at": "garbage"},
        "seven_day_opus": {"utilization": 3},
        "seven_day": None,
        "five_hour": {"utilization": 1, "resets_at": 1795410000},
        "something_new": {"utilization": 9},
        "seven_day_cowork": {"utilization": 9},
    })
    snap = probe_home("anthropic", {"ANTHROPIC_TOKEN": token})
    assert rows(snap) == [
        ("Current session", 1.0, 99.0, "2026-11-23T05:00:00Z", None),
        ("Opus week", 3.0, 97.0, None, None),
        ("Sonnet week", 4.0, 96.0, None, None),
        ("OAuth apps week", 5.0, 95.0, "2026-11-27T00:00:00Z", None),
    ]
    assert snap["details"] == [] and snap["available"]


def test_anthropic_window_with_null_utilization_is_skipped(emulator, probe_home):
    token = fresh("sk-ant-oat01-nullutil")
    emulator.script(token, {"five_hour": {"utilization": None, "resets_at": "2026-11-23T05:00:00Z"},
                            "seven_day": {"utilization": 7, "resets_at": None}})
    assert [w["label"] for w in probe_home("anthropic", {"ANTHROPIC_TOKEN": token})["windows"]] == ["Current week"]


@pytest.mark.parametrize("extra, line", [
    ({"is_enabled": True, "used_credits": 500, "monthly_limit": 10000, "currency": "USD"}, "Extra usage: $5.00 of $100.00"),
    ({"is_enabled": True, "used_credits": 500, "monthly_limit": 0, "currency": "USD"}, "Extra usage: $5.00 of unlimited"),
    ({"is_enabled": True, "used_credits": 500, "monthly_limit": None, "currency": "USD"}, "Extra usage: $5.00 of unlimited"),
    ({"is_enabled": True, "used_credits": 500, "currency": "USD"}, "Extra usage: $5.00 of unlimited"),
    ({"is_enabled": True, "used_credits": 500, "monthly_limit": 10000, "currency": "EUR"}, "Extra usage: €5.00 of €100.00 EUR"),
    ({"is_enabled": True, "used_credits": 500, "monthly_limit": 10000, "currency": "eur"}, "Extra usage: €5.00 of €100.00 EUR"),
    ({"is_enabled": True, "used_credits": 500, "monthly_limit": 10000, "currency": "GBP"}, "Extra usage: £5.00 of £100.00 GBP"),
    ({"is_enabled": True, "used_credits": 500, "monthly_limit": None, "currency": "EUR"}, "Extra usage: €5.00 of unlimited EUR"),
    ({"is_enabled": True, "used_credits": 350, "monthly_limit": 5000, "currency": "CHF"}, "Extra usage: 3.50 CHF of 50.00 CHF"),
    ({"is_enabled": True, "used_credits": 0, "monthly_limit": 5000, "currency": None}, "Extra usage: $0.00 of $50.00"),
    ({"is_enabled": True, "used_credits": 12345, "monthly_limit": 500000}, "Extra usage: $123.45 of $5,000.00"),
    ({"is_enabled": False, "used_credits": 500, "monthly_limit": 10000, "currency": "USD"}, None),
    ({"is_enabled": "yes", "used_credits": 500, "monthly_limit": 10000, "currency": "USD"}, None),
    ({"is_enabled": True, "used_credits": None, "monthly_limit": 10000, "currency": "USD"}, None),
    ({"is_enabled": True, "used_credits": "lots", "monthly_limit": 10000, "currency": "USD"}, None),
])
def test_anthropic_extra_usage_line(emulator, probe_home, extra, line):
    token = fresh("sk-ant-oat01-extra")
    emulator.script(token, {"five_hour": {"utilization": 10, "resets_at": None}, "extra_usage": extra})
    assert probe_home("anthropic", {"ANTHROPIC_TOKEN": token})["details"] == ([line] if line else [])


def test_anthropic_response_without_limits_says_so(emulator, probe_home):
    token = fresh("sk-ant-oat01-nolimits")
    emulator.script(token, {"five_hour": None, "seven_day": None, "extra_usage": {"is_enabled": False}})
    snap = probe_home("anthropic", {"ANTHROPIC_TOKEN": token})
    assert snap["available"] is False and snap["error"] is None
    assert snap["unavailable_reason"] == "Anthropic reported no usage limits for this account."


@pytest.mark.parametrize("where", ["ANTHROPIC_API_KEY", "ANTHROPIC_TOKEN", "pool"])
def test_anthropic_api_key_short_circuits_without_a_request(emulator, probe_home, where):
    key = fresh("sk-ant-api03-plainkey")
    if where == "pool":
        snap = probe_home("anthropic", {}, {"credential_pool": {"anthropic": [{"access_token": key}]}})
    else:
        snap = probe_home("anthropic", {where: key})
    assert snap == {"provider": "anthropic", "available": False, "title": "Account limits", "plan": None,
                    "source": "oauth_usage_api", "windows": [], "details": [], "balances": [],
                    "unavailable_reason": "Anthropic account limits are only available for OAuth-backed Claude accounts.",
                    "error": None}
    assert emulator.count(token=key) == 0


@pytest.mark.parametrize("prefix", ["sk-ant-oat01-", "sk-ant-sid01-", "eyJhbGciOi.", "cc-"])
def test_anthropic_oauth_token_shapes_are_probed(emulator, probe_home, prefix):
    token = fresh(prefix + "shape")
    assert probe_home("anthropic", {"CLAUDE_CODE_OAUTH_TOKEN": token})["available"]
    assert emulator.count(token=token) == 1


def test_anthropic_credential_order_and_auth_json_pool(emulator, probe_home):
    first, second, third = fresh("sk-ant-oat01-first"), fresh("sk-ant-oat01-second"), fresh("sk-ant-oat01-third")
    pool_token = fresh("eyJpool")
    pool = {"credential_pool": {"anthropic": [{"access_token": pool_token}]}}
    probe_home("anthropic", {"ANTHROPIC_API_KEY": third, "CLAUDE_CODE_OAUTH_TOKEN": second, "ANTHROPIC_TOKEN": first}, pool)
    probe_home("anthropic", {"ANTHROPIC_API_KEY": third, "CLAUDE_CODE_OAUTH_TOKEN": second, "ANTHROPIC_TOKEN": ""}, pool)
    probe_home("anthropic", {"ANTHROPIC_API_KEY": third}, pool)
    assert [emulator.count(token=t) for t in (first, second, third, pool_token)] == [1, 1, 1, 0]
    pool["credential_pool"]["anthropic"] = [{"label": "no token"}, {"access_token": ""}, {"access_token": 42},
                                            "junk", {"access_token": pool_token}, {"access_token": "sk-ant-oat-later"}]
    assert probe_home("anthropic", {}, pool)["available"]
    assert emulator.count(token=pool_token) == 1 and emulator.count(token="sk-ant-oat-later") == 0


def test_anthropic_403_names_the_missing_scope(probe_home):
    token = fresh("sk-ant-oat01-scope-403-")
    snap = probe_home("anthropic", {"ANTHROPIC_TOKEN": token})
    assert snap["error"]["code"] == "forbidden" and "user:profile" in snap["error"]["message"]
    no_secret_in(snap, token)


def test_anthropic_429_with_retry_after_zero(emulator, probe_home):
    """The endpoint's known habit: 429 with ``retry-after: 0``; 0 is kept (the service's
    exponential back-off decides), not dropped."""
    token = fresh("sk-ant-oat01-busy")
    emulator.script(token, {"type": "error", "error": {"type": "rate_limit_error"}}, status=429,
                    headers={"retry-after": "0"})
    snap = probe_home("anthropic", {"ANTHROPIC_TOKEN": token})
    assert snap["error"]["code"] == "rate_limited" and snap["error"]["retry_after_s"] == 0
    emulator.script(token, {}, status=429)
    snap = probe_home("anthropic", {"ANTHROPIC_TOKEN": token})
    assert snap["error"]["code"] == "rate_limited" and "retry_after_s" not in snap["error"]


# -- error mapping (shared by every adapter) -----------------------------------------------
MARKERS = [("-401-", "unauthorized"), ("-403-", "forbidden"), ("-429-", "rate_limited"), ("-500-", "provider_error"),
           ("-503-", "provider_error"), ("-garbage-", "bad_response"), ("-huge-", "bad_response"),
           ("-reset-", "provider_error")]


@pytest.mark.parametrize("provider", NAMES)
@pytest.mark.parametrize("marker, code", MARKERS)
def test_error_mapping_for_every_provider(probe_home, provider, marker, code):
    token = fresh(f"tok{marker}x")
    snap = probe_home(provider, **credential_for(provider, token))
    assert snap["available"] is False and snap["error"]["code"] == code and snap["provider"] == provider
    assert snap["windows"] == [] and snap["details"] == []
    assert isinstance(snap["error"]["message"], str) and snap["error"]["message"].endswith(".")
    no_secret_in(snap, token, token.split("-")[0] + "-" + token.split("-")[1])


def test_rate_limit_carries_retry_after(probe_home):
    snap = probe_home("deepseek", {"DEEPSEEK_API_KEY": fresh("sk-ds-429-x")})
    assert snap["error"]["code"] == "rate_limited" and snap["error"]["retry_after_s"] == 7
    assert snap["error"]["message"] == "DeepSeek is rate-limiting usage requests (Retry-After 7 s)."


def test_retry_after_as_http_date(emulator, probe_home):
    token = fresh("sk-ds-date")
    when = datetime.now(timezone.utc) + timedelta(seconds=90)
    emulator.script(token, {}, status=429, headers={"Retry-After": format_datetime(when, usegmt=True)})
    snap = probe_home("deepseek", {"DEEPSEEK_API_KEY": token})
    assert snap["error"]["code"] == "rate_limited" and 80 <= snap["error"]["retry_after_s"] <= 91


@pytest.mark.parametrize("value", ["0", "0.4"])
def test_a_retry_after_of_no_wait_names_no_wait(emulator, probe_home, value):
    """``Retry-After: 0`` (the demo's rate-limited home sends it) read "rate-limiting usage
    requests (Retry-After 0 s)" on the card: no wait to name, so no hint."""
    token = fresh("sk-ds-zero")
    emulator.script(token, {}, status=429, headers={"Retry-After": value})
    snap = probe_home("deepseek", {"DEEPSEEK_API_KEY": token})
    assert snap["error"]["code"] == "rate_limited"
    assert snap["error"]["message"] == "DeepSeek is rate-limiting usage requests."


@pytest.mark.parametrize("status, code", [(400, "provider_error"), (404, "provider_error"), (418, "provider_error"),
                                          (502, "provider_error"), (204, "bad_response"), (302, "provider_error")])
def test_other_statuses(emulator, probe_home, status, code):
    token = fresh("sk-ds-status")
    emulator.script(token, {"is_available": True, "balance_infos": []}, status=status,
                    headers={"Location": "/user/balance"} if status == 302 else None)
    snap = probe_home("deepseek", {"DEEPSEEK_API_KEY": token})
    assert snap["error"]["code"] == code
    if code == "provider_error":
        assert str(status) in snap["error"]["message"]


def test_error_bodies_are_never_quoted(emulator, probe_home):
    token = fresh("sk-or-v1-echo")
    echo = {"error": {"message": f"bad key {token}", "code": 401}}
    for status in (400, 401, 403, 429, 500):
        emulator.script(token, echo, status=status)
        snap = probe_home("openrouter", {"OPENROUTER_API_KEY": token})
        assert "bad key" not in json.dumps(snap)
        no_secret_in(snap, token)


def test_hung_provider_is_a_timeout(probe_home):
    start = time.monotonic()
    snap = probe_home("deepseek", {"DEEPSEEK_API_KEY": fresh("sk-ds-hang-x")}, timeout_s=0.5)
    assert snap["error"]["code"] == "timeout" and time.monotonic() - start < 3
    assert snap["error"]["message"] == "DeepSeek did not answer within 0.5 s."


def test_slow_provider_within_the_timeout_answers(probe_home):
    assert probe_home("deepseek", {"DEEPSEEK_API_KEY": fresh("sk-ds-slow100-x")}, timeout_s=3)["available"]


def test_unreachable_provider_is_provider_error(probe_home, monkeypatch):
    monkeypatch.setenv("PROBE_DEEPSEEK_BASE_URL", "http://127.0.0.1:9")
    snap = probe_home("deepseek", {"DEEPSEEK_API_KEY": "sk-ds-nowhere"})
    assert snap["error"]["code"] == "provider_error" and snap["error"]["message"].startswith("Could not reach DeepSeek")
    monkeypatch.setenv("PROBE_DEEPSEEK_BASE_URL", "notaurl")
    assert probe_home("deepseek", {"DEEPSEEK_API_KEY": "sk-ds-nowhere"})["error"]["code"] == "provider_error"


def test_trailing_slash_in_the_base_url(emulator, probe_home, monkeypatch):
    monkeypatch.setenv("PROBE_DEEPSEEK_BASE_URL", emulator.base_url + "/")
    token = fresh("sk-ds-slash")
    assert probe_home("deepseek", {"DEEPSEEK_API_KEY": token})["available"]
    assert last_request(emulator, token).path == "/user/balance"


def test_wrong_shape_is_bad_response(emulator, probe_home):
    cases = [("anthropic", [1, 2, 3]), ("anthropic", "text"), ("anthropic", None), ("openai-codex", [1]),
             ("deepseek", {"balance_infos": "nope"}), ("openrouter", {"data": []}),
             ("openrouter", {"data": {"total_credits": "x", "total_usage": 1}})]
    for provider, body in cases:
        token = fresh("tok-shape")
        emulator.script(token, body)
        snap = probe_home(provider, **credential_for(provider, token))
        assert snap["error"]["code"] == "bad_response", (provider, body)


def test_invalid_utf8_empty_body_and_redirects_are_clear_errors(emulator, probe_home):
    token = fresh("sk-ds-utf8")
    emulator.script(token, raw=b'{"is_available": true, "balance_infos": ["\xff\xfe"]}')
    assert probe_home("deepseek", {"DEEPSEEK_API_KEY": token})["error"]["code"] == "bad_response"
    token = fresh("sk-ds-empty-body")
    emulator.script(token, raw=b"")
    assert probe_home("deepseek", {"DEEPSEEK_API_KEY": token})["error"]["code"] == "bad_response"
    token = fresh("sk-ds-redirect")
    emulator.script(token, {}, status=302, headers={"Location": "/user/balance"})
    snap = probe_home("deepseek", {"DEEPSEEK_API_KEY": token})
    assert snap["error"]["code"] == "provider_error" and "302" in snap["error"]["message"]
    assert emulator.count(token=token) == 1, "redirects are not followed (no redirect loop)"


def test_body_cap_is_one_mebibyte(emulator, probe_home):
    token = fresh("sk-ds-cap")
    body = {"is_available": True, "balance_infos": [], "pad": ""}
    body["pad"] = "x" * (MAX_BODY_BYTES - len(json.dumps(body)))
    emulator.script(token, body)                               # exactly 1 MiB: accepted
    assert probe_home("deepseek", {"DEEPSEEK_API_KEY": token})["error"] is None
    body["pad"] += "x"                                         # one byte more: refused
    emulator.script(token, body)
    snap = probe_home("deepseek", {"DEEPSEEK_API_KEY": token})
    assert snap["error"] == {"code": "bad_response", "message": "The DeepSeek response is larger than 1 MiB."}


def test_undeclared_length_body_is_capped_while_streaming(monkeypatch, tmp_path):
    """A chunked body has no Content-Length to check up front: reading stops at the cap.
    (The emulator always declares a length, hence an in-process transport here.)"""
    sent = []

    def endless():
        for _ in range(10_000):
            sent.append(1)
            yield b"x" * 65536

    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=endless()))
    monkeypatch.setenv("PROBE_DEEPSEEK_BASE_URL", "http://deepseek.test")
    (tmp_path / ".env").write_text("DEEPSEEK_API_KEY=sk-ds-chunked\n")
    client = ProviderHttp(transport=transport)
    try:
        snap = run_probe("deepseek", load_home(tmp_path), client, 5)
    finally:
        client.close()
    assert snap["error"]["code"] == "bad_response" and "1 MiB" in snap["error"]["message"]
    assert len(sent) <= MAX_BODY_BYTES // 65536 + 2


def test_a_dripping_body_still_ends_at_the_deadline(monkeypatch, tmp_path):
    def drip():
        for _ in range(100):
            time.sleep(0.02)
            yield b" "

    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=drip()))
    monkeypatch.setenv("PROBE_DEEPSEEK_BASE_URL", "http://deepseek.test")
    (tmp_path / ".env").write_text("DEEPSEEK_API_KEY=sk-ds-drip\n")
    client = ProviderHttp(transport=transport)
    start = time.monotonic()
    try:
        snap = run_probe("deepseek", load_home(tmp_path), client, 0.3)
    finally:
        client.close()
    assert snap["error"]["code"] == "timeout" and time.monotonic() - start < 1.5


@pytest.mark.parametrize("token", ["sk-ds-line\nbreak", "sk-ds-tök", "sk-ds-\x00nul"])
def test_a_token_that_cannot_be_a_header_is_refused_before_sending(emulator, probe_home, token):
    snap = probe_home("openai-codex", auth=codex_auth(token))
    assert snap["error"]["code"] == "no_credentials"
    no_secret_in(snap, token, "sk-ds")
    assert emulator.count(token=token) == 0


def test_keep_alive_connection_is_reused_across_probes(emulator, probe_home):
    token = fresh("sk-ds-keepalive")
    before = emulator.connections_accepted
    for _ in range(5):
        assert probe_home("deepseek", {"DEEPSEEK_API_KEY": token})["available"]
    assert emulator.connections_accepted - before == 1


def test_keep_alive_survives_error_answers(emulator, probe_home):
    """Small error bodies are read, so a 401/429 does not cost the warm connection."""
    ok, limited, denied = fresh("sk-ds-ka"), fresh("sk-ds-ka-429-"), fresh("sk-ds-ka-401-")
    before = emulator.connections_accepted
    for token in (ok, limited, ok, denied, ok):
        probe_home("deepseek", {"DEEPSEEK_API_KEY": token})
    assert emulator.connections_accepted - before == 1


def test_one_client_serves_every_provider_and_reopens_after_close(emulator, probe_home, http):
    tokens = {provider: fresh(f"tok-{provider}") for provider in NAMES}
    before = emulator.connections_accepted
    for _ in range(2):
        for provider, token in tokens.items():
            assert probe_home(provider, **credential_for(provider, token))["available"], provider
    assert emulator.connections_accepted - before == 1      # one emulator host: one connection
    http.close()
    assert probe_home("deepseek", **credential_for("deepseek", tokens["deepseek"]))["available"]
    assert emulator.connections_accepted - before == 2


@pytest.mark.parametrize("provider", NAMES)
def test_no_credentials(probe_home, provider):
    snap = probe_home(provider, {})
    assert snap["error"]["code"] == "no_credentials" and snap["available"] is False


@pytest.mark.parametrize("provider", NAMES)
def test_no_token_value_ever_appears_in_a_result(emulator, probe_home, provider):
    """Across the normal answer and every fault: json.dumps(result) never holds the token."""
    for marker in ("", "-401-", "-429-", "-500-", "-garbage-", "-keyfail-"):
        token = fresh(f"tokSECRET{marker}")
        snap = probe_home(provider, **credential_for(provider, token))
        no_secret_in(snap, token, "tokSECRET")


# -- openai-codex --------------------------------------------------------------------------
CODEX_EXAMPLE = {"plan_type": "plus", "rate_limit": {
    "primary_window": {"used_percent": 37, "limit_window_seconds": 18000, "reset_at": 1795410000},
    "secondary_window": {"used_percent": 12, "limit_window_seconds": 604800, "reset_at": "2026-11-29T00:00:00Z"}},
    "credits": {"has_credits": True, "balance": 4.2}, "rate_limit_reset_credits": {"available_count": 1}}


def jwt(claims: object) -> str:
    def part(data: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


def test_codex_example_from_providers_md(emulator, probe_home):
    token = fresh("codex-example-token")
    emulator.script(token, CODEX_EXAMPLE)
    snap = probe_home("openai-codex", auth=codex_auth(token, "acct-1"))
    assert snap == {
        "provider": "openai-codex", "available": True, "title": "Usage limits", "plan": "Plus", "source": "usage_api",
        "windows": [
            {"label": "Session", "used_percent": 37.0, "remaining_percent": 63.0,
             "reset_at": "2026-11-23T05:00:00Z", "detail": None, "window_s": 18000},
            {"label": "Weekly", "used_percent": 12.0, "remaining_percent": 88.0,
             "reset_at": "2026-11-29T00:00:00Z", "detail": None, "window_s": 604800},
        ],
        "details": ["Credits balance: $4.20", "Rate-limit resets banked: 1"],
        "balances": [{"label": "Credits", "amount": 4.2, "currency": "USD"}],
        "unavailable_reason": None, "error": None,
    }
    request = last_request(emulator, token)
    assert request.path == "/backend-api/wham/usage"
    assert request.headers["chatgpt-account-id"] == "acct-1" and request.headers["user-agent"] == "codex-cli"
    assert request.headers["accept"] == "application/json"
    no_secret_in(snap, token)


def test_codex_labels_by_window_length_else_by_position(emulator, probe_home):
    token = fresh("codex-labels")
    emulator.script(token, {"plan_type": "team_plus-max", "rate_limit": {
        "primary_window": {"used_percent": 50, "limit_window_seconds": 604800, "reset_at": None},
        "secondary_window": {"used_percent": 10, "limit_window_seconds": 12345, "reset_at": "2026-11-29T01:00:00+01:00"}},
        "credits": {"has_credits": True, "unlimited": True, "balance": None}})
    snap = probe_home("openai-codex", auth=codex_auth(token))
    assert rows(snap) == [("Weekly", 50.0, 50.0, None, None), ("Weekly", 10.0, 90.0, "2026-11-29T00:00:00Z", None)]
    assert snap["plan"] == "Team Plus Max"
    assert snap["details"] == ["Credits balance: unlimited"]
    token = fresh("codex-positional")
    emulator.script(token, {"rate_limit": {"primary_window": {"used_percent": 1},
                                           "secondary_window": {"used_percent": 2, "limit_window_seconds": "x"}}})
    snap = probe_home("openai-codex", auth=codex_auth(token))
    assert [w["label"] for w in snap["windows"]] == ["Session", "Weekly"] and snap["plan"] is None


@pytest.mark.parametrize("body, windows, details", [
    ({"rate_limit": {"primary_window": {"used_percent": None}, "secondary_window": None}}, [], []),
    ({"rate_limit": None, "credits": {"has_credits": True, "balance": "12.5"}}, [], ["Credits balance: $12.50"]),
    ({"credits": {"has_credits": False, "balance": 3}}, [], []),
    ({"credits": {"has_credits": True, "balance": "n/a"}}, [], []),
    ({"rate_limit_reset_credits": {"available_count": 0}}, [], []),
    ({"rate_limit_reset_credits": {"available_count": 3}}, [], ["Rate-limit resets banked: 3"]),
])
def test_codex_optional_parts(emulator, probe_home, body, windows, details):
    token = fresh("codex-parts")
    emulator.script(token, body)
    snap = probe_home("openai-codex", auth=codex_auth(token))
    assert snap["windows"] == windows and snap["details"] == details and snap["error"] is None
    if not windows and not details:
        assert snap["unavailable_reason"] == "OpenAI Codex reported no usage limits for this account."


@pytest.mark.parametrize("value, plan", [("plus", "Plus"), ("pro", "Pro"), ("team_plus-max", "Team Plus Max"),
                                         ("ENTERPRISE", "Enterprise"), ("plus2x", "Plus2x"), ("  ", None),
                                         (None, None), (3, None), ("free_workspace", "Free Workspace")])
def test_codex_plan_title_case(value, plan):
    assert plan_name(value) == plan


def test_codex_account_id_from_jwt_claim_or_no_header(emulator, probe_home):
    token = jwt({"https://api.openai.com/auth": {"chatgpt_account_id": "acct-from-jwt"}, "n": next(_unique)})
    probe_home("openai-codex", auth=codex_auth(token))
    assert last_request(emulator, token).headers["chatgpt-account-id"] == "acct-from-jwt"
    probe_home("openai-codex", auth=codex_auth(token, "acct-explicit"))       # the credential's own id wins
    assert last_request(emulator, token).headers["chatgpt-account-id"] == "acct-explicit"
    for opaque in (fresh("opaque.garbage!"), jwt({"https://api.openai.com/auth": {}, "n": next(_unique)}),
                   jwt(["not", "an", "object", next(_unique)])):
        probe_home("openai-codex", auth=codex_auth(opaque))
        assert "chatgpt-account-id" not in last_request(emulator, opaque).headers


@given(st.text(max_size=120))
@settings(max_examples=300, deadline=None)
def test_jwt_decoding_is_robust_to_garbage(text):
    for token in (text, f"a.{text}.c", "a." + base64.urlsafe_b64encode(text.encode()).decode() + ".c"):
        claim = jwt_account_id(token)
        assert claim is None or isinstance(claim, str)


def test_codex_tokens_beat_the_pool(emulator, probe_home):
    main, pooled = fresh("codex-main"), fresh("codex-pooled")
    auth = {**codex_auth(main, "acct-main"),
            "credential_pool": {"openai-codex": [{"access_token": pooled, "account_id": "acct-pool"}]}}
    probe_home("openai-codex", auth=auth)
    assert emulator.count(token=main) == 1 and emulator.count(token=pooled) == 0
    auth["providers"]["openai-codex"]["tokens"]["access_token"] = ""
    probe_home("openai-codex", auth=auth)
    assert last_request(emulator, pooled).headers["chatgpt-account-id"] == "acct-pool"


def test_codex_pool_skips_exhausted_entries_and_sends_the_selected_account(emulator, probe_home):
    shared = fresh("shared-token")
    future, past = time.time() + 3600, time.time() - 60
    entries = [
        {"account_id": "acct-no-token"},
        {"access_token": shared, "account_id": "acct-exhausted", "last_status": "exhausted",
         "last_error_reset_at": future},
        {"access_token": shared, "account_id": "acct-selected"},
    ]
    auth = {"credential_pool": {"openai-codex": entries}}
    assert probe_home("openai-codex", auth=auth)["available"]
    assert last_request(emulator, shared).headers["chatgpt-account-id"] == "acct-selected"
    for reset in ("2020-01-01T00:00:00Z", past, str(int(past)), int(past * 1000),
                  datetime.fromtimestamp(past, timezone(timedelta(hours=-7))).isoformat()):
        entries[1]["last_error_reset_at"] = reset
        probe_home("openai-codex", auth=auth)
        assert last_request(emulator, shared).headers["chatgpt-account-id"] == "acct-exhausted", reset
    for reset in (future, datetime.fromtimestamp(future, timezone(timedelta(hours=5))).isoformat(),
                  int(future * 1000)):
        entries[1]["last_error_reset_at"] = reset
        probe_home("openai-codex", auth=auth)
        assert last_request(emulator, shared).headers["chatgpt-account-id"] == "acct-selected", reset


def test_codex_selected_entry_without_account_id_never_borrows_another(emulator, probe_home):
    shared = fresh("shared-opaque")
    auth = {"credential_pool": {"openai-codex": [
        {"access_token": shared, "account_id": "acct-other", "last_status": "exhausted",
         "last_error_reset_at": time.time() + 3600},
        {"access_token": shared}]}}
    assert probe_home("openai-codex", auth=auth)["available"]
    assert "chatgpt-account-id" not in last_request(emulator, shared).headers
    token = jwt({"https://api.openai.com/auth": {"chatgpt_account_id": "acct-jwt"}, "n": next(_unique)})
    auth["credential_pool"]["openai-codex"] = [{"access_token": token, "account_id": "acct-other",
                                                "last_status": "exhausted", "last_error_reset_at": time.time() + 60},
                                               {"access_token": token, "account_id": ""}]
    probe_home("openai-codex", auth=auth)
    assert last_request(emulator, token).headers["chatgpt-account-id"] == "acct-jwt"


def test_codex_exhausted_without_a_known_reset_is_usable(emulator, probe_home):
    token = fresh("codex-exhausted-unknown")
    for reset in (None, "someday"):
        entry = {"access_token": token, "last_status": "exhausted", "last_error_reset_at": reset}
        assert probe_home("openai-codex", auth={"credential_pool": {"openai-codex": [entry]}})["available"]
    assert emulator.count(token=token) == 2


def test_codex_every_entry_exhausted_is_no_credentials_with_the_reset_time(emulator, probe_home):
    token = fresh("codex-all-exhausted")
    auth = {"credential_pool": {"openai-codex": [
        {"access_token": token, "last_status": "exhausted", "last_error_reset_at": 4102444800},
        {"access_token": token, "last_status": "exhausted", "last_error_reset_at": "2100-01-01T00:00:00+01:00"}]}}
    snap = probe_home("openai-codex", auth=auth)
    assert snap["error"] == {"code": "no_credentials", "message":
                             "Every OpenAI Codex credential in auth.json is exhausted until 2099-12-31T23:00:00Z."}
    assert emulator.count(token=token) == 0


@pytest.mark.parametrize("base, url", [
    ("https://chatgpt.com/backend-api/codex", "https://chatgpt.com/backend-api/wham/usage"),
    ("https://chatgpt.com/backend-api/codex/", "https://chatgpt.com/backend-api/wham/usage"),
    ("https://chatgpt.com/backend-api", "https://chatgpt.com/backend-api/wham/usage"),
    ("http://127.0.0.1:9000/backend-api/codex", "http://127.0.0.1:9000/backend-api/wham/usage"),
    ("http://127.0.0.1:9000", "http://127.0.0.1:9000/api/codex/usage"),
    ("http://proxy.local/codex", "http://proxy.local/api/codex/usage"),
    ("http://proxy.local/prefix/backend-api/v2", "http://proxy.local/prefix/backend-api/v2/wham/usage"),
])
def test_codex_usage_url_rule(base, url):
    assert usage_url(base) == url


def test_codex_alternate_path_served(emulator, probe_home, monkeypatch):
    monkeypatch.setenv("PROBE_OPENAI_CODEX_BASE_URL", emulator.base_url + "/codex")
    token = fresh("codex-alt")
    assert probe_home("openai-codex", auth=codex_auth(token))["available"]
    assert last_request(emulator, token).path == "/api/codex/usage"


# -- openrouter ----------------------------------------------------------------------------
def script_openrouter(emulator, token: str, credits: dict, key: dict | None) -> None:
    emulator.script(token, credits, path="/api/v1/credits")
    if key is not None:
        emulator.script(token, key, path="/api/v1/key")


def test_openrouter_examples_from_providers_md(emulator, probe_home):
    """PROVIDERS.md's /key example body says ``usage: 6`` but its line says ``$6.25 total``;
    the line follows from the rules only with usage 6.25, so that is what is served."""
    token = fresh("sk-or-v1-example")
    script_openrouter(emulator, token, {"data": {"total_credits": 20, "total_usage": 7.5}},
                      {"data": {"limit": 10, "limit_remaining": 4, "limit_reset": "monthly", "usage": 6.25,
                                "usage_daily": 0.5, "usage_weekly": 2, "usage_monthly": 6}})
    snap = probe_home("openrouter", {"OPENROUTER_API_KEY": token})
    assert snap == {
        "provider": "openrouter", "available": True, "title": "Credits", "plan": None, "source": "credits_api",
        "windows": [{"label": "API key quota", "used_percent": 60.0, "remaining_percent": 40.0,
                     "reset_at": None, "detail": "$4.00 of $10.00 remaining • resets monthly", "window_s": None}],
        "details": ["Credits balance: $12.50",
                    "API key usage: $6.25 total • $0.50 today • $2.00 this week • $6.00 this month"],
        "balances": [{"label": "Credits", "amount": 12.5, "currency": "USD"}],
        "unavailable_reason": None, "error": None,
    }
    paths = [r.path for r in emulator.requests() if r.token == token]
    assert paths == ["/api/v1/credits", "/api/v1/key"]
    no_secret_in(snap, token)


def test_openrouter_literal_key_example(emulator, probe_home):
    token = fresh("sk-or-v1-literal")
    script_openrouter(emulator, token, {"data": {"total_credits": 20, "total_usage": 7.5}},
                      {"data": {"limit": 10, "limit_remaining": 4, "limit_reset": "monthly", "usage": 6,
                                "usage_daily": 0.5, "usage_weekly": 2, "usage_monthly": 6}})
    assert probe_home("openrouter", {"OPENROUTER_API_KEY": token})["details"][1] == \
        "API key usage: $6.00 total • $0.50 today • $2.00 this week • $6.00 this month"


@pytest.mark.parametrize("key, windows, usage", [
    ({"limit": 10, "limit_remaining": 12, "limit_reset": None, "usage": 0, "usage_daily": 0, "usage_weekly": 0,
      "usage_monthly": 1}, [], ["API key usage: $1.00 this month"]),
    ({"limit": 10, "limit_remaining": 10, "limit_reset": None},
     [("API key quota", 0.0, 100.0, None, "$10.00 of $10.00 remaining")], []),
    ({"limit": 10, "limit_remaining": 0, "limit_reset": "daily"},
     [("API key quota", 100.0, 0.0, None, "$0.00 of $10.00 remaining • resets daily")], []),
    ({"limit": 10, "limit_remaining": -1}, [], []),
    ({"limit": 0, "limit_remaining": 0}, [], []),
    ({"limit": None, "limit_remaining": None, "usage": 3}, [], ["API key usage: $3.00 total"]),
    ({"limit": 3, "limit_remaining": 1}, [("API key quota", 66.67, 33.33, None, "$1.00 of $3.00 remaining")], []),
    ({"usage": 0, "usage_daily": 0, "usage_weekly": 0, "usage_monthly": 0}, [], []),
    ({"usage_daily": 0.5, "usage_weekly": None, "usage_monthly": "x"}, [], ["API key usage: $0.50 today"]),
])
def test_openrouter_key_rules(emulator, probe_home, key, windows, usage):
    token = fresh("sk-or-v1-keyrules")
    script_openrouter(emulator, token, {"data": {"total_credits": 5, "total_usage": 9}}, {"data": key})
    snap = probe_home("openrouter", {"OPENROUTER_API_KEY": token})
    assert rows(snap) == windows
    assert snap["details"] == ["Credits balance: $0.00", *usage]       # never below zero


def test_openrouter_key_failure_only_drops_its_lines(emulator, probe_home):
    snap = probe_home("openrouter", {"OPENROUTER_API_KEY": fresh("sk-or-v1-keyfail-x")})
    assert snap["available"] and snap["windows"] == [] and len(snap["details"]) == 1
    assert snap["details"][0].startswith("Credits balance: $") and snap["error"] is None
    for status, body in ((401, {}), (429, {}), (200, [1]), (200, {"data": "x"})):
        token = fresh("sk-or-v1-keybad")
        emulator.script(token, {"data": {"total_credits": 1, "total_usage": 0}}, path="/api/v1/credits")
        emulator.script(token, body, status=status, path="/api/v1/key")
        snap = probe_home("openrouter", {"OPENROUTER_API_KEY": token})
        assert snap["available"] and snap["details"] == ["Credits balance: $1.00"] and snap["error"] is None


def test_openrouter_credits_failure_fails_the_probe(emulator, probe_home):
    token = fresh("sk-or-v1-credfail")
    emulator.script(token, {}, status=500, path="/api/v1/credits")
    emulator.script(token, {"data": {"limit": 10, "limit_remaining": 4}}, path="/api/v1/key")
    snap = probe_home("openrouter", {"OPENROUTER_API_KEY": token})
    assert snap["error"]["code"] == "provider_error" and snap["windows"] == [] and snap["details"] == []


def test_openrouter_key_request_shares_the_probe_budget(emulator, probe_home):
    """Each request takes 0.5 s; with a 0.75 s budget /credits answers and /key, left with
    0.25 s, times out and is dropped, instead of stretching the probe to 1 s."""
    token = fresh("sk-or-v1-slow500-x")
    start = time.monotonic()
    snap = probe_home("openrouter", {"OPENROUTER_API_KEY": token}, timeout_s=0.75)
    assert snap["available"] and len(snap["details"]) == 1 and snap["windows"] == []
    assert time.monotonic() - start < 0.95


# -- deepseek ------------------------------------------------------------------------------
@pytest.mark.parametrize("infos, lines, amounts", [
    ([{"currency": "CNY", "total_balance": "12.30", "granted_balance": "2.00", "topped_up_balance": "10.30"}],
     ["Balance: ¥12.30 CNY (granted ¥2.00, topped up ¥10.30)"], [(12.3, "CNY")]),
    ([{"currency": "USD", "total_balance": "12.34", "granted_balance": "0.00", "topped_up_balance": "0"}],
     ["Balance: $12.34 USD"], [(12.34, "USD")]),
    ([{"currency": "CNY", "total_balance": "5.00", "granted_balance": "0.00", "topped_up_balance": "5.00"},
      {"currency": "EUR", "total_balance": "1.50", "granted_balance": "1.50", "topped_up_balance": "0.00"}],
     ["Balance: ¥5.00 CNY (topped up ¥5.00)", "Balance: 1.50 EUR (granted 1.50 EUR)"], [(5.0, "CNY"), (1.5, "EUR")]),
    ([{"currency": "usd", "total_balance": 3, "granted_balance": 1, "topped_up_balance": None}],
     ["Balance: $3.00 USD (granted $1.00)"], [(3.0, "USD")]),
    ([{"currency": "JPY", "total_balance": "100", "granted_balance": "0", "topped_up_balance": "100"}],
     ["Balance: 100.00 JPY (topped up 100.00 JPY)"], [(100.0, "JPY")]),
    ([{"currency": "CNY", "total_balance": "0.00", "granted_balance": "0.00", "topped_up_balance": "0.00"}],
     ["Balance: ¥0.00 CNY"], [(0.0, "CNY")]),
    ([{"currency": "CNY", "total_balance": "n/a"}, {"total_balance": "1"}, "junk",
      {"currency": "USD", "total_balance": "1.005", "granted_balance": "1.005"}],
     ["Balance: $1.01 USD (granted $1.01)"], [(1.01, "USD")]),   # the number rounds as the line does
])
def test_deepseek_balance_lines(emulator, probe_home, infos, lines, amounts):
    token = fresh("sk-ds-lines")
    emulator.script(token, {"is_available": True, "balance_infos": infos})
    snap = probe_home("deepseek", {"DEEPSEEK_API_KEY": token})
    assert snap == {"provider": "deepseek", "available": True, "title": "Account balance", "plan": None,
                    "source": "balance_api", "windows": [], "details": lines,
                    "balances": [{"label": "Balance", "amount": a, "currency": c} for a, c in amounts],
                    "unavailable_reason": None, "error": None}
    assert last_request(emulator, token).path == "/user/balance"


def test_deepseek_insufficient_balance(emulator, probe_home):
    token = fresh("sk-ds-empty")
    emulator.script(token, {"is_available": False, "balance_infos": []})
    snap = probe_home("deepseek", {"DEEPSEEK_API_KEY": token})
    assert snap["available"] is False and snap["unavailable_reason"] == "DeepSeek API balance is insufficient."
    assert snap["error"] is None


def test_deepseek_unavailable_flag_with_lines_still_shows_them(emulator, probe_home):
    token = fresh("sk-ds-zero")
    emulator.script(token, {"is_available": False, "balance_infos": [
        {"currency": "CNY", "total_balance": "0.00", "granted_balance": "0.00", "topped_up_balance": "0.00"}]})
    snap = probe_home("deepseek", {"DEEPSEEK_API_KEY": token})
    assert snap["available"] and snap["details"] == ["Balance: ¥0.00 CNY"] and snap["unavailable_reason"] is None


def test_deepseek_available_without_lines(emulator, probe_home):
    token = fresh("sk-ds-nolines")
    emulator.script(token, {"is_available": True})
    snap = probe_home("deepseek", {"DEEPSEEK_API_KEY": token})
    assert snap["available"] is False and snap["unavailable_reason"] == "DeepSeek reported no balance for this account."


# -- run_probe around the adapters ---------------------------------------------------------
def test_run_probe_turns_an_unexpected_exception_into_bad_response(monkeypatch, tmp_path, capfd):
    from workers.providers import deepseek

    def broken(ctx):
        raise KeyError("sk-ds-leaky-value")

    monkeypatch.setattr(deepseek, "probe", broken)
    snap = run_probe("deepseek", load_home(tmp_path), ProviderHttp(), 1)
    assert snap["error"] == {"code": "bad_response", "message": "The deepseek response could not be understood."}
    assert "sk-ds-leaky-value" not in capfd.readouterr().err


def test_probe_failure_carries_its_fields():
    exc = ProbeFailure("rate_limited", "Slow down.", retry_after_s=3)
    assert (exc.code, exc.message, exc.retry_after_s, str(exc)) == ("rate_limited", "Slow down.", 3, "Slow down.")
    assert ProbeFailure("timeout", "Late.").retry_after_s is None
